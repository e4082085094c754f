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
"""/proc/<pid>/stat, read from real processes."""

import os
import shutil
import subprocess
import time

from nova_stealth import procfs
from nova_stealth.shaping import state


def boot_ticks_now():
    """Clock ticks since boot, from /proc/uptime."""
    with open('/proc/uptime') as uptime:
        return float(uptime.read().split()[0]) * os.sysconf('SC_CLK_TCK')


def comm_of(pid):
    with open('/proc/%d/comm' % pid) as comm:
        return comm.read().strip()


def test_a_command_name_with_parentheses_and_spaces(tmp_path):
    # The fields after the name are found from its last ')'; splitting the
    # line on spaces would read another field here.
    program = tmp_path / 'a) b (c'
    shutil.copy('/bin/sleep', program)
    before = boot_ticks_now()
    child = subprocess.Popen([str(program), '30'])
    try:
        deadline = time.monotonic() + 10
        # Until the child has exec'd, it is still a copy of this process.
        while comm_of(child.pid) != 'a) b (c':
            assert time.monotonic() < deadline, comm_of(child.pid)
            time.sleep(0.01)
        started = procfs.start_time(child.pid)
        assert before - 2 <= started <= boot_ticks_now() + 2
        assert procfs.start_time(child.pid) == started
        assert state.process_identity(child.pid) == {
            'pid': child.pid, 'start': str(started)}
    finally:
        child.kill()
        child.wait()


def test_a_zombie_and_a_gone_process_have_none():
    child = subprocess.Popen(['/bin/true'])
    deadline = time.monotonic() + 10
    # Not waited for: it stays a zombie until reaped.
    while procfs.start_time(child.pid) is not None:
        assert time.monotonic() < deadline, 'the child never ended'
        time.sleep(0.01)
    assert state.process_identity(child.pid) is None
    child.wait()
    assert procfs.start_time(child.pid) is None
