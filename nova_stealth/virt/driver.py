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
"""StealthLibvirtDriver: the libvirt driver with stealthed live migrations.

Loaded by ``compute_driver = stealth.StealthLibvirtDriver``. Everything
else is the libvirt driver's own; on the live-migration path:

- the destination leases a data port in ``pre_live_migration`` and hands
  it back as ``target_connect_addr`` (``addr:port``), which Nova turns into
  libvirt's ``migrate_uri``; it releases the lease on post and rollback,
  and a backstop in the periodic resource update releases leases whose
  migration ended without the destination being told;
- the source, in ``live_migration``, shapes that port with the DHTB and
  starts the chaff before libvirt starts the migration, and removes both on
  every way out (Nova's post and recover callbacks, and a ``finally``);
- each compute publishes ``nova_stealth`` in its compute node stats, so
  each end knows whether the other runs nova_stealth, and the placement
  trait ``CUSTOM_NOVA_STEALTH`` on its resource provider, which operators
  and the scheduler see; a migration between
  a stealth host and one without it goes ahead unshaped with a warning, or
  is refused when ``[stealth] require_stealth`` is set;
- tunnelled migrations (no data port to shape) are refused in the
  pre-checks; migrations over plain TCP (``[libvirt]
  live_migration_with_native_tls`` false), whose plaintext stream header
  shows an observer each migration, are warned of at start-up and refused
  in the pre-checks under ``require_stealth``;
- the switch-over: the source follows libvirt's job stats into the
  session, whose floor under the policy is in force before QEMU decides,
  and, where libvirt >= 11.1 and QEMU >= 8.2, adds the guaranteed rate
  to ``migrateToURI3`` as the typed parameter
  ``VIR_MIGRATE_PARAM_BANDWIDTH_AVAIL_SWITCHOVER`` (MiB/s), so QEMU
  decides at the rate it will get; older hosts keep QEMU's own estimate
  (logged once per migration). No QEMU monitor command is sent, so the
  domain is not tainted.
"""

import nova.conf
from nova import exception as nova_exception
from nova import objects
from nova.virt.libvirt import driver as libvirt_driver
from oslo_log import log as logging
import pbr.version

from nova_stealth.chaff import tls as chaff_tls
from nova_stealth import conf as stealth_conf
from nova_stealth.engine import destination
from nova_stealth.engine import source
from nova_stealth import exception
from nova_stealth import units
from nova_stealth import virt
from nova_stealth.virt import node as node_lib

# nova.conf.CONF is oslo.config's global object, on which importing
# nova_stealth.conf has registered [stealth].
CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)
#: The key of the compute node stats that says a host runs nova_stealth.
STATS_KEY = 'nova_stealth'
#: Without native TLS QEMU's stream header, in plaintext, names every
#: migration to an on-path observer whatever the shaping hides.
PLAIN_TCP_WARNING = ('Live migrations from this host run over plain TCP '
                     '([libvirt] live_migration_with_native_tls is false): '
                     'their plaintext stream header shows an observer each '
                     'migration, shaped or not')
#: libvirt's typed migration parameter for QEMU's avail-switchover-bandwidth
#: (VIR_MIGRATE_PARAM_BANDWIDTH_AVAIL_SWITCHOVER, MiB/s) and the first
#: libvirt and QEMU that have it.
AVAIL_SWITCHOVER_PARAM = 'bandwidth.avail.switchover'
AVAIL_SWITCHOVER_LIBVIRT = (11, 1, 0)
AVAIL_SWITCHOVER_QEMU = (8, 2, 0)


class _SwitchoverDomain(object):
    """A libvirt domain whose migrateToURI3 also names the switch-over rate.

    Nova's Guest builds migrateToURI3's typed parameters itself; this
    wraps only that call and hands everything else to the domain.
    """

    def __init__(self, domain, bandwidth_mib):
        self._wrapped = domain
        self._bandwidth_mib = bandwidth_mib

    def migrateToURI3(self, dconnuri, params=None, flags=0):
        params = dict(params or {})
        params[AVAIL_SWITCHOVER_PARAM] = self._bandwidth_mib
        return self._wrapped.migrateToURI3(dconnuri, params, flags)

    def __getattr__(self, name):
        return getattr(self._wrapped, name)


def job_remaining(guest):
    """A reader of a migrating guest's bytes left (None with no job)."""
    def read():
        info = guest.get_job_info()
        if (info.type != libvirt_driver.libvirt.VIR_DOMAIN_JOB_UNBOUNDED or
                not info.data_total):
            return None
        return info.data_remaining
    return read


