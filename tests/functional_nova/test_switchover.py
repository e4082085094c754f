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
"""The switch-over through libvirt: what the driver asks libvirt for.

On a source with libvirt >= 11.1 and QEMU >= 8.2 the driver adds
``VIR_MIGRATE_PARAM_BANDWIDTH_AVAIL_SWITCHOVER`` (MiB/s) to
``migrateToURI3``; on older hosts it leaves it out and the migration goes
ahead. Either way it follows libvirt's job stats into the session, whose
floor under the policy is asked for once the data left is small.
"""

import time

import fixtures
from nova.tests.fixtures import libvirt as fakelibvirt
from oslo_utils import versionutils

from nova_stealth.virt import driver as stealth_driver
from tests.functional_nova import test_live_migration

MIB = 1 << 20
PARAM = 'bandwidth.avail.switchover'


class SwitchoverTestBase(test_live_migration.StealthMigrationTestBase):
    """Two stealth computes whose libvirt and QEMU are VERSIONS."""

    #: (libvirt, QEMU) the fake hosts report; None: Nova's minimum.
    VERSIONS = None

    def setUp(self):
        self.job_stats = None
        self.rates = []
        super().setUp()
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.jobStats', self._job_stats))

    def _start(self, hostname, driver):
        self.flags(compute_driver=driver)
        versions = {}
        if self.VERSIONS:
            versions = {
                'libvirt_version': versionutils.convert_version_to_int(
                    self.VERSIONS[0]),
                'qemu_version': versionutils.convert_version_to_int(
                    self.VERSIONS[1])}
        self.start_compute(hostname=hostname, **versions)
        self.flags(compute_driver='stealth.StealthLibvirtDriver')
        return self.computes[hostname]

    def _migrate_stub(self, domain, destination, params, flags):
        sessions = self.src.driver.stealth.outgoing
        self.rates.append(sessions[self.server['id']].switchover_bandwidth)
        return super()._migrate_stub(domain, destination, params, flags)

    def _job_stats(self, domain, flags=0):
        if self.job_stats is not None:
            return dict(self.job_stats)
        return {'type': domain._job_type}


class TestSwitchoverOnCurrentHosts(SwitchoverTestBase):

    VERSIONS = ((11, 3, 0), (10, 0, 2))

    def test_libvirt_is_told_and_progress_brings_the_floor(self):
        migration = self._start_held_migration()
        params = self.calls[0]['params']
        told = params[PARAM]
        guaranteed = self.rates[0]
        # Whole MiB/s, a share of the guaranteed rate (at least 1 MiB/s)
        # and never above it; Nova's own parameters are all still there.
        self.assertIsInstance(told, int)
        self.assertEqual(max(1, round(guaranteed * 0.1 / MIB)), told)
        self.assertLessEqual(told * MIB, guaranteed)
        self.assertEqual(0, params['bandwidth'])
        self.assertIn('migrate_uri', params)

        backend = self._backend('src')
        self.assertEqual(1, len(backend.modulators))
        modulator = next(iter(backend.modulators.values()))
        # Far from the end: no floor.
        self.job_stats = {'type': fakelibvirt.VIR_DOMAIN_JOB_UNBOUNDED,
                          'data_total': 1 << 30, 'data_remaining': 1 << 30}
        time.sleep(3 * stealth_driver.node_lib.PROGRESS_INTERVAL)
        self.assertIsNone(modulator.floor)
        # Little left: the floor comes, at the guaranteed rate.
        self.job_stats['data_remaining'] = 1 << 16
        self._wait_until(lambda: modulator.floor is not None)
        self.assertAlmostEqual(guaranteed / MIB, modulator.floor)
        self.job_stats = None
        self.api.api_delete('/servers/%s/migrations/%s' % (
            self.server['id'], migration['id']))
        self._wait_for_migration_status(self.server, ['cancelled'])
        self._wait_clean('src')


class TestSwitchoverOnOlderHosts(SwitchoverTestBase):
    """Nova's minimum libvirt and QEMU (older than 11.1 and 8.2)."""

    def test_libvirt_is_not_told_and_the_migration_goes_ahead(self):
        self._live_migrate(self.server, 'completed', 'ACTIVE')
        self.assertNotIn(PARAM, self.calls[0]['params'])
        self.assertEqual('dest', self._host_of(self.server))
        self._wait_clean('src')
