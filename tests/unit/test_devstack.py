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
"""The devstack plugin and the shell tools, run against stand-ins for
devstack's functions; shellcheck on every script.
"""

import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = ['devstack/plugin.sh', 'devstack/settings', 'tools/setup-host.sh',
           'tools/setup-nova-env.sh', 'tools/run-tests.sh',
           'tools/run-testbed.sh', '.ci/run']

DEVSTACK_STUBS = '''
set -eu
DEST=/opt/stack DATA_DIR=/opt/stack/data HOST_IP=198.18.0.10
STACK_USER=stack NOVA_CONF_DIR=/etc/nova NOVA_CPU_CONF=/etc/nova/nova-cpu.conf
SERVICES=""
enable_service() { SERVICES="$SERVICES $*"; }
is_service_enabled() { [[ " $SERVICES " == *" $1 "* ]]; }
echo_summary() { :; }
record() { printf '%s\\n' "$*"; }
pip_install() { record pip_install "$@"; }
iniset() { record iniset "$@"; }
run_process() { record run_process "$@"; }
stop_process() { record stop_process "$@"; }
sudo() { record sudo "$@"; }
command() { echo "/usr/local/bin/$2"; }
source {root}/devstack/settings
source {root}/devstack/plugin.sh "$@"
'''


def run_phase(*phase):
    return subprocess.run(
        ['bash', '-c', DEVSTACK_STUBS.replace('{root}', str(ROOT)),
         'plugin'] + list(phase),
        check=True, capture_output=True, text=True).stdout.splitlines()


@pytest.mark.parametrize('script', SCRIPTS)
def test_shellcheck_clean(script):
    result = subprocess.run(['shellcheck', '-x', script], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_install_is_a_wheel_not_a_develop_install():
    assert run_phase('stack', 'install') == [
        'pip_install /opt/stack/nova_stealth']


def test_post_config_loads_the_driver_with_its_options():
    calls = run_phase('stack', 'post-config')
    conf = '/etc/nova/nova-cpu.conf'
    for expected in (
            'iniset %s DEFAULT compute_driver stealth.StealthLibvirtDriver',
            'iniset %s libvirt live_migration_bandwidth 0',
            'iniset %s libvirt live_migration_tunnelled False',
            'iniset %s stealth state_dir /opt/stack/data/nova_stealth',
            'iniset %s stealth require_stealth False',
            'iniset %s stealth chaff_peer_networks 198.18.0.10/24'):
        assert expected % conf in calls
    assert any(c.startswith('sudo install -m 644 ') and
               c.endswith('/etc/nova/rootwrap.d/nova-stealth.filters')
               for c in calls)


def test_extra_starts_the_responder_and_unstack_cleans_up():
    assert run_phase('stack', 'extra') == [
        'run_process n-stealth /usr/local/bin/nova-stealth-chaff-responder '
        '--ports 61500-61503 --peer-network 198.18.0.10/24']
    assert run_phase('unstack') == [
        'stop_process n-stealth',
        'sudo /usr/local/bin/nova-stealth-cleanup --config-file '
        '/etc/nova/nova-cpu.conf']
