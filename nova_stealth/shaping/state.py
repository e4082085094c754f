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
"""What is installed where, on disk, so that a restart can remove it.

One JSON record per device under ``<state_dir>/shaping/``, written whole
and renamed into place, and changed only under an inter-process lock per
device. Each migration in it names its owner process by pid and start time,
so a sweep can tell an orphan from a migration still running.
"""

import contextlib
import json
import os

from oslo_concurrency import lockutils


def _shaping_dir(state_dir):
    return os.path.join(state_dir, 'shaping')


@contextlib.contextmanager
def device_lock(state_dir, ifname):
    """Hold the lock of one device's record, across processes."""
    lock_path = os.path.join(state_dir, 'locks')
    os.makedirs(lock_path, exist_ok=True)
    with lockutils.lock('shaping-' + ifname, external=True,
                        lock_path=lock_path):
        yield


def record_path(state_dir, ifname):
    """Return the path of a device's record."""
    return os.path.join(_shaping_dir(state_dir), ifname + '.json')


def devices(state_dir):
    """Return the names of the devices that have a record."""
    try:
        names = os.listdir(_shaping_dir(state_dir))
    except FileNotFoundError:
        return []
    return sorted(name[:-5] for name in names if name.endswith('.json'))


def load(state_dir, ifname):
    """Return a device's record, or None."""
    try:
        with open(record_path(state_dir, ifname)) as record_file:
            return json.load(record_file)
    except FileNotFoundError:
        return None


def save(state_dir, ifname, record):
    """Write a device's record atomically."""
    path = record_path(state_dir, ifname)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = path + '.tmp'
    with open(temporary, 'w') as record_file:
        json.dump(record, record_file, indent=1, sort_keys=True)
        record_file.flush()
        os.fsync(record_file.fileno())
    os.replace(temporary, path)


def delete(state_dir, ifname):
    """Remove a device's record, if any."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(state_dir, ifname))


def process_identity(pid=None):
    """Return {pid, start} for a process (default: this one), or None."""
    pid = os.getpid() if pid is None else pid
    try:
        with open('/proc/%d/stat' % pid) as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields follow the
    # last ')'. Field 22, the start time in clock ticks, is index 19 there.
    return {'pid': pid, 'start': stat.rpartition(')')[2].split()[19]}


def is_alive(owner):
    """True when the process ``owner`` describes still runs."""
    return process_identity(owner['pid']) == owner
