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
"""The rootwrap filter, matched by oslo.rootwrap itself."""

import os
import sys

from oslo_rootwrap import wrapper
import pytest

from tests import paths

FILTERS_DIR = str(paths.ROOT / 'etc' / 'nova' / 'rootwrap.d')
CONTEXT = ['--privsep_context', 'nova_stealth.privileged.net_admin']


def helper(*config_files, sock='/tmp/tmpk2x9q_ab/privsep.sock'):
    """The command oslo.privsep's rootwrap channel has rootwrap run."""
    command = ['privsep-helper']
    for path in config_files:
        command += ['--config-file', path]
    return command + CONTEXT + ['--privsep_sock_path', sock]


def our_filters():
    """The filters of our file as oslo.rootwrap loads them.

    load_filters adds a filter of its own that lets privsep-helper run with
    any arguments; it is not ours to judge, so it is left out.
    """
    loaded = wrapper.load_filters([FILTERS_DIR])
    ours = [f for f in loaded if f.name.startswith('privsep-rootwrap-')]
    assert len(ours) == 2
    return ours


def match(command):
    return wrapper.match_filter(our_filters(), command,
                                exec_dirs=[os.path.dirname(sys.executable)])


@pytest.mark.parametrize('command', [
    helper('/etc/nova/nova.conf'),
    helper('/etc/nova/nova.conf', '/etc/nova/nova-compute.conf'),
    helper('/etc/nova/nova-cpu.conf'),
])
def test_nova_computes_commands_are_allowed(command):
    found = match(command)
    assert found.name.startswith('privsep-rootwrap-nova-stealth')


@pytest.mark.parametrize('command', [
    helper('/etc/./../tmp/x'),
    helper('/etc/../tmp/x'),
    helper('/etc/nova/../../tmp/x'),
    helper('/etc/nova/./nova.conf'),
    helper('/etc/nova/nova.conf', '/etc/nova/../../root/x'),
    helper('/tmp/nova.conf'),
    helper('/etc/nova/nova.conf', sock='/tmp/../etc/x/privsep.sock'),
    helper('/etc/nova/nova.conf', sock='/tmp/x/../../etc/privsep.sock'),
    helper('/etc/nova/nova.conf', sock='/etc/privsep.sock'),
    ['privsep-helper', '--config-file', '/etc/nova/nova.conf',
     '--privsep_context', 'os_brick.privileged.default',
     '--privsep_sock_path', '/tmp/tmpk2x9q_ab/privsep.sock'],
])
def test_paths_that_leave_their_directory_are_refused(command):
    with pytest.raises(wrapper.NoFilterMatched):
        match(command)
