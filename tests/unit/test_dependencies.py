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
"""A compute node needs only requirements.txt: the analysis stack is extras.
"""

import configparser
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: The audit's and the testbed's own dependencies, by import name.
ANALYSIS = {'sklearn': 'scikit-learn', 'scipy': 'scipy',
            'matplotlib': 'matplotlib', 'tqdm': 'tqdm'}
#: The packages nova-compute imports through the driver
#: (nova_stealth.virt.driver itself needs Nova: tests/functional_nova).
DRIVER_PATH = ['nova_stealth.virt.node', 'nova_stealth.engine',
               'nova_stealth.shaping', 'nova_stealth.privileged',
               'nova_stealth.ports', 'nova_stealth.chaff',
               'nova_stealth.conf', 'nova_stealth.policy',
               'nova_stealth.backends', 'nova_stealth.plugins']

# Refuses the analysis stack, imports every module of the driver's path and
# of its plugins (as nova-compute loads them), prints what it imported.
IMPORT_ALL = '''
import importlib, importlib.abc, pkgutil, sys
from importlib import metadata

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('not on a compute node: ' + name)

sys.meta_path.insert(0, Refuse())
names = []
for name in {packages!r}:
    module = importlib.import_module(name)
    names.append(name)
    for info in pkgutil.walk_packages(getattr(module, '__path__', []),
                                      name + '.'):
        importlib.import_module(info.name)
        names.append(info.name)
for group in ('nova_stealth.rate_policies', 'nova_stealth.backends',
              'nova_stealth.chaff_schedules'):
    for entry in metadata.entry_points(group=group):
        entry.load()
        names.append(entry.value)
print('\\n'.join(names))
'''


def test_the_driver_path_imports_no_analysis_package():
    script = IMPORT_ALL.format(blocked=set(ANALYSIS), packages=DRIVER_PATH)
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    imported = result.stdout.split()
    for module in ('nova_stealth.engine.source', 'nova_stealth.chaff.sender',
                   'nova_stealth.privileged.tc', 'nova_stealth.policy.paper',
                   'nova_stealth.policy.paper:PaperRatePolicy'):
        assert module in imported


def test_the_analysis_stack_is_extras_not_requirements():
    requirements = (ROOT / 'requirements.txt').read_text().lower()
    setup = configparser.ConfigParser()
    setup.read(ROOT / 'setup.cfg')
    for distribution in ANALYSIS.values():
        assert '\n%s>' % distribution not in '\n' + requirements
        for extra in ('audit', 'testbed'):
            assert '%s>=' % distribution in setup['extras'][extra]
