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

import pytest

from oslo_config import cfg

from nova_stealth import conf as stealth_conf


@pytest.fixture
def write_conf(tmp_path):
    """Return a function that loads a [stealth] section into a new CONF."""

    def _load(**options):
        path = tmp_path / 'nova.conf'
        lines = ['[stealth]'] + ['%s = %s' % kv for kv in options.items()]
        path.write_text('\n'.join(lines) + '\n')
        conf = cfg.ConfigOpts()
        stealth_conf.register_opts(conf)
        conf(['--config-file', str(path)], project='nova')
        return conf

    return _load
