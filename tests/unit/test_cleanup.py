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
"""nova-stealth-cleanup on what two hosts' services left."""

from nova_stealth.backends import recording
from nova_stealth.cmd import cleanup
from nova_stealth.ports import leases as leases_lib
from nova_stealth.shaping import tc_lib


def test_removes_every_hosts_shaping_and_leases(tmp_path, capsys):
    state_dir = tmp_path / 'state'
    for host in ('h1', 'h2'):
        host_dir = str(state_dir / host)
        shaper = tc_lib.Shaper(
            host_dir, kernel=recording.RecordingBackend(host=host))
        shaper.install('out-' + host, '198.18.1.2', 61234, 8.0)
        leases_lib.PortLeases(host_dir, [range(61000, 61010)]).allocate(
            'in-' + host)
    config = tmp_path / 'nova-cpu.conf'
    config.write_text('[stealth]\nstate_dir = %s\nbackend = recording\n'
                      % state_dir)
    try:
        assert cleanup.main(['--config-file', str(config)]) == 0
        for host in ('h1', 'h2'):
            assert recording.RecordingBackend(host=host).installed() == {}
            assert leases_lib.PortLeases(
                str(state_dir / host), [range(61000, 61010)]).leases() == {}
    finally:
        recording.RecordingBackend.forget_hosts()
    assert 'removed shaping of 2 migrations, ended 2 port leases' in (
        capsys.readouterr().out)
