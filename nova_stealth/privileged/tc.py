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
go through :mod:`nova_stealth.privileged.rtnl`, which is cheap enough for
the modulator's 100 Hz hot path and can replay a dumped tree byte for byte.
"""

import errno
import re
import threading

import pyroute2

from nova_stealth import privileged
from nova_stealth.privileged import rtnl
from nova_stealth.shaping import modulator as modulator_lib

TC_H_INGRESS = 0xFFFFFFF1
_LOCK = threading.Lock()
_SOCKET = []
_MODULATORS = {}
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


@privileged.net_admin.entrypoint
def dump_tc(ifindex):
    """Return the raw egress qdiscs, classes and filters of a device.

    Ingress and clsact qdiscs are left out: nova_stealth never touches them.
    """
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


@privileged.net_admin.entrypoint
def replay_tc(ifindex, snapshot):
    """Recreate a tree dumped by :func:`dump_tc` on an empty root.

    Qdiscs the kernel made itself (handle 0) come back with their parent
    and are skipped; objects that already exist, such as the hash table u32
    makes with its first key, are left as they are.
    """
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
    _request(rtnl.RTM_NEWQDISC, rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE,
             rtnl.tcmsg(ifindex, handle, rtnl.TC_H_ROOT) +
             rtnl.htb_qdisc_options(default_minor))


@privileged.net_admin.entrypoint
def delete_root(ifindex, handle):
    """Delete the root qdisc ``handle``; False if it was not there."""
    return _delete(rtnl.RTM_DELQDISC,
                   rtnl.tcmsg(ifindex, handle, rtnl.TC_H_ROOT))


@privileged.net_admin.entrypoint
def add_htb_class(ifindex, handle, parent, shape):
    """Add an HTB class; ``shape`` as built by the tree model."""
    _request(rtnl.RTM_NEWTCLASS, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL,
             rtnl.tcmsg(ifindex, handle, parent) +
             rtnl.htb_class_options(**shape))


@privileged.net_admin.entrypoint
def delete_class(ifindex, handle):
    """Delete a class; False if it was not there."""
    return _delete(rtnl.RTM_DELTCLASS, rtnl.tcmsg(ifindex, handle, 0))


@privileged.net_admin.entrypoint
def add_u32_filter(ifindex, parent, prio, protocol, keys, classid):
    """Add a u32 filter sending packets that match every key to a class."""
    _request(rtnl.RTM_NEWTFILTER, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL,
             rtnl.filter_tcmsg(ifindex, parent, prio, protocol) +
             rtnl.u32_options([tuple(key) for key in keys], classid))


@privileged.net_admin.entrypoint
def delete_filters(ifindex, parent, prio, protocol):
    """Delete every filter at one priority; False if there was none."""
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
        raise ValueError('modulator id %r is not a migration id' %
                         (modulator_id,))
    with _LOCK:
        if modulator_id in _MODULATORS and (
                _MODULATORS[modulator_id].running):
            raise ValueError('modulator %s is already running' %
                             modulator_id)
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
    modulator = _MODULATORS.pop(modulator_id, None)
    if modulator is None:
        return None
    modulator.stop()
    return modulator.report()


@privileged.net_admin.entrypoint
def modulator_rates(modulator_id):
    """A modulator's last rate set and its class's recent throughput.

    :returns: ``{'set': MiB/s, 'sent': bytes/s or None}``, None if there
        is no such modulator
    """
    modulator = _MODULATORS.get(modulator_id)
    if modulator is None:
        return None
    return {'set': modulator.last_rate, 'sent': modulator.sent_rate()}


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