def runs_stealth(compute_info):
    """True if a compute node record (object or primitive) says so."""
    if compute_info is None:
        return False
    if isinstance(compute_info, dict):
        data = compute_info.get('nova_object.data', compute_info)
        stats = data.get('stats') or {}
    else:
        stats = getattr(compute_info, 'stats', None) or {}
    return STATS_KEY in stats


class StealthLibvirtDriver(libvirt_driver.LibvirtDriver):
    """The libvirt driver, with live migrations shaped to look ordinary."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        stealth_conf.validate(CONF)
        self._check_hypervisor_limiter()
        if CONF.stealth.enabled and CONF.stealth.chaff_enabled:
            # A priority GnuTLS cannot read stops nova-compute here rather
            # than leaving each migration without chaff.
            chaff_tls.check_priority(CONF.stealth.chaff_tls_priority)
        self.stealth = None
        #: Migrations this service aborted as it started (see init_host).
        self._aborted_at_start = set()
        self._stealth_version = pbr.version.VersionInfo(
            'nova_stealth').version_string()

    @staticmethod
    def _check_hypervisor_limiter():
        bandwidth = CONF.libvirt.live_migration_bandwidth
        needed = source.hypervisor_max_bandwidth(CONF.stealth)
        if CONF.stealth.enabled and 0 < bandwidth < needed:
            raise exception.IncompatibleNovaOption(
                group='libvirt', option='live_migration_bandwidth',
                value=bandwidth,
                reason='with nova_stealth it must be 0 or at least %g MiB/s '
                       '(4 x [stealth] max_rate), or QEMU\'s limiter, not '
                       'the shaping, paces the migration and its 100 ms '
                       'bursts reach the wire' % needed)

    def init_host(self, host):
        super().init_host(host)
        if CONF.stealth.enabled and (
                not CONF.libvirt.live_migration_with_native_tls):
            LOG.warning('%s: set it, and give the chaff the same '
                        'credentials ([stealth] chaff_tls_x509_dir)',
                        PLAIN_TCP_WARNING)
        if CONF.stealth.enabled:
            self.stealth = node_lib.StealthNode(CONF.stealth, host)
            self._abort_migrations_in_flight()
            self.stealth.sweep()
        else:
            node_lib.sweep_while_disabled(CONF.stealth, host)

    def update_provider_tree(self, provider_tree, nodename,
                             allocations=None):
        """The libvirt driver's provider tree, with our trait when shaping.

        The trait is removed when ``[stealth] enabled`` is turned off, so
        that a node that stopped shaping stops saying it does.
        """
        super().update_provider_tree(provider_tree, nodename, allocations)
        if self.stealth is not None:
            provider_tree.add_traits(nodename, virt.TRAIT)
        else:
            provider_tree.remove_traits(nodename, virt.TRAIT)

    def _abort_migrations_in_flight(self):
        # An earlier run died mid-migration (SIGKILL): its privsep daemon
        # died with it, freezing the class at its last rate and ending the
        # chaff, while QEMU goes on migrating. The defence cannot be picked
        # up where it was, so the migration is aborted before its shaping
        # goes: the guest stays on this host, and Nova's own start-up
        # (_reset_live_migration) marks the migration failed.
        libvirt = libvirt_driver.libvirt
        running = (libvirt.VIR_DOMAIN_JOB_BOUNDED,
                   libvirt.VIR_DOMAIN_JOB_UNBOUNDED)
        for uuid in self.stealth.recorded_outgoing():
            try:
                domain = self._host.get_connection().lookupByUUIDString(uuid)
                if domain.jobStats().get('type') not in running:
                    continue
                domain.abortJob()
            except Exception as e:
                LOG.warning('Could not abort the live migration of instance '
                            '%s left running by an earlier run: %s', uuid, e)
                continue
            self._aborted_at_start.add(uuid)
            LOG.warning('Aborted the live migration of instance %s: it was '
                        'in flight when nova-compute stopped, and could no '
                        'longer be hidden', uuid)

    def _abort_job(self, instance):
        # Libvirt's monitor of the migration then sees the job cancelled
        # and Nova rolls it back, through our recover callback.
        self._host.get_guest(instance)._domain.abortJob()

    def live_migration_abort(self, instance):
        if instance.uuid in self._aborted_at_start:
            # Nova's start-up aborts it too; the job is gone already.
            self._aborted_at_start.discard(instance.uuid)
            LOG.info('The live migration was aborted as nova-compute '
                     'started', instance=instance)
            return
        return super().live_migration_abort(instance)

    def get_available_resource(self, nodename):
        data = super().get_available_resource(nodename)
        if self.stealth is not None:
            data.setdefault('stats', {})[STATS_KEY] = self._stealth_version
            try:
                present = {dom.UUIDString()
                           for dom in self._host.list_instance_domains(
                               only_running=False)}
                self.stealth.release_abandoned(present)
            except Exception:
                # The resources must still be reported; leases also expire.
                LOG.exception('Could not release abandoned migration ports')
            try:
                self.stealth.sweep_unowned()
            except Exception:
                LOG.exception('Could not sweep shaping that no migration '
                              'owns')
        return data

    # Pre-checks ----------------------------------------------------------

    def check_can_live_migrate_destination(self, context, instance,
                                           src_compute_info,
                                           dst_compute_info,
                                           block_migration=False,
                                           disk_over_commit=False):
        if (self.stealth is not None and CONF.stealth.require_stealth and
                not runs_stealth(src_compute_info)):
            raise nova_exception.MigrationPreCheckError(
                reason='the source host %s does not run nova_stealth and '
                       '[stealth] require_stealth is set on this host' %
                       instance.host)
        return super().check_can_live_migrate_destination(
            context, instance, src_compute_info, dst_compute_info,
            block_migration, disk_over_commit)

    def check_can_live_migrate_source(self, context, instance,
                                      dest_check_data,
                                      block_device_info=None):
        if self.stealth is not None and CONF.libvirt.live_migration_tunnelled:
            raise nova_exception.MigrationPreCheckError(
                reason='nova_stealth cannot shape a tunnelled live migration '
                       '([libvirt] live_migration_tunnelled): its data has '
                       'no port of its own')
        if (self.stealth is not None and CONF.stealth.require_stealth and
                not CONF.libvirt.live_migration_with_native_tls):
            raise nova_exception.MigrationPreCheckError(
                reason='%s; [stealth] require_stealth is set on this '
                       'host' % PLAIN_TCP_WARNING)
        return super().check_can_live_migrate_source(
            context, instance, dest_check_data, block_device_info)

    # Destination ---------------------------------------------------------

    def pre_live_migration(self, context, instance, block_device_info,
                           network_info, disk_info, migrate_data):
        migrate_data = super().pre_live_migration(
            context, instance, block_device_info, network_info, disk_info,
            migrate_data)
        if self.stealth is None:
            return migrate_data
        if not self._host_runs_stealth(context, instance.host):
            LOG.warning('The source host %s does not run nova_stealth: '
                        'this migration is not shaped', instance.host,
                        instance=instance)
            return migrate_data
        port = self.stealth.lease(instance.uuid)
        address = migrate_data.target_connect_addr or CONF.my_ip
        migrate_data.target_connect_addr = destination.connect_address(
            address, port)
        LOG.info('Incoming migration data port %s',
                 migrate_data.target_connect_addr, instance=instance)
        return migrate_data

    def post_live_migration_at_destination(self, context, instance,
                                           network_info,
                                           block_migration=False,
                                           block_device_info=None):
        try:
            return super().post_live_migration_at_destination(
                context, instance, network_info, block_migration,
                block_device_info)
        finally:
            self._release(instance)

    def rollback_live_migration_at_destination(self, context, instance,
                                               network_info,
                                               block_device_info,
                                               destroy_disks=True,
                                               migrate_data=None):
        try:
            return super().rollback_live_migration_at_destination(
                context, instance, network_info, block_device_info,
                destroy_disks, migrate_data)
        finally:
            self._release(instance)

    def _release(self, instance):
        if self.stealth is not None:
            self.stealth.release(instance.uuid)

    @staticmethod
    def _host_runs_stealth(context, host):
        try:
            nodes = objects.ComputeNodeList.get_all_by_host(context, host)
        except nova_exception.ComputeHostNotFound:
            return False
        return any(runs_stealth(cn) for cn in nodes)

    # Source --------------------------------------------------------------

    @staticmethod
    def _live_migration_uri(dest):
        # Nova builds libvirt's connection URI from target_connect_addr
        # too; the data port is for migrate_uri only.
        address, _port = destination.parse_connect_address(dest)
        return libvirt_driver.LibvirtDriver._live_migration_uri(address)

    def live_migration(self, context, instance, dest, post_method,
                       recover_method, block_migration=False,
                       migrate_data=None):
        if self.stealth is None:
            return super().live_migration(
                context, instance, dest, post_method, recover_method,
                block_migration, migrate_data)
        target = (migrate_data.target_connect_addr
                  if 'target_connect_addr' in migrate_data else None)
        try:
            address, port = destination.parse_connect_address(target)
        except exception.InvalidConnectAddress as e:
            # Before anything is shaped or started: roll back as Nova does
            # for a refused migration, leaving the instance ACTIVE here.
            LOG.error('Refusing to live-migrate to %s: %s', dest, e,
                      instance=instance)
            recover_method(context, instance, dest, migrate_data)
            return
        if port is None:
            if CONF.stealth.require_stealth:
                LOG.error('Refusing to live-migrate to %s, which does not '
                          'run nova_stealth: [stealth] require_stealth is '
                          'set (a flavor or image requiring %s=required '
                          'makes the scheduler pick only nodes that do)',
                          dest, 'trait:' + virt.TRAIT, instance=instance)
                recover_method(context, instance, dest, migrate_data)
                return
            LOG.warning('The destination %s does not run nova_stealth: '
                        'this migration is not shaped', dest,
                        instance=instance)
            return super().live_migration(
                context, instance, dest, post_method, recover_method,
                block_migration, migrate_data)
        if migrate_data.block_migration:
            LOG.warning('Block migration: the disks go over libvirt\'s NBD '
                        'port, which nova_stealth does not shape',
                        instance=instance)
        try:
            self.stealth.start_outgoing(
                instance.uuid, address, port,
                instance.flavor.memory_mb * units.MIB,
                abort_migration=lambda: self._abort_job(instance))
        except Exception:
            # Nothing has started: roll back, leaving the instance ACTIVE.
            LOG.exception('Could not shape the migration, so it is not '
                          'started', instance=instance)
            recover_method(context, instance, dest, migrate_data)
            return

        def post(*args, **kwargs):
            self._end_outgoing(instance, finish=True)
            return post_method(*args, **kwargs)

        def recover(*args, **kwargs):
            self._end_outgoing(instance, finish=False)
            return recover_method(*args, **kwargs)

        try:
            return super().live_migration(context, instance, dest, post,
                                          recover, block_migration,
                                          migrate_data)
        finally:
            self._end_outgoing(instance, finish=False)

    def _live_migration_operation(self, context, instance, dest,
                                  block_migration, migrate_data, guest,
                                  device_names):
        if self.stealth is not None:
            rates = self.stealth.switchover_rates(instance.uuid)
            if rates is not None:
                self._prepare_switchover(instance, guest, *rates)
        return super()._live_migration_operation(
            context, instance, dest, block_migration, migrate_data, guest,
            device_names)

    def _prepare_switchover(self, instance, guest, guaranteed, told):
        """Follow the job into the session; tell QEMU the rate if we can.

        libvirt takes whole MiB/s: what QEMU is told is rounded, at least
        1 and at most what the shaping guarantees.
        """
        self.stealth.follow_outgoing(instance.uuid, job_remaining(guest))
        mib = min(max(1, int(round(told / units.MIB))),
                  int(guaranteed // units.MIB))
        if mib >= 1 and self._host.has_min_version(
                lv_ver=AVAIL_SWITCHOVER_LIBVIRT,
                hv_ver=AVAIL_SWITCHOVER_QEMU):
            guest._domain = _SwitchoverDomain(guest._domain, mib)
            LOG.info('QEMU told %d MiB/s for the switch-over (a share of '
                     'what the shaping guarantees)', mib, instance=instance)
        else:
            LOG.warning('libvirt < %s or QEMU < %s: QEMU decides the '
                        'switch-over at the bandwidth it measures, and the '
                        'downtime grows toward [libvirt] '
                        'live_migration_downtime; the shaping still holds a '
                        'floor from shortly before it',
                        '.'.join(map(str, AVAIL_SWITCHOVER_LIBVIRT)),
                        '.'.join(map(str, AVAIL_SWITCHOVER_QEMU)),
                        instance=instance)

    def _end_outgoing(self, instance, finish):
        # Nova's callbacks must run whatever happens to the shaping: the
        # guest's fate is decided, and Nova has to hear of it.
        try:
            if finish:
                self.stealth.finish_outgoing(instance.uuid)
        except Exception:
            LOG.exception('Ending the shaping failed; removing it',
                          instance=instance)
        try:
            self.stealth.abort_outgoing(instance.uuid)
        except Exception:
            LOG.exception('Removing the shaping failed; the next start of '
                          'nova-compute removes it', instance=instance)
