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

import os
import pathlib
import subprocess

from oslo_config import cfg
import pytest

from nova_stealth import conf as stealth_conf

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = ['devstack/plugin.sh', 'devstack/settings', 'tools/setup-host.sh',
           'tools/setup-nova-env.sh', 'tools/run-tests.sh',
           'tools/run-testbed.sh', '.ci/run']

DEVSTACK = ROOT / 'tests' / 'unit' / 'devstack'

# What stack.sh and unstack.sh do around the plugin, in their order, with
# devstack's own ini and local.conf functions (tests/unit/devstack). Only
# what cannot run here is a stand-in: services, packages and sudo are
# recorded, one line each, on stdout.
DEVSTACK_RUN = r"""
set -eu
TOP_DIR=$1 DEST=/opt/stack DATA_DIR=$1/data HOST_IP=198.18.0.10
STACK_USER=stack NOVA_CONF_DIR=$1/etc NOVA_CONF=$1/etc/nova.conf
NOVA_CPU_CONF=$1/etc/nova-cpu.conf
shift
mkdir -p "$NOVA_CONF_DIR"
# devstack installs gawk (files/debs/general); its local.conf parser needs
# it, and bindep.txt lists it for these tests.
CONFIG_AWK_CMD=gawk
source {devstack}/ini-config
source {devstack}/meta-config
SERVICES="n-cpu"
enable_service() { SERVICES="$SERVICES $*"; }
is_service_enabled() { [[ " $SERVICES " == *" $1 "* ]]; }
echo_summary() { :; }
die() { echo "die $*" >&2; exit 1; }
warn() { echo "warn $*" >&2; }
record() { printf '%s\n' "$*"; }
pip_install() { record pip_install "$@"; }
run_process() { record run_process "$@"; }
stop_process() { record stop_process "$@"; }
sudo() { record sudo "$@"; }
command() { echo "/usr/local/bin/$2"; }
source {root}/devstack/settings

# lib/nova_plugins/hypervisor-libvirt, from create_nova_conf.
iniset $NOVA_CONF DEFAULT compute_driver "libvirt.LibvirtDriver"

# lib/nova start_nova_compute, the lines that make nova-cpu.conf.
start_nova_compute() {
    local compute_cell_conf=$NOVA_CONF
    cp $compute_cell_conf $NOVA_CPU_CONF
    merge_config_file $TOP_DIR/local.conf post-config '$NOVA_CPU_CONF'
}

for phase in "$@"; do
    case $phase in
        post-config)
            source {root}/devstack/plugin.sh stack post-config
            merge_config_group $TOP_DIR/local.conf post-config ;;
        start-compute)
            start_nova_compute ;;
        *)
            source {root}/devstack/plugin.sh $phase ;;
    esac
done
"""

LOCAL_CONF = """
[[post-config|$NOVA_CONF]]
[stealth]
require_stealth = True

[[post-config|$NOVA_CPU_CONF]]
[stealth]
rate_policy = constant
"""


def run_devstack(tmp_path, *phases, settings=None):
    """Run devstack's phases; return the recorded commands.

    :param settings: variables of local.conf's [[local|localrc]], as
        {name: value}
    """
    (tmp_path / 'local.conf').write_text(LOCAL_CONF)
    script = DEVSTACK_RUN.replace('{root}', str(ROOT)).replace(
        '{devstack}', str(DEVSTACK))
    result = subprocess.run(
        ['bash', '-c', script, 'devstack', str(tmp_path)] + list(phases),
        check=True, capture_output=True, text=True,
        env=dict(os.environ, **(settings or {})))
    # merge_config_file's pipeline hides its errors from the status; gawk
    # warns about devstack's own `\#` whatever the plugin does.
    assert [line for line in result.stderr.splitlines()
            if 'regexp escape sequence' not in line] == []
    return result.stdout.splitlines()


def nova_compute_conf(*paths):
    """The options nova-compute reads from ``paths``, and stealth's."""
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.StrOpt('compute_driver')])
    conf.register_opts([cfg.IntOpt('live_migration_bandwidth'),
                        cfg.BoolOpt('live_migration_tunnelled')],
                       group='libvirt')
    stealth_conf.register_opts(conf)
    conf([arg for path in paths for arg in ('--config-file', str(path))],
         default_config_files=[])
    return conf


