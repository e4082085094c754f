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
"""What installing nova_stealth puts into Nova's package, and the shim."""

from importlib import metadata
import subprocess
import sys
import unittest

from nova.virt.libvirt import driver as libvirt_driver
from nova.virt import stealth

from nova_stealth.virt import driver


class TestInstalledFiles(unittest.TestCase):

    def test_record_holds_the_shim_and_none_of_novas_files(self):
        files = {str(f) for f in metadata.files('nova_stealth')}
        nova_files = sorted(f for f in files if f.startswith('nova/'))
        self.assertEqual(['nova/virt/stealth/__init__.py'],
                         [f for f in nova_files if not f.endswith('.pyc')])
        self.assertNotIn('nova/__init__.py', files)
        self.assertNotIn('nova/virt/__init__.py', files)

    def test_shim_exports_the_driver(self):
        self.assertIs(driver.StealthLibvirtDriver,
                      stealth.StealthLibvirtDriver)
        self.assertTrue(issubclass(stealth.StealthLibvirtDriver,
                                   libvirt_driver.LibvirtDriver))


class TestComputeNodeDependencies(unittest.TestCase):

    def test_the_driver_imports_no_analysis_package(self):
        # As nova-compute loads it, in a process of its own; the rest of
        # the driver's path is checked in tests/unit/test_dependencies.py.
        script = ('import sys\n'
                  'import nova.virt.stealth\n'
                  'import nova_stealth.virt.driver\n'
                  'print(sorted({m.split(".")[0] for m in sys.modules} & '
                  '{"sklearn", "scipy", "matplotlib", "tqdm"}))\n')
        result = subprocess.run([sys.executable, '-c', script],
                                capture_output=True, text=True, check=True)
        self.assertEqual('[]', result.stdout.strip())


class TestConnectAddress(unittest.TestCase):

    def test_libvirt_uri_loses_the_port(self):
        self.assertEqual(
            'qemu+tcp://[2001:db8::2]/system',
            driver.StealthLibvirtDriver._live_migration_uri(
                '[2001:db8::2]:61001'))
