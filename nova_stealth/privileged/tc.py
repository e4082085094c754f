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
"""Privileged traffic-control entrypoints.

Each entrypoint is one kernel operation with no policy of its own: rates
arrive in bytes per second, handles as integers, and the tree they build is
decided by :mod:`nova_stealth.shaping.tree`. They act in the network
namespace of the privsep daemon. The rate modulator also runs here, next to
the netlink socket it drives, so that a tick costs no privsep round trip.

pyroute2 serves the look-ups (links and routes); the tc messages themselves
go through :mod:`nova_stealth.rtnl`, which is cheap enough for
the modulator's 100 Hz hot path and can replay a dumped tree byte for byte.
"""

import errno
import os
import re
import threading

import pyroute2

from nova_stealth import privileged
from nova_stealth.privileged import guard
from nova_stealth.privileged import modulator as modulator_lib
from nova_stealth import rtnl
from nova_stealth.shaping import tree
from nova_stealth import units

TC_H_INGRESS = 0xFFFFFFF1
ROOT_HANDLE = tree.ROOT_HANDLE
_LOCK = threading.Lock()
_SOCKET = []
_MODULATORS = {}
_MODULATORS_LOCK = threading.Lock()
#: A modulator is named by its migration's id (Nova's migration uuid), so
#: that a name means the same migration across daemon restarts.
_MODULATOR_ID = re.compile(r'[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z')


#: Errors that mean "not there" to a delete: the object, or its device.
_ABSENT = (errno.ENOENT, errno.EINVAL, errno.ENODEV)


def _call(method, *args):
    with _LOCK:
        if not _SOCKET:
            _SOCKET.append(rtnl.RtnlSocket())
        return getattr(_SOCKET[0], method)(*args)


def _request(msg_type, flags, body):
    return _call('request', msg_type, flags, body)


def _dump(msg_type, body):
    return _call('dump', msg_type, body)


def _delete(msg_type, body):
    try:
        _request(msg_type, 0, body)
    except rtnl.NetlinkError as e:
        if e.errno in _ABSENT:
            return False
        raise
    return True


@privileged.net_admin.entrypoint
def kernel_id():
    """Name the daemon's kernel and network namespace: boot id and inode."""
    with open('/proc/sys/kernel/random/boot_id') as boot_id:
        boot = boot_id.read().strip()
    return '%s-%d' % (boot, os.stat('/proc/self/ns/net').st_ino)


@privileged.net_admin.entrypoint
def link_info(ifname):
    """Return the index and MTU of a network device."""
    with pyroute2.IPRoute() as ipr:
        links = ipr.get_links(ifname=ifname)
        if not links:
            raise LookupError('no network device %r' % ifname)
        return {'index': links[0]['index'],
                'mtu': links[0].get_attr('IFLA_MTU')}


@privileged.net_admin.entrypoint
def route_device(address):
    """Return the name of the device the kernel routes ``address`` to."""
    with pyroute2.IPRoute() as ipr:
        routes = ipr.route('get', dst=address)
        index = routes[0].get_attr('RTA_OIF')
        return ipr.get_links(index)[0].get_attr('IFLA_IFNAME')


def _root_qdisc(ifindex):
    """(kind, handle) of a device's root qdisc; ('', 0) if none shows."""
    for message in _dump(rtnl.RTM_GETQDISC, rtnl.tcmsg(0, 0, 0)):
        index, handle, parent = rtnl.message_handles(message)
        if index == ifindex and parent == rtnl.TC_H_ROOT:
            return rtnl.message_kind(message), handle
    return '', 0


def _shaped_by_us(ifindex):
    return _root_qdisc(guard.ifindex(ifindex)) == ('htb', ROOT_HANDLE)


def _require_shaped(ifindex):
    if not _shaped_by_us(ifindex):
        raise guard.Refused('device %d is not shaped by nova_stealth: its '
                            'root qdisc is not htb %s' % (
                                ifindex, tree.handle_text(ROOT_HANDLE)))


@privileged.net_admin.entrypoint
def dump_tc(ifindex):
    """Return the raw egress qdiscs, classes and filters of a device.

    Ingress and clsact qdiscs are left out: nova_stealth never touches them.
    """
    guard.ifindex(ifindex)
    qdiscs = [m for m in _dump(rtnl.RTM_GETQDISC, rtnl.tcmsg(0, 0, 0))
              if rtnl.message_handles(m)[0] == ifindex and
              rtnl.message_handles(m)[2] != TC_H_INGRESS]
    classes = [m for m in _dump(rtnl.RTM_GETTCLASS,
                                rtnl.tcmsg(ifindex, 0, 0))
               if rtnl.message_handles(m)[0] == ifindex]
    filters = []
    for owner in qdiscs + classes:
        handle = rtnl.message_handles(owner)[1]
        filters.extend(_dump(rtnl.RTM_GETTFILTER,
                             rtnl.tcmsg(ifindex, 0, handle)))
    return {'qdiscs': qdiscs, 'classes': classes, 'filters': filters}


