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
"""The privsep daemon's own safety checks.

The entrypoints are thin and trust their caller for policy, but the daemon
holds CAP_NET_ADMIN for the whole host: whatever reaches it must stay
within "shape nova_stealth's own tree". These checks run inside the daemon,
before the kernel is touched, and raise :class:`Refused` (a ValueError)
naming what is wrong. Validation of what an operator configured happens
earlier, outside the daemon; these bounds are wider than any valid option.
"""

import math
import numbers

from nova_stealth.shaping import tree
from nova_stealth import units

#: Rates the kernel gets, bytes/s: 1 B/s up to 2**40 (8.8 Tbit/s).
MAX_RATE = tree.MAX_RATE
MAX_RATE_MIB = MAX_RATE / units.MIB
#: A tick of 1 ms to 10 s; below it a modulator would only burn the CPU.
MIN_TICK_S = 0.001
MAX_TICK_S = 10.0
MAX_RAMP_S = 3600.0
#: Modulators running at once in one daemon: each is a thread ticking at
#: up to 1 kHz, and Nova runs a handful of migrations per host at most.
MAX_MODULATORS = 32
#: u32 keys in one filter; ours have at most six.
MAX_U32_KEYS = 16
#: Messages in a saved tree that may be replayed, and bytes in each.
MAX_REPLAY_MESSAGES = 4096
MAX_MESSAGE_BYTES = 1 << 16
POLICY_RATES = ('min_rate', 'max_rate', 'start_rate')
_FIXED_MINORS = (tree.PARENT_MINOR, tree.DEFAULT_MINOR, tree.CHAFF_MINOR)
_OUR_PRIOS = frozenset(tree.CHAFF_PRIO.values()) | frozenset(
    range(tree.FIRST_SESSION_PRIO, tree.FIRST_SESSION_PRIO +
          tree.MAX_SESSIONS))


class Refused(ValueError):
    """The daemon refuses a request outside nova_stealth's own tree."""


def integer(name, value, low, high):
    """Check that ``value`` is an integer within [low, high]."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise Refused('%s must be an integer, not %r' % (name, value))
    if not low <= value <= high:
        raise Refused('%s %d is out of range [%d, %d]' % (name, value, low,
                                                          high))
    return int(value)


def number(name, value, low, high):
    """Check that ``value`` is a finite number within [low, high]."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or (
            not math.isfinite(value)):
        raise Refused('%s must be a finite number, not %r' % (name, value))
    if not low <= value <= high:
        raise Refused('%s %g is out of range [%g, %g]' % (name, value, low,
                                                          high))
    return float(value)


def ifindex(value):
    """Check a device index."""
    return integer('ifindex', value, 1, 0x7FFFFFFF)


def root_handle(handle):
    """Check that ``handle`` is our root qdisc's."""
    if handle != tree.ROOT_HANDLE:
        raise Refused('root handle %r is not nova_stealth\'s %s' % (
            handle, tree.handle_text(tree.ROOT_HANDLE)))
    return handle


def class_handle(handle, sessions_only=False):
    """Check that ``handle`` is one of our classes (a migration's only)."""
    integer('class handle', handle, 0, 0xFFFFFFFF)
    minor = handle & 0xFFFF
    ours = handle >> 16 == tree.ROOT_MAJOR and (
        tree.FIRST_SESSION_MINOR <= minor <
        tree.FIRST_SESSION_MINOR + tree.MAX_SESSIONS or
        (minor in _FIXED_MINORS and not sessions_only))
    if not ours:
        raise Refused('class %s is not %s' % (
            tree.handle_text(handle), 'a migration class of nova_stealth'
            if sessions_only else 'in nova_stealth\'s tree'))
    return handle


def class_parent(parent):
    """Check the parent of one of our classes: our root or parent class."""
    if parent not in (tree.ROOT_HANDLE, tree.handle(tree.PARENT_MINOR)):
        raise Refused('parent %r is not in nova_stealth\'s tree' % (parent,))
    return parent


def htb_shape(shape):
    """Check an HTB class shape as :func:`tree.htb_shape` builds it."""
    if not isinstance(shape, dict) or set(shape) != {
            'rate', 'ceil', 'burst', 'cburst', 'quantum', 'prio'}:
        raise Refused('an HTB shape has rate, ceil, burst, cburst, quantum '
                      'and prio, not %r' % (shape,))
    integer('rate', shape['rate'], 1, MAX_RATE)
    integer('ceil', shape['ceil'], shape['rate'], MAX_RATE)
    for key in ('burst', 'cburst'):
        integer(key, shape[key], 1, MAX_RATE)
    integer('quantum', shape['quantum'], 1, 1 << 24)
    integer('prio', shape['prio'], 0, 7)
    return shape


def filter_spec(parent, prio, protocol):
    """Check where a filter goes: our root, our priorities, IP or IPv6."""
    root_handle(parent)
    if prio not in _OUR_PRIOS:
        raise Refused('filter priority %r is not one nova_stealth uses' % (
            prio,))
    if protocol not in (tree.ETH_P_IP, tree.ETH_P_IPV6):
        raise Refused('filter protocol %r is not IPv4 or IPv6' % (protocol,))


def u32_keys(keys):
    """Check u32 keys: (value, mask, offset) words at aligned offsets."""
    if not isinstance(keys, (list, tuple)) or not 1 <= len(
            keys) <= MAX_U32_KEYS:
        raise Refused('a filter needs 1 to %d keys' % MAX_U32_KEYS)
    checked = []
    for key in keys:
        if not isinstance(key, (list, tuple)) or len(key) != 3:
            raise Refused('a u32 key is (value, mask, offset), not %r' % (
                key,))
        value, mask, offset = key
        integer('key value', value, 0, 0xFFFFFFFF)
        integer('key mask', mask, 0, 0xFFFFFFFF)
        integer('key offset', offset, 0, 256)
        if offset % 4:
            raise Refused('key offset %d is not a word\'s' % offset)
        checked.append((value, mask, offset))
    return checked


def modulator(tick_s, ramp_s, mtu, policy_kwargs, running):
    """Check a modulator's tick, ramp, MTU and rates (MiB/s)."""
    number('tick_s', tick_s, MIN_TICK_S, MAX_TICK_S)
    number('ramp_s', ramp_s, 0.0, MAX_RAMP_S)
    integer('mtu', mtu, 68, 65535)
    if not isinstance(policy_kwargs, dict):
        raise Refused('policy arguments must be a mapping')
    for name in POLICY_RATES:
        if name in policy_kwargs:
            number(name, policy_kwargs[name], 1.0 / units.MIB, MAX_RATE_MIB)
    if running >= MAX_MODULATORS:
        raise Refused('%d modulators are running already, the most one '
                      'daemon runs' % running)
