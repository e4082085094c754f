# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.
"""nova-stealth-status: ``upgrade check`` in the form of ``nova-status``.

Reads nova.conf as nova-compute does and checks, on this compute node,
what nova_stealth needs before a migration: the [stealth] options, the
[libvirt] options that would let QEMU's limiter, a tunnel or plain TCP
defeat the shaping, the driver, the rootwrap filter, the privsep daemon
(started as nova-compute starts it), the qdiscs of the migration device,
the chaff responder and its credentials; and, through placement and the
compute API, the other compute nodes that advertise the trait and, under
``require_stealth``, the flavors that require it. Exit status as
oslo.upgradecheck's: 0 all passed, 1 a warning, 2 a failure, 255 a check
could not run.
"""

import os
import shlex
import socket
import sys

from oslo_config import cfg
from oslo_privsep import priv_context
from oslo_upgradecheck import upgradecheck

from nova_stealth.chaff import gnutls
from nova_stealth.chaff import tls
from nova_stealth.cmd import cloud
from nova_stealth import conf as stealth_conf
from nova_stealth import exception
from nova_stealth import privileged
from nova_stealth.privileged import tc
from nova_stealth.shaping import tc_lib
from nova_stealth import version
from nova_stealth import virt

Code = upgradecheck.Code
Result = upgradecheck.Result
DRIVER = 'stealth.StealthLibvirtDriver'
FILTERS = os.path.join('rootwrap.d', 'nova-stealth.filters')
#: /proc/net/tcp's state of a listening socket.
TCP_LISTEN = '0A'

#: The Nova options the checks read, registered on a configuration of our
#: own (never Nova's global one), as Nova defines them.
NOVA_OPTS = [cfg.StrOpt('compute_driver'),
             cfg.StrOpt('host', default=socket.gethostname()),
             cfg.StrOpt('rootwrap_config', default='/etc/nova/rootwrap.conf')]
NOVA_LIBVIRT_OPTS = [
    cfg.IntOpt('live_migration_bandwidth', default=0),
    cfg.BoolOpt('live_migration_tunnelled', default=False),
    cfg.BoolOpt('live_migration_with_native_tls', default=False)]
NOVA_WORKAROUNDS_OPTS = [cfg.BoolOpt('disable_rootwrap', default=False)]


def listening_ports(paths=('/proc/net/tcp', '/proc/net/tcp6')):
    """The TCP ports that a socket of this network namespace listens on."""
    ports = set()
    for path in paths:
        try:
            with open(path) as table:
                next(table)
                for line in table:
                    fields = line.split()
                    if fields[3] == TCP_LISTEN:
                        ports.add(int(fields[1].rsplit(':', 1)[1], 16))
        except FileNotFoundError:
            continue
    return ports


def _needs_valid_options(check):
    """A check that cannot run on a bad option fails naming it instead."""
    def guarded(self):
        try:
            return check(self)
        except ValueError as e:
            return Result(Code.FAILURE, 'not checked: %s' % e)
    return guarded