_REPLAY_TYPES = {'qdiscs': rtnl.RTM_NEWQDISC, 'classes': rtnl.RTM_NEWTCLASS,
                 'filters': rtnl.RTM_NEWTFILTER}


def _check_snapshot(ifindex, snapshot):
    # Only what dump_tc returned for this very device may come back: tc
    # objects of the device, each under its own message type.
    if not isinstance(snapshot, dict) or set(snapshot) != set(_REPLAY_TYPES):
        raise guard.Refused('a snapshot has qdiscs, classes and filters')
    if sum(len(m) for m in snapshot.values()) > guard.MAX_REPLAY_MESSAGES:
        raise guard.Refused('a snapshot holds at most %d messages' %
                            guard.MAX_REPLAY_MESSAGES)
    for part, msg_type in _REPLAY_TYPES.items():
        for message in snapshot[part]:
            if not isinstance(message, bytes) or not (
                    rtnl.NLMSGHDR.size + rtnl.TCMSG.size <= len(message) <=
                    guard.MAX_MESSAGE_BYTES):
                raise guard.Refused('%s: not a tc message' % part)
            header = rtnl.NLMSGHDR.unpack_from(message)
            length, kind = header['length'], header['type']
            if length != len(message) or kind != msg_type:
                raise guard.Refused('%s: message of type %d and length %d '
                                    'is not a dumped one' % (part, kind,
                                                             length))
            if rtnl.message_handles(message)[0] != ifindex:
                raise guard.Refused('%s: message for device %d replayed on '
                                    'device %d' % (
                                        part, rtnl.message_handles(
                                            message)[0], ifindex))


@privileged.net_admin.entrypoint
def replay_tc(ifindex, snapshot):
    """Recreate a tree dumped by :func:`dump_tc` on an empty root.

    Qdiscs the kernel made itself (handle 0) come back with their parent
    and are skipped; objects that already exist, such as the hash table u32
    makes with its first key, are left as they are. Every message must be
    for ``ifindex``, and the device must not hold nova_stealth's tree.
    """
    guard.ifindex(ifindex)
    _check_snapshot(ifindex, snapshot)
    if _shaped_by_us(ifindex):
        raise guard.Refused('device %d still holds nova_stealth\'s tree' %
                            ifindex)
    root, children = [], []
    for message in snapshot['qdiscs']:
        _index, handle, parent = rtnl.message_handles(message)
        if handle:
            (root if parent == rtnl.TC_H_ROOT else children).append(message)
    plan = ([(rtnl.RTM_NEWQDISC, m) for m in root] +
            [(rtnl.RTM_NEWTCLASS, m) for m in snapshot['classes']] +
            [(rtnl.RTM_NEWQDISC, m) for m in children] +
            [(rtnl.RTM_NEWTFILTER, m) for m in snapshot['filters']])
    for msg_type, message in plan:
        body = rtnl.config_only(message)
        flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
        if msg_type == rtnl.RTM_NEWQDISC:
            flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
        try:
            _request(msg_type, flags, body)
        except rtnl.NetlinkError as e:
            if not rtnl.ignore_exists(e):
                raise


@privileged.net_admin.entrypoint
def replace_root_htb(ifindex, handle, default_minor):
    """Make an HTB qdisc the root of a device, replacing what was there."""
    guard.ifindex(ifindex)
    guard.root_handle(handle)
    if default_minor != tree.DEFAULT_MINOR:
        raise guard.Refused('default class %r is not nova_stealth\'s' % (
            default_minor,))
    _request(rtnl.RTM_NEWQDISC, rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE,
             rtnl.tcmsg(ifindex, handle, rtnl.TC_H_ROOT) +
             rtnl.htb_qdisc_options(default_minor))


@privileged.net_admin.entrypoint
def delete_root(ifindex, handle):
    """Delete our root qdisc; False if it was not there (or not ours)."""
    guard.root_handle(handle)
    if not _shaped_by_us(ifindex):
        return False
    return _delete(rtnl.RTM_DELQDISC,
                   rtnl.tcmsg(ifindex, handle, rtnl.TC_H_ROOT))


@privileged.net_admin.entrypoint
def add_htb_class(ifindex, handle, parent, shape):
    """Add an HTB class; ``shape`` as built by the tree model."""
    guard.class_handle(handle)
    guard.class_parent(parent)
    guard.htb_shape(shape)
    _require_shaped(ifindex)
    _request(rtnl.RTM_NEWTCLASS, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL,
             rtnl.tcmsg(ifindex, handle, parent) +
             rtnl.htb_class_options(**shape))


