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
"""Records of installed shaping, and telling live owners from dead ones."""

import os
import subprocess
import sys

from nova_stealth.shaping import state


def test_save_load_delete(tmp_path):
    state_dir = str(tmp_path)
    assert state.load(state_dir, 'eth0') is None
    state.save(state_dir, 'eth0', {'sessions': {'a': 1}})
    assert state.load(state_dir, 'eth0') == {'sessions': {'a': 1}}
    assert state.devices(state_dir) == ['eth0']
    assert not os.path.exists(state.record_path(state_dir, 'eth0') + '.tmp')
    state.delete(state_dir, 'eth0')
    state.delete(state_dir, 'eth0')
    assert state.devices(state_dir) == []


def test_this_process_is_alive():
    me = state.process_identity()
    assert me['pid'] == os.getpid()
    assert state.is_alive(me)


def test_a_dead_process_or_a_reused_pid_is_not_alive():
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    identity = state.process_identity(child.pid)
    child.wait()
    assert identity is not None
    assert not state.is_alive(identity)
    me = state.process_identity()
    assert not state.is_alive({'pid': me['pid'], 'start': '0'})


def test_lock_is_reentrant_across_devices(tmp_path):
    with state.device_lock(str(tmp_path), 'eth0'):
        with state.device_lock(str(tmp_path), 'eth1'):
            assert os.path.isdir(tmp_path / 'locks')
