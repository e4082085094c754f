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
"""The committed sample configuration is what the generator writes."""

import pathlib

from oslo_config import generator

ROOT = pathlib.Path(__file__).resolve().parents[2]
GENERATOR_CONF = ROOT / 'etc/nova_stealth/nova_stealth-config-generator.conf'
SAMPLE = ROOT / 'etc/nova_stealth/nova_stealth.conf.sample'


def test_sample_is_current(tmp_path):
    out = tmp_path / 'nova_stealth.conf.sample'
    generator.main(['--config-file', str(GENERATOR_CONF),
                    '--output-file', str(out)])
    assert out.read_text() == SAMPLE.read_text(), (
        'etc/nova_stealth/nova_stealth.conf.sample is stale: '
        'run "tox -e genconfig" and commit the result')


def test_sample_documents_every_option():
    text = SAMPLE.read_text()
    for name in ('rate_policy', 'min_rate', 'tick_interval_ms',
                 'migration_port_ranges', 'chaff_budget_fraction',
                 'state_dir'):
        assert '#%s = ' % name in text