@privileged.net_admin.entrypoint
def delete_class(ifindex, handle):
    """Delete a class of ours; False if it was not there."""
    guard.class_handle(handle)
    if not _shaped_by_us(ifindex):
        return False
    return _delete(rtnl.RTM_DELTCLASS, rtnl.tcmsg(ifindex, handle, 0))


@privileged.net_admin.entrypoint
def add_u32_filter(ifindex, parent, prio, protocol, keys, classid):
    """Add a u32 filter sending packets that match every key to a class."""
    guard.filter_spec(parent, prio, protocol)
    keys = guard.u32_keys(keys)
    guard.class_handle(classid)
    _require_shaped(ifindex)
    _request(rtnl.RTM_NEWTFILTER, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL,
             rtnl.filter_tcmsg(ifindex, parent, prio, protocol) +
             rtnl.u32_options(keys, classid))


@privileged.net_admin.entrypoint
def delete_filters(ifindex, parent, prio, protocol):
    """Delete every filter at one of our priorities; False if none."""
    guard.filter_spec(parent, prio, protocol)
    if not _shaped_by_us(ifindex):
        return False
    return _delete(rtnl.RTM_DELTFILTER,
                   rtnl.filter_tcmsg(ifindex, parent, prio, protocol))


@privileged.net_admin.entrypoint
def start_modulator(ifindex, handle, parent, mtu, policy_name,
                    policy_kwargs, seed, tick_s, ramp_s=0.0, *,
                    modulator_id):
    """Start modulating an HTB class under the caller's ``modulator_id``.

    :param modulator_id: the migration's own id, unique across restarts of
        the daemon; a modulator of that name must not be running
    :returns: ``modulator_id``
    """
    if not isinstance(modulator_id, str) or not _MODULATOR_ID.match(
            modulator_id):
        raise guard.Refused('modulator id %r is not a migration id' %
                            (modulator_id,))
    guard.class_handle(handle, sessions_only=True)
    if parent != tree.handle(tree.PARENT_MINOR):
        raise guard.Refused('parent %r is not nova_stealth\'s parent class'
                            % (parent,))
    with _MODULATORS_LOCK:
        running = {m_id: m for m_id, m in _MODULATORS.items() if m.running}
        guard.modulator(tick_s, ramp_s, mtu, policy_kwargs, len(running))
        if modulator_id in running:
            raise guard.Refused('modulator %s is already running' %
                                modulator_id)
        for other_id, other in running.items():
            if (other.ifindex, other.handle) == (ifindex, handle):
                raise guard.Refused('class %s is already modulated by %s' %
                                    (tree.handle_text(handle), other_id))
        _require_shaped(ifindex)
        modulator = modulator_lib.ClassModulator(
            ifindex, handle, parent, mtu, policy_name, policy_kwargs, seed,
            tick_s, ramp_s)
        modulator.start()
        _MODULATORS[modulator_id] = modulator
    return modulator_id


@privileged.net_admin.entrypoint
def stop_modulator(modulator_id):
    """Stop a modulator; return its summary. The class keeps its last rate.

    The summary's size does not grow with the migration's length.
    """
    with _MODULATORS_LOCK:
        modulator = _MODULATORS.pop(modulator_id, None)
    if modulator is None:
        return None
    modulator.stop()
    return modulator.report()


@privileged.net_admin.entrypoint
def modulator_rates(modulator_id):
    """A modulator's last rate set and its class's recent throughput.

    :returns: ``{'set': MiB/s, 'sent': bytes/s or None, 'floor': MiB/s or
        None, 'floor_reached': bool}``, None if there is no such modulator
    """
    modulator = _MODULATORS.get(modulator_id)
    return None if modulator is None else modulator.rates_now()


@privileged.net_admin.entrypoint
def set_modulator_floor(modulator_id, rate, ramp_s):
    """Hold a modulator's rate at or above ``rate`` MiB/s from now on.

    :returns: the floor in force, None if there is no such modulator
    """
    guard.number('floor rate', rate, 1.0 / units.MIB, guard.MAX_RATE_MIB)
    guard.number('ramp_s', ramp_s, 0.0, guard.MAX_RAMP_S)
    modulator = _MODULATORS.get(modulator_id)
    return None if modulator is None else modulator.set_floor(
        float(rate), float(ramp_s))


@privileged.net_admin.entrypoint
def modulator_report(modulator_id):
    """Return the summary of a running modulator, None if there is none."""
    modulator = _MODULATORS.get(modulator_id)
    return None if modulator is None else modulator.report()


@privileged.net_admin.entrypoint
def modulator_trace(modulator_id):
    """Return a running modulator's last ticks (a bounded ring), or None."""
    modulator = _MODULATORS.get(modulator_id)
    return None if modulator is None else modulator.trace()
