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
"""The scheduler picks stealth destinations for servers that require them.

Nova's way: a required trait in the server's request, from its flavor
(``trait:CUSTOM_NOVA_STEALTH=required``) or its image, which placement
honours when the scheduler picks a live migration's destination. Three
computes: ``src`` and ``dest`` run nova_stealth, ``plain`` the libvirt
driver with four times the memory, so that the scheduler's weighers prefer
it whenever the trait does not rule it out.
"""

from nova import context as nova_context
from nova import objects
from nova.tests.fixtures import libvirt as fakelibvirt

from nova_stealth import virt
from tests.functional_nova import test_live_migration as base

REQUIRED = {'trait:%s' % virt.TRAIT: 'required'}


class TestStealthDestinations(base.StealthMigrationTestBase):

    def setUp(self):
        super().setUp()
        self.flags(compute_driver='libvirt.LibvirtDriver')
        self.start_compute('plain', host_info=fakelibvirt.HostInfo(
            cpu_nodes=1, cpu_sockets=1, cpu_cores=2, cpu_threads=1,
            kB_mem=4 * 16780000))
        self.flags(compute_driver='stealth.StealthLibvirtDriver')

    def _migration_target(self):
        # The host the scheduler picked, as the migration records it.
        migration = objects.MigrationList.get_in_progress_by_instance(
            nova_context.get_admin_context(), self.server['id'])[0]
        return self.computes[migration.dest_compute]

    def _server_requiring_stealth(self):
        flavor = self._create_flavor(extra_spec=REQUIRED)
        return self._create_server(host='src', flavor_id=flavor,
                                   networks='none')

    def test_the_trait_keeps_the_scheduler_off_the_plain_host(self):
        unmarked = self.server
        server = self.server = self._server_requiring_stealth()
        # Named (not forced), the plain host is not a valid destination.
        # Nova's harness makes the conductor's cast a call, so the
        # scheduler's NoValidHost comes back to the API as a 500.
        self.api.api_post(
            '/servers/%s/action' % server['id'],
            {'os-migrateLive': {'host': 'plain', 'block_migration': 'auto'}},
            check_response_status=[500])
        self.assertIn('No valid host was found', self.stdlog.logger.output)
        self._wait_for_migration_status(server, ['error'])
        self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('src', self._host_of(server))
        self.assertEqual([], self.calls)

        # Left to the scheduler, it goes to the stealth host, shaped on
        # the port the destination leased.
        self._live_migrate(server, 'completed', 'ACTIVE')
        self.assertEqual('dest', self._host_of(server))
        self.assertEqual(1, len(self.calls))
        self.assertIn('migrate_uri', self.calls[0]['params'])
        self.assertNotEqual({}, self.calls[0]['src_tree'])
        self._wait_clean('src')
        self._wait_clean('dest')

        # The control: without the trait, the roomier plain host wins.
        self.server = unmarked
        self._live_migrate(self.server, 'completed', 'ACTIVE')
        self.assertEqual('plain', self._host_of(self.server))
        self.assertIn('The destination plain does not run nova_stealth',
                      self.stdlog.logger.output)

    def test_an_image_requiring_the_trait_steers_it_too(self):
        image = self.glance.create(None, {
            'name': 'stealth-image', 'status': 'active',
            'container_format': 'bare', 'disk_format': 'raw',
            'visibility': 'public', 'min_ram': 0, 'min_disk': 0,
            'properties': dict(REQUIRED)})
        server = self.server = self._create_server(
            host='src', image_uuid=image['id'], networks='none')
        self._live_migrate(server, 'completed', 'ACTIVE')
        self.assertEqual('dest', self._host_of(server))
        self.assertNotEqual({}, self.calls[0]['src_tree'])
        self._wait_clean('src')