class Checks(upgradecheck.UpgradeCommands):
    """The checks of ``nova-stealth-status upgrade check``."""

    def __init__(self, conf):
        self.conf = conf
        #: Why the privsep daemon did not start, once the check has run.
        self._privsep_error = None

    def check(self):
        """Run the checks; stop the privsep daemon they started."""
        parsed = _parse_global_conf(self.conf)
        try:
            return super().check()
        finally:
            privileged.net_admin.stop()
            if parsed:
                cfg.CONF.clear()

    def _check_options(self):
        try:
            stealth_conf.validate(self.conf)
        except exception.InvalidOption as e:
            return Result(Code.FAILURE, str(e))
        return Result(Code.SUCCESS)

    def _check_driver(self):
        if self.conf.compute_driver != DRIVER:
            return Result(Code.WARNING,
                          '[DEFAULT] compute_driver is %s: nova-compute does '
                          'not load nova_stealth (set %s)' % (
                              self.conf.compute_driver, DRIVER))
        if not self.conf.stealth.enabled:
            return Result(Code.WARNING, '[stealth] enabled is false: '
                                        'migrations go unshaped')
        return Result(Code.SUCCESS)

    def _check_libvirt(self):
        libvirt = self.conf.libvirt
        if libvirt.live_migration_tunnelled:
            return Result(Code.FAILURE,
                          '[libvirt] live_migration_tunnelled is true: a '
                          'tunnelled migration has no data port to shape '
                          'and is refused')
        needed = 4 * self.conf.stealth.max_rate
        if 0 < libvirt.live_migration_bandwidth < needed:
            return Result(Code.FAILURE,
                          '[libvirt] live_migration_bandwidth is %d: it must '
                          'be 0 or at least %g (4 x [stealth] max_rate)' % (
                              libvirt.live_migration_bandwidth, needed))
        if not libvirt.live_migration_with_native_tls:
            plain = ('[libvirt] live_migration_with_native_tls is false: '
                     'QEMU\'s plaintext stream header shows an observer '
                     'each migration, shaped or not')
            if self.conf.stealth.require_stealth:
                return Result(Code.FAILURE, plain + '; with [stealth] '
                              'require_stealth every migration from this '
                              'host is refused')
            return Result(Code.WARNING, plain)
        return Result(Code.SUCCESS)

    def _check_rootwrap_filter(self):
        directories = {os.path.dirname(os.path.abspath(path))
                       for path in self.conf.config_file} or {'/etc/nova'}
        for directory in sorted(directories):
            if os.path.isfile(os.path.join(directory, FILTERS)):
                return Result(Code.SUCCESS)
        return Result(Code.FAILURE,
                      'no %s next to the configuration (%s): nova-compute '
                      'cannot start the privsep daemon; copy it from '
                      'etc/nova/ of nova_stealth' % (
                          FILTERS, ', '.join(sorted(directories))))

    def _check_privsep(self):
        # As nova-compute starts it: through rootwrap (or sudo), with the
        # same configuration files, unless helper_command says otherwise.
        helper = (privileged.net_admin.conf.helper_command or
                  '%s privsep-helper' % self._root_helper())
        priv_context.init(root_helper=shlex.split(self._root_helper()))
        try:
            tc.kernel_id()
        except Exception as e:
            self._privsep_error = '%s: %s' % (type(e).__name__, e)
            return Result(Code.FAILURE,
                          'nova_stealth\'s privsep daemon did not start '
                          '(%s), so nothing can be shaped; started as '
                          'nova-compute would: %s' % (self._privsep_error,
                                                      helper))
        return Result(Code.SUCCESS)

    def _root_helper(self):
        # Nova's nova.utils.get_root_helper.
        if self.conf.workarounds.disable_rootwrap:
            return 'sudo'
        return 'sudo nova-rootwrap %s' % self.conf.rootwrap_config

    def _check_egress_qdisc(self):
        """Would the shaper accept each migration device's qdiscs?"""
        if self._privsep_error:
            return Result(Code.WARNING, 'not checked: the privsep daemon '
                                        'did not start (%s)' %
                          self._privsep_error)
        group = self.conf.stealth
        try:
            devices = self._migration_devices(group)
        except Exception as e:
            return Result(Code.WARNING, 'not checked: %s' % e)
        if not devices:
            return Result(Code.WARNING,
                          'not checked: neither [stealth] egress_device nor '
                          'chaff_peers says which device migrations leave by')
        code, details = Code.SUCCESS, []
        for ifname, why in sorted(devices.items()):
            try:
                snapshot = tc.dump_tc(tc.link_info(ifname)['index'])
            except LookupError as e:
                code = Code.FAILURE
                details.append('%s (%s): %s' % (ifname, why, e))
                continue
            tuned = tc_lib.tuned_qdisc(snapshot)
            if tc_lib.is_shaped(snapshot):
                verdict = 'nova_stealth\'s tree is installed'
            elif tuned and not group.allow_replace_root_qdisc:
                code = Code.FAILURE
                verdict = str(exception.ExistingRootQdisc(
                    ifname=ifname, kind=tuned[0], handle=tuned[1]))
            elif tuned:
                verdict = ('qdisc %s %s is replaced during migrations and '
                           'put back (allow_replace_root_qdisc)' % tuned)
            else:
                verdict = 'no qdisc an operator configured'
            details.append('%s (%s): %s' % (ifname, why, verdict))
        return Result(code, '; '.join(details))

    @staticmethod
    def _migration_devices(group):
        """Device name to why it carries migrations, as the shaper finds it.

        :raises Exception: when the route to a peer cannot be read
        """
        if group.egress_device:
            return {group.egress_device: 'egress_device'}
        devices = {}
        for peer in group.chaff_peers:
            try:
                devices.setdefault(tc.route_device(peer),
                                   'route to %s' % peer)
            except Exception as e:
                raise RuntimeError('no route to chaff peer %s: %s' % (
                    peer, e)) from e
        return devices

    def _check_chaff_tls(self):
        group = self.conf.stealth
        if not group.chaff_enabled:
            return Result(Code.SUCCESS)
        try:
            tls.server_context(group.chaff_tls_x509_dir,
                               group.chaff_tls_priority)
            context = tls.client_context(group.chaff_tls_x509_dir,
                                         group.chaff_tls_priority)
        except exception.InvalidOption as e:
            return Result(Code.FAILURE,
                          '%s: no chaff is sent and the responder does not '
                          'start (the check reads them as the user running '
                          'it: run it as nova-compute\'s)' % e)
        if not isinstance(context, gnutls.GnutlsContext):
            return Result(Code.WARNING,
                          'libgnutls cannot be loaded, so chaff speaks '
                          'OpenSSL, whose TLS hello an observer tells from '
                          'QEMU\'s migrations: install libgnutls30')
        return Result(Code.SUCCESS, 'GnuTLS %s, priority %s' % (
            gnutls.version(), group.chaff_tls_priority))

    def _check_chaff_responder(self):
        group = self.conf.stealth
        if not group.chaff_enabled:
            return Result(Code.SUCCESS)
        if not group.chaff_peer_networks:
            return Result(Code.WARNING,
                          '[stealth] chaff_peer_networks is empty: the '
                          'responder serves no peer')
        idle = sorted(set(group.chaff_ports) - listening_ports())
        if idle:
            return Result(Code.WARNING,
                          'nothing listens on chaff ports %s here: is '
                          'nova-stealth-chaff-responder running?' %
                          ','.join(map(str, idle)))
        return Result(Code.SUCCESS)

    def _check_peers(self):
        """Which compute nodes advertise the trait, as placement says."""
        try:
            providers = cloud.compute_providers(self.conf)
        except Exception as e:
            return Result(Code.WARNING, 'not checked: %s' % e)
        stealth = sorted(name for name, has in providers.items() if has)
        plain = sorted(name for name, has in providers.items() if not has)
        details = 'with %s: %s; without: %s' % (
            virt.TRAIT, ', '.join(stealth) or 'none',
            ', '.join(plain) or 'none')
        # Placement names a node's provider by its hypervisor host name,
        # which libvirt reports as the machine's (often fully qualified)
        # name, not necessarily [DEFAULT] host.
        mine = {self.conf.host, socket.gethostname(), socket.getfqdn()}
        if self.conf.stealth.enabled and not mine & set(stealth):
            return Result(Code.WARNING,
                          'this node (%s) does not advertise %s: has '
                          'nova-compute started with nova_stealth? %s' % (
                              self.conf.host, virt.TRAIT, details))
        if not [name for name in stealth if name not in mine]:
            return Result(Code.WARNING,
                          'no other compute node advertises %s: migrations '
                          'from here go unshaped, or are refused under '
                          '[stealth] require_stealth; %s' % (virt.TRAIT,
                                                             details))
        return Result(Code.SUCCESS, details)

    def _check_flavors(self):
        """Under require_stealth, do flavors steer the scheduler?"""
        if not self.conf.stealth.require_stealth:
            return Result(Code.SUCCESS)
        try:
            lacking = cloud.flavors_not_requiring_the_trait(self.conf)
        except Exception as e:
            return Result(Code.WARNING, 'not checked: %s' % e)
        if lacking:
            return Result(
                Code.WARNING,
                '[stealth] require_stealth is set, but flavors %s lack '
                '%s=required: the scheduler may send their servers\' '
                'migrations to a node without nova_stealth, where they are '
                'refused (openstack flavor set --property %s=required; a '
                'server keeps the flavor it was built with until resized)' %
                (', '.join(lacking), cloud.REQUIRED_SPEC, cloud.REQUIRED_SPEC))
        return Result(Code.SUCCESS)

    _upgrade_checks = (
        ('[stealth] options', _check_options),
        ('Driver', _needs_valid_options(_check_driver)),
        ('[libvirt] options', _needs_valid_options(_check_libvirt)),
        ('Rootwrap filter', _check_rootwrap_filter),
        ('Privsep daemon', _check_privsep),
        ('Egress qdiscs', _needs_valid_options(_check_egress_qdisc)),
        ('Chaff responder', _needs_valid_options(_check_chaff_responder)),
        ('Chaff TLS credentials', _needs_valid_options(_check_chaff_tls)),
        ('Stealth peers', _check_peers),
        ('Flavors', _check_flavors),
    )