@pytest.mark.parametrize('script', SCRIPTS)
def test_shellcheck_clean(script):
    result = subprocess.run(['shellcheck', '-x', script], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_install_is_a_wheel_not_a_develop_install(tmp_path):
    assert run_devstack(tmp_path, 'stack install') == [
        'pip_install /opt/stack/nova_stealth']


def test_nova_compute_runs_the_driver_with_its_options(tmp_path):
    # post-config, then start_nova_compute's copy of nova.conf over
    # nova-cpu.conf: what nova-compute reads at the end.
    calls = run_devstack(tmp_path, 'post-config', 'start-compute')
    conf = nova_compute_conf(tmp_path / 'etc' / 'nova-cpu.conf')
    stealth_conf.validate(conf)
    assert conf.compute_driver == 'stealth.StealthLibvirtDriver'
    assert conf.libvirt.live_migration_bandwidth == 0
    assert conf.libvirt.live_migration_tunnelled is False
    group = conf.stealth
    assert group.state_dir == str(tmp_path / 'data' / 'nova_stealth')
    # devstack's default $HOST_IP/24 is the network of the compute nodes.
    assert group.chaff_peer_networks == ['198.18.0.0/24']
    assert group.chaff_ports == range(61500, 61504)
    assert group.chaff_tls_x509_dir == '/etc/pki/qemu'
    # The operator's local.conf wins over the plugin, in both files.
    assert group.require_stealth is True
    assert group.rate_policy == 'constant'
    filters = tmp_path / 'etc' / 'rootwrap.d' / 'nova-stealth.filters'
    assert any(c.startswith('sudo install -m 644 ') and
               c.endswith(' %s' % filters) for c in calls)


def test_chaff_ports_come_from_the_option_unless_set(tmp_path):
    # One source of the default: the option's, not a copy in devstack.
    (tmp_path / 'default').mkdir()
    (tmp_path / 'set').mkdir()
    run_devstack(tmp_path / 'default', 'post-config', 'start-compute')
    written = (tmp_path / 'default' / 'etc' / 'nova-cpu.conf').read_text()
    assert '\nchaff_ports' not in written
    run_devstack(tmp_path / 'set', 'post-config', 'start-compute',
                 settings={'NOVA_STEALTH_CHAFF_PORTS': '61600-61603'})
    conf = nova_compute_conf(tmp_path / 'set' / 'etc' / 'nova-cpu.conf')
    assert conf.stealth.chaff_ports == range(61600, 61604)


def test_extra_starts_the_responder(tmp_path):
    # Issue 16: the responder took only flags, and [stealth]
    # chaff_peer_networks was read by nothing; it reads nova.conf now.
    assert run_devstack(tmp_path, 'stack extra') == [
        'run_process n-stealth /usr/local/bin/nova-stealth-chaff-responder '
        '--config-file %s' % (tmp_path / 'etc' / 'nova.conf')]


def test_unstack_sweeps_after_nova_compute_stops(tmp_path):
    calls = run_devstack(tmp_path, 'post-config', 'start-compute', 'unstack')
    cleanup = [c for c in calls if 'nova-stealth-cleanup' in c]
    assert len(cleanup) == 1
    # unstack.sh runs the plugins' unstack before stop_nova: the plugin
    # stops nova-compute itself before sweeping.
    assert calls.index('stop_process n-cpu') < calls.index(cleanup[0])
    assert calls.index('stop_process n-stealth') < calls.index(cleanup[0])
    # The sweep reads the configuration that holds the plugin's state_dir.
    words = cleanup[0].split()
    assert words[:2] == ['sudo', '/usr/local/bin/nova-stealth-cleanup']
    paths = [words[i + 1] for i, word in enumerate(words)
             if word == '--config-file']
    group = stealth_conf.load_group(paths)
    assert group.state_dir == str(tmp_path / 'data' / 'nova_stealth')


def test_clean_removes_the_state_and_the_filter(tmp_path):
    assert run_devstack(tmp_path, 'clean') == [
        'sudo rm -rf %s' % (tmp_path / 'data' / 'nova_stealth'),
        'sudo rm -f %s' % (tmp_path / 'etc' / 'rootwrap.d' /
                           'nova-stealth.filters')]
