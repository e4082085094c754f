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
"""nova-stealth-status's cloud checks against Nova's placement and API.

The command asks placement and the compute API with keystoneauth, as it
does on a compute node; here with ``[placement] auth_type = admin_token``
(no Keystone runs in the harness) at the placement fixture's endpoint and
the compute API's. Its token is given an admin context by the harness's
stand-in for Keystone's middleware, as a service user's would be.
"""

import json

import fixtures
from nova.api import auth

from nova_stealth.cmd import status
from nova_stealth import virt
from tests.functional_nova import test_live_migration as base

#: The placement fixture's no-auth middleware makes this token an admin's.
TOKEN = 'admin'


class TestCloudChecks(base.StealthMigrationTestBase):

    def setUp(self):
        super().setUp()
        harness_context = auth.NovaKeystoneContext._create_context
        project = self.api.project_id

        def service_user(env, **kwargs):
            # The harness's own clients send who they are; the command,
            # like a service, only its token.
            if 'HTTP_X_AUTH_USER' not in env:
                env.update(HTTP_X_AUTH_USER='admin',
                           HTTP_X_AUTH_PROJECT_ID=project,
                           HTTP_X_ROLES='admin,member,reader')
            return harness_context(env, **kwargs)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.api.auth.NovaKeystoneContext._create_context',
            service_user))

    def _check(self, host='src', **stealth):
        """The cloud checks' results as the compute ``host`` sees them."""
        conf = self.useFixture(fixtures.TempDir()).join('nova.conf')
        with open(conf, 'w') as out:
            out.write('[DEFAULT]\nhost = %s\n[placement]\n'
                      'auth_type = admin_token\ntoken = %s\n'
                      'endpoint = %s\nendpoint_override = %s\n'
                      '[stealth]\n' % (
                          host, TOKEN, self.api.base_url,
                          self.placement.fixture.endpoint))
            out.writelines('%s = %s\n' % item for item in stealth.items())
        stdout = self.useFixture(fixtures.StringStream('stdout'))
        self.useFixture(fixtures.MonkeyPatch('sys.stdout', stdout.stream))
        status.main(['--config-file', conf, 'upgrade', 'check', '--json'])
        checks = json.loads(stdout._details['stdout'].as_text())['checks']
        return {c['check']: (c['result'], c['details']) for c in checks
                if c['check'] in ('Stealth peers', 'Flavors')}

    def test_peers_are_those_placement_shows_with_the_trait(self):
        self.assertEqual(
            (0, 'with %s: dest, src; without: none' % virt.TRAIT),
            self._check()['Stealth peers'])
        self._start('plain', 'libvirt.LibvirtDriver')
        self.assertEqual(
            (0, 'with %s: dest, src; without: plain' % virt.TRAIT),
            self._check()['Stealth peers'])
        # dest stops shaping: src has no stealth peer left.
        self.flags(group='stealth', enabled=False)
        self.restart_compute_service('dest')
        result, details = self._check()['Stealth peers']
        self.assertEqual(1, result)
        self.assertEqual(
            'no other compute node advertises %s: migrations from here go '
            'unshaped, or are refused under [stealth] require_stealth; '
            'with %s: src; without: dest, plain' % (virt.TRAIT, virt.TRAIT),
            details)
        # Seen from dest itself, whose nova_stealth is off.
        self.assertEqual((0, 'with %s: src; without: dest, plain' % (
            virt.TRAIT)), self._check('dest', enabled='false')[
                'Stealth peers'])

    def test_this_node_is_known_by_its_machine_name_too(self):
        # Placement names the provider as libvirt names the host (often the
        # fully qualified name), which need not be [DEFAULT] host.
        self.useFixture(fixtures.MonkeyPatch('socket.getfqdn',
                                             lambda *args: 'src'))
        self.assertEqual(
            (0, 'with %s: dest, src; without: none' % virt.TRAIT),
            self._check('src-by-another-name')['Stealth peers'])

    def test_flavors_must_require_the_trait_under_require_stealth(self):
        self.assertEqual((0, None), self._check()['Flavors'])
        flavors = self.admin_api.get_flavors()
        self.assertNotEqual([], flavors)
        result, details = self._check(require_stealth='true')['Flavors']
        self.assertEqual(1, result)
        self.assertIn('flavors %s lack trait:%s=required' % (
            ', '.join(sorted(f['name'] for f in flavors)), virt.TRAIT),
            details)
        for flavor in flavors:
            self.admin_api.post_extra_spec(flavor['id'], {'extra_specs': {
                'trait:%s' % virt.TRAIT: 'required'}})
        self.assertEqual((0, None),
                         self._check(require_stealth='true')['Flavors'])
