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
"""The modules nova-compute runs log through oslo.log, as Nova does."""

import importlib
import pathlib

from oslo_log import log as oslo_logging
import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / 'nova_stealth'
#: What nova-compute imports of nova_stealth, its privsep daemon with it
#: (nova_stealth.virt.driver itself needs Nova: tests/functional_nova).
COMPUTE = ['virt', 'engine', 'shaping', 'privileged', 'ports', 'chaff',
           'conf', 'policy', 'backends']


def compute_modules():
    for name in COMPUTE:
        for path in sorted((PACKAGE / name).rglob('*.py')):
            parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
            yield '.'.join(p for p in parts if p != '__init__')
    for path in sorted(PACKAGE.glob('*.py')):
        yield 'nova_stealth.' + path.stem


MODULES = [name for name in compute_modules()
           if name != 'nova_stealth.virt.driver']


@pytest.mark.parametrize('name', MODULES)
def test_a_compute_module_logs_through_oslo_log(name):
    module = importlib.import_module(name)
    log = getattr(module, 'LOG', None)
    if log is not None:
        assert isinstance(log, oslo_logging.KeywordArgumentAdapter), name
    assert getattr(module, 'logging', oslo_logging) is oslo_logging, (
        '%s imports the standard library\'s logging' % name)


def test_the_modules_that_log_are_among_them():
    logging_modules = {name for name in MODULES
                       if hasattr(importlib.import_module(name), 'LOG')}
    assert {'nova_stealth.statefile', 'nova_stealth.virt.node',
            'nova_stealth.engine.source', 'nova_stealth.shaping.tc_lib',
            'nova_stealth.shaping.modulator', 'nova_stealth.chaff.sender',
            'nova_stealth.chaff.responder'} <= logging_modules