def _parse_global_conf(conf):
    """Load ``conf``'s files into cfg.CONF, unless it is parsed already.

    oslo.privsep reads its options (``[nova_stealth_privileged]``) and the
    files it hands the daemon from the global configuration, as in
    nova-compute. Returns True if it parsed it (and so should clear it).
    """
    try:
        cfg.CONF.config_file
        return False
    except cfg.NoSuchOptError:
        pass
    args = [arg for path in conf.config_file
            for arg in ('--config-file', path)]
    args += [arg for path in conf.config_dir or ()
             for arg in ('--config-dir', path)]
    cfg.CONF(args, project='nova', default_config_files=[])
    return True


def main(argv=None):
    conf = cfg.ConfigOpts()
    stealth_conf.register_opts(conf)
    conf.register_opts(NOVA_OPTS)
    conf.register_opts(NOVA_LIBVIRT_OPTS, group='libvirt')
    conf.register_opts(NOVA_WORKAROUNDS_OPTS, group='workarounds')
    cloud.register_opts(conf)
    # upgradecheck.main() with a --version: oslo.config adds it when
    # given the version.
    upgradecheck.register_cli_options(conf, Checks(conf))
    conf(args=sys.argv[1:] if argv is None else argv, project='nova',
         version=version.version_string())
    upgradecheck.CONF = conf
    return upgradecheck.run(conf)


if __name__ == '__main__':
    sys.exit(main())
