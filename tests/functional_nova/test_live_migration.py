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
"""Live migrations through Nova's API with StealthLibvirtDriver computes.

Nova's functional harness runs the real API, conductor, scheduler and two
nova-compute services over Nova's fake libvirt; ``os-migrateLive`` drives
the real libvirt driver code. nova_stealth reaches its kernel through the
``recording`` backend (privsep cannot run here), which holds the netlink
messages the real backend sends, so the checks below are on the tree that
would be installed for real.
"""

import os
import threading
import time

import fixtures
from nova import monkey_patch
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional import integrated_helpers
from nova.tests.functional.libvirt import base as libvirt_base
# The shim Nova loads the driver from; importing it registers [stealth].
import nova.virt.stealth  # noqa: F401

from nova_stealth.backends import recording
from nova_stealth.ports import leases as leases_lib
from nova_stealth import rtnl
from nova_stealth.shaping import state
from nova_stealth.shaping import tree
from nova_stealth.virt import node
from tests.functional_nova import conftest

PORT_RANGE = range(62000, 65000)
CHAFF_PORTS = range(61500, 61504)


class StealthMigrationTestBase(libvirt_base.ServersTestBase,
                               integrated_helpers.InstanceHelperMixin):
    """Two computes, src and dest, running StealthLibvirtDriver."""

    microversion = '2.74'
    ADMIN_API = True
    DEST_DRIVER = 'stealth.StealthLibvirtDriver'
    SRC_DRIVER = 'stealth.StealthLibvirtDriver'

    def _setup_compute_service(self):
        self.flags(compute_driver='stealth.StealthLibvirtDriver')

    def setUp(self):
        super().setUp()
        self.state_dir = self.useFixture(fixtures.TempDir()).path
        self.flags(group='stealth', state_dir=self.state_dir,
                   backend='recording', chaff_lead_seconds=[0.2, 0.3],
                   chaff_tail_seconds=[0.2, 0.3])
        # As README asks of operators: migrations over QEMU's native TLS.
        self.flags(group='libvirt', live_migration_with_native_tls=True)
        self.addCleanup(recording.RecordingBackend.forget_hosts)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.migrateToURI3',
            self._migrate_stub))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.abortJob', self._abort_stub))
        self.calls = []
        self.outcome = 'complete'
        self.release_job = threading.Event()
        self.src = self._start('src', self.SRC_DRIVER)
        self.dest = self._start('dest', self.DEST_DRIVER)
        self.server = self._create_server(host='src', networks='none')

    def _clear_attrs(self):
        # Nova's base class deletes every public attribute after a test,
        # the test method pytest put there and removes itself included.
        method = self.__dict__.get(self._testMethodName)
        super()._clear_attrs()
        if method is not None:
            self.__dict__[self._testMethodName] = method

    def _start(self, hostname, driver):
        self.flags(compute_driver=driver)
        self.start_compute(hostname=hostname)
        self.flags(compute_driver='stealth.StealthLibvirtDriver')
        return self.computes[hostname]

    # The fake libvirt's side of a migration ------------------------------

    def _migrate_stub(self, domain, destination, params, flags):
        """Record the call and what is in place; then end the job.

        The job completes, fails or runs on (until aborted), as
        ``self.outcome`` says.
        """
        self.calls.append({
            'destination': destination, 'params': dict(params),
            'src_tree': self._trees('src'),
            'src_sessions': self._recorded_sessions('src'),
            'src_chaff': [c.peers for c in self._backend(
                'src').running_chaff()],
            'dest_leases': self._leases('dest'),
        })
        conn = self.src.driver._host.get_connection()
        dom = conn.lookupByUUIDString(self.server['id'])
        if self.outcome == 'fail':
            dom.fail_job()
            return
        if self.outcome == 'hold':
            dom._job_type = fakelibvirt.VIR_DOMAIN_JOB_UNBOUNDED
            return
        self._migration_target().driver._host.get_connection().createXML(
            params['destination_xml'],
            'fake-createXML-doesnt-care-about-flags')
        dom.complete_job()

    def _migration_target(self):
        """The compute service the fake migration lands on."""
        return self.dest

    @staticmethod
    def _abort_stub(domain):
        domain._job_type = fakelibvirt.VIR_DOMAIN_JOB_CANCELLED

    # What each host holds ------------------------------------------------

    def _backend(self, hostname):
        return recording.RecordingBackend(host=hostname)

    def _trees(self, hostname):
        return self._backend(hostname).installed()

    def _leases(self, hostname):
        node = getattr(self.computes[hostname].driver, 'stealth', None)
        return node.leases.leases() if node else {}

    def _traits(self, hostname):
        return self._get_provider_traits(
            self._get_provider_uuid_by_host(hostname))

    def _recorded_sessions(self, hostname):
        found = {}
        stealth = getattr(self.computes[hostname].driver, 'stealth', None)
        if stealth is None:
            return found
        host_dir = stealth.records_dir
        for ifname in state.devices(host_dir):
            found.update(state.load(host_dir, ifname)['sessions'])
        return found

    def _wait_clean(self, hostname, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (not self._trees(hostname) and
                    not self._backend(hostname).running_chaff() and
                    not self._leases(hostname)):
                return
            time.sleep(0.1)
        self.fail('%s still holds: tc %s, chaff %s, leases %s' % (
            hostname, self._trees(hostname),
            self._backend(hostname).running_chaff(),
            self._leases(hostname)))

    def _host_of(self, server):
        return self.api.get_server(server['id'])['OS-EXT-SRV-ATTR:host']

    def _refused_by_prechecks(self):
        # Nova's harness makes the conductor's cast a call, so the
        # pre-check error comes back to the API as a 500 (as in Nova's
        # own NUMA live-migration tests).
        self.api.api_post(
            '/servers/%s/action' % self.server['id'],
            {'os-migrateLive': {'host': 'dest', 'block_migration': 'auto'}},
            check_response_status=[500])
        self._wait_for_migration_status(self.server, ['error'])
        self._wait_for_state_change(self.server, 'ACTIVE')
        self.assertEqual('src', self._host_of(self.server))

    def _start_held_migration(self):
        """Start a migration whose libvirt job runs until aborted."""
        self.outcome = 'hold'
        self.api.post_server_action(
            self.server['id'],
            {'os-migrateLive': {'host': None, 'block_migration': 'auto'}})
        migration = self._wait_for_migration_status(self.server, ['running'])
        self._wait_until(lambda: self.calls)
        return migration

    def _wait_until(self, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail('timed out')
            time.sleep(0.05)

    def _expected_filter(self, peer, port, classid, prio, ifindex):
        protocol, keys = tree.migration_filter(peer, port)
        body = (rtnl.filter_tcmsg(ifindex, tree.ROOT_HANDLE, prio, protocol) +
                rtnl.u32_options([tuple(k) for k in keys], classid))
        return rtnl.netlink_message(rtnl.RTM_NEWTFILTER, body)


class TestConcurrencyMode(StealthMigrationTestBase):

    def test_runs_in_the_chosen_mode(self):
        self.assertEqual(conftest.CONCURRENCY == 'eventlet',
                         monkey_patch.is_patched())


class TestStealthedMigration(StealthMigrationTestBase):

    def test_success_shapes_the_leased_port_and_cleans_up(self):
        self._live_migrate(self.server, 'completed', 'ACTIVE')
        self.assertEqual('dest', self._host_of(self.server))
        self.assertEqual(1, len(self.calls))
        call = self.calls[0]

        # The destination leased a port from the ranges and handed it back;
        # libvirt got it in migrate_uri, and its own connection URI has no
        # port in it.
        self.assertEqual(1, len(call['dest_leases']))
        port = call['dest_leases'][self.server['id']]
        self.assertIn(port, PORT_RANGE)
        migrate_uri = call['params']['migrate_uri']
        address = migrate_uri[len('tcp://'):].rsplit(':', 1)[0]
        self.assertEqual('tcp://%s:%d' % (address, port), migrate_uri)
        self.assertEqual('qemu+tcp://%s/system' % address,
                         call['destination'])
        # QEMU's limiter is off (0: libvirt's unlimited default), so the
        # DHTB alone paces the data.
        self.assertEqual(0, call['params']['bandwidth'])

        # Before libvirt was called, the source had the DHTB tree with a
        # class and a u32 filter for exactly that port, and chaff running
        # to the destination's responder ports.
        self.assertEqual(1, len(call['src_tree']))
        ifindex, installed = next(iter(call['src_tree'].items()))
        self.assertEqual([tree.ROOT_HANDLE], list(installed['qdiscs']))
        self.assertEqual([self.server['id']], list(call['src_sessions']))
        session = call['src_sessions'][self.server['id']]
        self.assertEqual((address, port), (session['peer'], session['port']))
        self.assertIn(session['classid'], installed['classes'])
        expected = self._expected_filter(address, port, session['classid'],
                                         session['prio'], ifindex)
        self.assertIn(expected, installed['filters'].values())
        self.assertEqual([[(address, list(CHAFF_PORTS))]], call['src_chaff'])

        # Afterwards: nothing left on either host.
        self._wait_clean('src')
        self._wait_clean('dest')
        self.assertEqual({}, self._recorded_sessions('src'))

    def test_libvirt_job_failure_leaves_both_sides_clean(self):
        self.outcome = 'fail'
        self._live_migrate(self.server, 'failed', 'ACTIVE')
        self.assertEqual('src', self._host_of(self.server))
        self.assertEqual(1, len(self.calls))
        self.assertTrue(self.calls[0]['src_tree'])
        self._wait_clean('src')
        self._expire_incoming_leases()
        self._wait_clean('dest')

    def _expire_incoming_leases(self):
        """Let the destination's backstop release what Nova left."""
        self._run_periodics()
        self.assertEqual([self.server['id']], list(self._leases('dest')))
        self.dest.driver.stealth.clock = (
            lambda: time.time() + node.INCOMING_GRACE_SECONDS + 1)
        self._run_periodics()

    def test_abort_during_migration(self):
        migration = self._start_held_migration()
        self.assertTrue(self._trees('src'))
        self.api.api_delete('/servers/%s/migrations/%s' % (
            self.server['id'], migration['id']))
        self._wait_for_migration_status(self.server, ['cancelled'])
        self._wait_for_state_change(self.server, 'ACTIVE')
        self.assertEqual('src', self._host_of(self.server))
        self._wait_clean('src')
        self.assertEqual({}, self._trees('dest'))
        # Nova did not tell the destination (nothing to clean there in its
        # view): the backstop releases the lease once the incoming domain
        # has not come for the grace period.
        self._expire_incoming_leases()
        self._wait_clean('dest')

    def test_failure_in_destination_pre_live_migration(self):
        # Every port of the range is leased to another migration.
        self.flags(group='stealth', migration_port_ranges=['61000-61000'])
        self.dest.driver.stealth.leases.ranges = [range(61000, 61001)]
        self.dest.driver.stealth.leases.allocate('another-migration')
        self._live_migrate(self.server, 'failed', 'ACTIVE')
        self.assertEqual('src', self._host_of(self.server))
        self.assertEqual([], self.calls)
        self.assertEqual({'another-migration': 61000}, self._leases('dest'))
        self.assertEqual({}, self._trees('src'))

    def test_shaping_that_cannot_be_installed_rolls_back(self):
        # An operator's own root qdisc on the source's egress device, which
        # [stealth] allow_replace_root_qdisc does not allow to replace.
        operator_root = 0x10000  # 1:
        tbf = rtnl.tcmsg(2, operator_root, rtnl.TC_H_ROOT) + rtnl.attr(
            rtnl.TCA_KIND, b'tbf\0')
        snapshot = {'qdiscs': [rtnl.netlink_message(rtnl.RTM_NEWQDISC, tbf)],
                    'classes': [], 'filters': []}
        self._backend('src').replay_tc(2, snapshot)
        self._live_migrate(self.server, 'failed', 'ACTIVE')
        self.assertEqual('src', self._host_of(self.server))
        self.assertEqual([], self.calls)
        self.assertIn('Could not shape the migration, so it is not started',
                      self.stdlog.logger.output)
        self.assertIn('has a qdisc tbf 1:0 that an operator configured',
                      self.stdlog.logger.output)
        self.assertEqual(snapshot, self._backend('src').dump_tc(2))
        self.assertEqual([], self._backend('src').running_chaff())
        self.assertEqual({}, self._recorded_sessions('src'))

    def test_a_malformed_connect_address_is_refused_and_rolled_back(self):
        # A destination (of another version, or not ours) that hands back
        # a connect address the source cannot read: the migration is
        # refused before anything starts, and both sides roll back.
        self.stub_out('nova_stealth.engine.destination.connect_address',
                      lambda address, port: 'dest:x')
        self._live_migrate(self.server, 'failed', 'ACTIVE')
        self.assertEqual('src', self._host_of(self.server))
        self.assertEqual([], self.calls)
        self.assertIn('Refusing to live-migrate to dest: Invalid migration '
                      'connect address', self.stdlog.logger.output)
        self._wait_clean('src')
        # Nova's rollback does not tell the destination: its backstop
        # releases the lease, as after a failed libvirt job.
        self._expire_incoming_leases()
        self._wait_clean('dest')

    def test_plain_tcp_is_refused_when_stealth_is_required(self):
        self.flags(group='libvirt', live_migration_with_native_tls=False)
        self.flags(group='stealth', require_stealth=True)
        self._refused_by_prechecks()
        self.assertIn('live_migration_with_native_tls is false',
                      self.stdlog.logger.output)
        self.assertEqual([], self.calls)
        self._wait_clean('src')
        self._wait_clean('dest')

    def test_plain_tcp_is_warned_of_at_start(self):
        self.flags(group='libvirt', live_migration_with_native_tls=False)
        self._start('other', 'stealth.StealthLibvirtDriver')
        self.assertIn('Live migrations from this host run over plain TCP',
                      self.stdlog.logger.output)

    def test_tunnelled_is_refused(self):
        self.flags(group='libvirt', live_migration_tunnelled=True)
        self._refused_by_prechecks()
        self.assertIn('nova_stealth cannot shape a tunnelled live migration',
                      self.stdlog.logger.output)
        self.assertEqual([], self.calls)
        self._wait_clean('src')
        self._wait_clean('dest')


class TestPlainDestination(StealthMigrationTestBase):
    """The destination runs Nova's own LibvirtDriver."""

    DEST_DRIVER = 'libvirt.LibvirtDriver'

    def test_only_the_stealth_compute_carries_the_trait(self):
        # What `openstack resource provider trait list` shows operators.
        self.assertIn('CUSTOM_NOVA_STEALTH', self._traits('src'))
        self.assertNotIn('CUSTOM_NOVA_STEALTH', self._traits('dest'))
        # The libvirt driver's own traits are still reported.
        self.assertIn('COMPUTE_NET_VIF_MODEL_VIRTIO', self._traits('src'))

    def test_migrates_unshaped_with_a_warning(self):
        self._live_migrate(self.server, 'completed', 'ACTIVE')
        self.assertEqual('dest', self._host_of(self.server))
        self.assertEqual({}, self.calls[0]['src_tree'])
        self.assertEqual([], self.calls[0]['src_chaff'])
        self.assertNotIn('migrate_uri', self.calls[0]['params'])
        self.assertIn('The destination dest does not run nova_stealth',
                      self.stdlog.logger.output)
        self._wait_clean('src')

    def test_refused_when_stealth_is_required(self):
        self.flags(group='stealth', require_stealth=True)
        self._live_migrate(self.server, 'failed', 'ACTIVE')
        self.assertEqual('src', self._host_of(self.server))
        self.assertEqual([], self.calls)
        self.assertIn('Refusing to live-migrate to dest, which does not run '
                      'nova_stealth: [stealth] require_stealth is set (a '
                      'flavor or image requiring '
                      'trait:CUSTOM_NOVA_STEALTH=required makes the '
                      'scheduler pick only nodes that do)',
                      self.stdlog.logger.output)
        self._wait_clean('src')


class TestPlainSource(StealthMigrationTestBase):
    """The source runs Nova's own LibvirtDriver."""

    SRC_DRIVER = 'libvirt.LibvirtDriver'

    def test_destination_hands_no_port_to_a_plain_source(self):
        # A plain source would put the port into libvirt's connection URI.
        self._live_migrate(self.server, 'completed', 'ACTIVE')
        self.assertEqual('dest', self._host_of(self.server))
        self.assertEqual({}, self.calls[0]['dest_leases'])
        self.assertNotIn('migrate_uri', self.calls[0]['params'])
        self.assertIn('The source host src does not run nova_stealth',
                      self.stdlog.logger.output)
        self._wait_clean('dest')

    def test_refused_in_prechecks_when_stealth_is_required(self):
        self.flags(group='stealth', require_stealth=True)
        self._refused_by_prechecks()
        self.assertIn('the source host src does not run nova_stealth',
                      self.stdlog.logger.output)
        self.assertEqual([], self.calls)
        self._wait_clean('dest')


class TestServiceLifecycle(StealthMigrationTestBase):

    def test_the_trait_goes_when_stealth_is_disabled(self):
        self.assertIn('CUSTOM_NOVA_STEALTH', self._traits('src'))
        self.flags(group='stealth', enabled=False)
        self.restart_compute_service('src')
        self.assertNotIn('CUSTOM_NOVA_STEALTH', self._traits('src'))
        self.assertIn('COMPUTE_NET_VIF_MODEL_VIRTIO', self._traits('src'))

    def test_bad_options_stop_the_service(self):
        self.flags(group='stealth', backend='no-such-backend')
        self.assertRaises(SystemExit, self._start, 'other',
                          'stealth.StealthLibvirtDriver')
        self.assertIn("Invalid value 'no-such-backend' for option [stealth] "
                      "backend", self.stdlog.logger.output)
        self.flags(group='stealth', backend='recording')
        self.flags(group='libvirt', live_migration_bandwidth=10)
        self.assertRaises(SystemExit, self._start, 'other2',
                          'stealth.StealthLibvirtDriver')
        self.assertIn('Invalid value 10 for option [libvirt] '
                      'live_migration_bandwidth', self.stdlog.logger.output)
        self.flags(group='libvirt', live_migration_bandwidth=0)
        self.flags(group='stealth', chaff_tls_priority='NORMAL:+NO-SUCH')
        self.assertRaises(SystemExit, self._start, 'other3',
                          'stealth.StealthLibvirtDriver')
        self.assertIn("for option [stealth] chaff_tls_priority: GnuTLS "
                      "cannot read it", self.stdlog.logger.output)

    def test_restart_with_stealth_disabled_still_sweeps(self):
        # Turning nova_stealth off must not leave a crashed run's shaping
        # and leases in place for ever.
        self._start_held_migration()
        self.assertTrue(self._trees('src'))
        self.assertEqual([self.server['id']], list(self._leases('dest')))
        old_src = self.src
        held = old_src.driver._host.get_connection().lookupByUUIDString(
            self.server['id'])

        records_dir = old_src.driver.stealth.records_dir

        self.flags(group='stealth', enabled=False)
        self.restart_compute_service('src')
        self.restart_compute_service('dest')
        self.assertIsNone(self.computes['src'].driver.stealth)
        self.assertIsNone(self.computes['dest'].driver.stealth)
        self.assertEqual({}, self._trees('src'))
        self.assertEqual(
            [], [sid for ifname in state.devices(records_dir)
                 for sid in state.load(records_dir, ifname)['sessions']])
        dest_leases = leases_lib.PortLeases(
            os.path.join(self.state_dir, 'dest'), [PORT_RANGE])
        self.assertEqual({}, dest_leases.leases())
        self.assertIn('left by an earlier run', self.stdlog.logger.output)
        held._job_type = fakelibvirt.VIR_DOMAIN_JOB_CANCELLED
        old_src.driver.stealth.abort_outgoing(self.server['id'])

    def test_restart_mid_migration_removes_what_was_left(self):
        self._start_held_migration()
        self.assertTrue(self._trees('src'))
        self.assertTrue(self._recorded_sessions('src'))
        self.assertEqual([self.server['id']], list(self._leases('dest')))
        old_src = self.src
        held = old_src.driver._host.get_connection().lookupByUUIDString(
            self.server['id'])

        # What the restarted service's sweep finds when it removes the
        # shaping: the migration must be aborted by then, or it would go on
        # unshaped (its modulator and chaff died with the old service).
        at_sweep = []
        sweep = node.StealthNode.sweep

        def recording_sweep(node):
            at_sweep.append(held._job_type)
            return sweep(node)

        self.useFixture(fixtures.MonkeyPatch(
            'nova_stealth.virt.node.StealthNode.sweep', recording_sweep))
        self.restart_compute_service('src')
        self.assertEqual([fakelibvirt.VIR_DOMAIN_JOB_CANCELLED], at_sweep)
        self.assertIn('Aborted the live migration of instance %s' %
                      self.server['id'], self.stdlog.logger.output)
        self.restart_compute_service('dest')
        self.assertEqual({}, self._trees('src'))
        self.assertEqual({}, self._recorded_sessions('src'))
        self.assertEqual({}, self._leases('dest'))
        self.assertIn('left by an earlier run', self.stdlog.logger.output)
        self._wait_for_migration_status(self.server, ['error'])
        # The old service's monitor (a thread here, dead with its process
        # on a real host) sees the job cancelled; end its session too.
        old_src.driver.stealth.abort_outgoing(self.server['id'])
        self._wait_clean('src')
