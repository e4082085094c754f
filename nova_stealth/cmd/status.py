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
[libvirt] options that would let QEMU's limiter or a tunnel defeat the
shaping, the driver, the rootwrap filter and the chaff responder. Exit
status as oslo.upgradecheck's: 0 all passed, 1 a warning, 2 a failure,
255 a check could not run.
"""

import os
import sys

from oslo_config import cfg
from oslo_upgradecheck import upgradecheck

from nova_stealth import conf as stealth_conf
from nova_stealth import exception
from nova_stealth import version

Code = upgradecheck.Code
Result = upgradecheck.Result
DRIVER = 'stealth.StealthLibvirtDriver'
FILTERS = os.path.join('rootwrap.d', 'nova-stealth.filters')
#: /proc/net/tcp's state of a listening socket.
TCP_LISTEN = '0A'

#: The Nova options the checks read, registered on a configuration of our
#: own (never Nova's global one), as Nova defines them.
NOVA_OPTS = [cfg.StrOpt('compute_driver')]
NOVA_LIBVIRT_OPTS = [cfg.IntOpt('live_migration_bandwidth', default=0),
                     cfg.BoolOpt('live_migration_tunnelled', default=False)]


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

    _upgrade_checks = (
        ('[stealth] options', _check_options),
        ('Driver', _needs_valid_options(_check_driver)),
        ('[libvirt] options', _needs_valid_options(_check_libvirt)),
        ('Rootwrap filter', _check_rootwrap_filter),
        ('Chaff responder', _needs_valid_options(_check_chaff_responder)),
    )


def main(argv=None):
    conf = cfg.ConfigOpts()
    stealth_conf.register_opts(conf)
    conf.register_opts(NOVA_OPTS)
    conf.register_opts(NOVA_LIBVIRT_OPTS, group='libvirt')
    # upgradecheck.main() with a --version: oslo.config adds it when
    # given the version.
    upgradecheck.register_cli_options(conf, Checks(conf))
    conf(args=sys.argv[1:] if argv is None else argv, project='nova',
         version=version.version_string())
    upgradecheck.CONF = conf
    return upgradecheck.run(conf)


if __name__ == '__main__':
    sys.exit(main())
