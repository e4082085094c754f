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
import os

from oslo_concurrency import lockutils

from nova_stealth import procfs
from nova_stealth import statefile

_SESSION_KEYS = {'session_id': str, 'ifname': str, 'ifindex': int,
                 'mtu': int, 'slot': int, 'classid': int, 'prio': int,
                 'protocol': int, 'peer': str, 'port': int, 'owner': dict}
_OWNER_KEYS = {'pid': int, 'start': str}
_PRIOR_PARTS = ('qdiscs', 'classes', 'filters')


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


def _wrong_keys(data, keys):
    if not isinstance(data, dict):
        return 'a %s, not an object' % type(data).__name__
    for key, kind in keys.items():
        if not isinstance(data.get(key), kind) or (
                kind is int and isinstance(data[key], bool)):
            return '%r is not a %s' % (key, kind.__name__)
    return None


def _wrong_prior(prior):
    if prior is None:
        return None
    if not isinstance(prior, dict) or set(prior) != set(_PRIOR_PARTS):
        return "'prior' is not a saved tree"
    for messages in prior.values():
        if not isinstance(messages, list) or not all(
                isinstance(m, str) and _is_hex(m) for m in messages):
            return "'prior' holds something else than messages"
    return None


def _is_hex(text):
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def check_record(record):
    """Return why ``record`` is not a device record, or None if it is."""
    wrong = _wrong_keys(record, {'ifname': str, 'ifindex': int, 'mtu': int,
                                 'sessions': dict})
    if wrong:
        return wrong
    wrong = _wrong_prior(record.get('prior'))
    if wrong:
        return wrong
    for session_id, session in record['sessions'].items():
        wrong = _wrong_keys(session, _SESSION_KEYS) or _wrong_keys(
            session['owner'], _OWNER_KEYS)
        if wrong:
            return 'session %s: %s' % (session_id, wrong)
    return None


def load(state_dir, ifname):
    """Return a device's record, or None.

    A record that is not JSON or not in the shape :func:`save` writes is
    moved aside (``<name>.json.corrupt-<UTC time>``), logged as an error,
    and reads as None.
    """
    return statefile.read_json(record_path(state_dir, ifname), check_record)


def save(state_dir, ifname, record):
    """Write a device's record atomically."""
    statefile.write_json(record_path(state_dir, ifname), record)


def delete(state_dir, ifname):
    """Remove a device's record, if any."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(state_dir, ifname))


def process_identity(pid=None):
    """Return {pid, start} for a process (default: this one).

    None if it is gone or has ended (a zombie owns nothing any more).
    """
    pid = os.getpid() if pid is None else pid
    start = procfs.start_time(pid)
    if start is None:
        return None
    # A string, as records on disk have always held it.
    return {'pid': pid, 'start': str(start)}


def is_alive(owner):
    """True when the process ``owner`` describes still runs."""
    return process_identity(owner['pid']) == owner
