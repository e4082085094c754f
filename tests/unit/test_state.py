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

import json
import os
import subprocess
import sys

import pytest

from nova_stealth.backends import recording
from nova_stealth.shaping import state
from nova_stealth.shaping import tc_lib
from tests.unit import interleaving


RECORD = {'ifname': 'eth0', 'ifindex': 2, 'mtu': 1500, 'prior': None,
          'sessions': {'a': {
              'session_id': 'a', 'ifname': 'eth0', 'ifindex': 2,
              'mtu': 1500, 'slot': 0, 'classid': 0x5EA10100, 'prio': 100,
              'protocol': 0x800, 'peer': '198.18.1.2', 'port': 61000,
              'owner': {'pid': 1, 'start': '1'}}}}


def test_save_load_delete(tmp_path):
    state_dir = str(tmp_path)
    assert state.load(state_dir, 'eth0') is None
    state.save(state_dir, 'eth0', RECORD)
    assert state.load(state_dir, 'eth0') == RECORD
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


def test_a_device_lock_keeps_another_process_out(tmp_path):
    def hold(pause):
        with state.device_lock(str(tmp_path), 'eth0'):
            pause()
        return 'held'

    def take():
        with state.device_lock(str(tmp_path), 'eth0'):
            return 'taken'

    assert interleaving.contend(hold, take) == ('held', 'taken')


def test_device_locks_are_apart_and_nest(tmp_path):
    # While another process holds eth0, this one takes eth1 and, inside
    # it, eth2: one lock per device, and holding one does not stop the
    # same process taking another (as sweep and install do).
    def hold(pause):
        with state.device_lock(str(tmp_path), 'eth0'):
            pause()

    def nest():
        with state.device_lock(str(tmp_path), 'eth1'):
            with state.device_lock(str(tmp_path), 'eth2'):
                return 'nested'

    pause = interleaving.Pause()
    holder = interleaving.Child(hold, pause)
    try:
        assert pause.wait_reached()
        # In a child too, so that a lock shared by all devices fails the
        # test after a while instead of hanging it.
        assert interleaving.Child(nest).result() == 'nested'
    finally:
        pause.release()
        holder.end()
    assert os.path.isdir(tmp_path / 'locks')


class PausingKernel(recording.RecordingBackend):
    """The recorded kernel; the first dump stops at ``pause``."""

    def __init__(self, pause=None):
        super().__init__(host='unit-state')
        self.pause = pause

    def dump_tc(self, ifindex):
        if self.pause:
            pause, self.pause = self.pause, None
            pause()
        return super().dump_tc(ifindex)


@pytest.fixture
def kernel():
    yield PausingKernel()
    recording.RecordingBackend.forget_hosts()


def test_two_processes_shape_one_device_in_turn(tmp_path, kernel):
    # The holder stops after reading the device's record, inside its
    # install: a second install of another process must wait, then see
    # the holder's session and take another class. Each child forks the
    # kernel with 'first' installed in it, as a host's kernel holds it.
    tc_lib.Shaper(str(tmp_path), kernel=kernel).install(
        'first', '198.18.1.2', 61000, 4.0)

    def install(session_id, shaper_kernel):
        shaper = tc_lib.Shaper(str(tmp_path), kernel=shaper_kernel)
        return shaper.install(session_id, '198.18.1.2', 61001, 4.0)['slot']

    slots = interleaving.contend(
        lambda pause: install('a', PausingKernel(pause)),
        lambda: install('b', PausingKernel()))
    assert slots == (1, 2)
    record = state.load(str(tmp_path), recording.DEFAULT_DEVICE['name'])
    assert {sid: s['slot'] for sid, s in record['sessions'].items()} == {
        'first': 0, 'a': 1, 'b': 2}


def wrong_session():
    record = json.loads(json.dumps(RECORD))
    del record['sessions']['a']['classid']
    return json.dumps(record)


@pytest.mark.parametrize('text, reason', [
    ('', 'not JSON'),
    (json.dumps(RECORD)[:57], 'not JSON'),
    ('[]', 'a list, not an object'),
    ('{"sessions": {}}', "'ifname' is not a str"),
    (wrong_session(), "session a: 'classid' is not a int"),
    (json.dumps(dict(RECORD, prior={'qdiscs': ['zz']})), "'prior'"),
])
def test_a_bad_record_is_moved_aside_and_reads_as_none(tmp_path, caplog,
                                                       text, reason):
    path = state.record_path(str(tmp_path), 'eth0')
    os.makedirs(os.path.dirname(path))
    with open(path, 'w') as record_file:
        record_file.write(text)
    assert state.load(str(tmp_path), 'eth0') is None
    aside = [name for name in os.listdir(os.path.dirname(path))
             if name.startswith('eth0.json.corrupt-')]
    assert len(aside) == 1
    with open(os.path.join(os.path.dirname(path), aside[0])) as moved:
        assert moved.read() == text
    assert not os.path.exists(path)
    errors = [r.getMessage() for r in caplog.records
              if r.levelname == 'ERROR']
    assert len(errors) == 1 and reason in errors[0] and path in errors[0]
