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
"""A kernel kept in memory, for where privsep cannot run.

Nova's functional test harness runs two nova-compute services in one
process and forbids privsep, so it cannot touch the kernel. This backend
keeps, per device, the very netlink messages the ``pyroute2`` backend
sends to the kernel, answers dumps with them, runs the real rate
modulator against them, and records chaff senders instead of opening
connections. What the shaper installs here is what it installs for real.
"""

import collections
import errno
import itertools
import threading
import time

from nova_stealth.backends import base
from nova_stealth import policy as rate_policies
from nova_stealth import rtnl
from nova_stealth.shaping import modulator as modulator_lib
from nova_stealth.shaping import tree

#: The device every peer routes to unless told otherwise.
DEFAULT_DEVICE = {'name': 'stealth0', 'index': 2, 'mtu': 1500}
#: The handle u32 gives the first filter of a priority (node 800 of the
#: priority's hash table; the fake numbers each priority's apart).
U32_FIRST_NODE = 0x80000800
_HOSTS = {}
_HOSTS_LOCK = threading.Lock()


def _refuse(code, what):
    raise rtnl.NetlinkError(code, '%s: %s' % (what, errno.errorcode[code]))


class RecordingBackend(base.KernelBackend):
    """One host's traffic control and chaff, in memory.

    Every backend made for the same host shares one memory, as a host's
    kernel outlives the nova-compute that changed it: a restarted service
    finds what the one before it left.

    :param host: the host's name
    :param devices: ``{name: {'index': n, 'mtu': m}}`` for a host seen the
        first time; one device by default, which every address routes to
    """

    def __init__(self, host=None, devices=None):
        host = host or 'localhost'
        if devices is None:
            devices = {DEFAULT_DEVICE['name']: {
                'index': DEFAULT_DEVICE['index'],
                'mtu': DEFAULT_DEVICE['mtu']}}
        with _HOSTS_LOCK:
            shared = _HOSTS.setdefault(host, {
                'devices': dict(devices), 'lock': threading.RLock(),
                'trees': collections.defaultdict(lambda: {
                    'qdiscs': {}, 'classes': {}, 'filters': {}}),
                'modulators': {}, 'chaff': []})
        self.host = host
        self.devices = shared['devices']
        self.lock = shared['lock']
        self.trees = shared['trees']
        self.modulators = shared['modulators']
        self.chaff = shared['chaff']

    @staticmethod
    def forget_hosts():
        """Drop every host's memory (between tests); stops modulators."""
        with _HOSTS_LOCK:
            hosts = list(_HOSTS.values())
            _HOSTS.clear()
        for shared in hosts:
            for modulator in list(shared['modulators'].values()):
                modulator.stop()
            for chaff in shared['chaff']:
                chaff.stop()

    # Traffic control -----------------------------------------------------

    def kernel_id(self):
        return 'recorded-%s' % self.host

    def link_info(self, ifname):
        if ifname not in self.devices:
            raise LookupError('no network device %r' % ifname)
        return dict(self.devices[ifname])

    def route_device(self, address):
        return next(iter(self.devices))

    def dump_tc(self, ifindex):
        with self.lock:
            found = self.trees[ifindex]
            return {part: list(found[part].values())
                    for part in ('qdiscs', 'classes', 'filters')}

    def replay_tc(self, ifindex, snapshot):
        with self.lock:
            found = self.trees[ifindex]
            for message in snapshot['qdiscs']:
                found['qdiscs'][rtnl.message_handles(message)[1]] = message
            for message in snapshot['classes']:
                found['classes'][rtnl.message_handles(message)[1]] = message
            for message in snapshot['filters']:
                self._keep_filter(found, message)

    def replace_root_htb(self, ifindex, handle, default_minor):
        with self.lock:
            found = self.trees[ifindex]
            for part in found.values():
                part.clear()
            found['qdiscs'][handle] = rtnl.netlink_message(
                rtnl.RTM_NEWQDISC,
                rtnl.tcmsg(ifindex, handle, rtnl.TC_H_ROOT) +
                rtnl.htb_qdisc_options(default_minor))

    def delete_root(self, ifindex, handle):
        with self.lock:
            found = self.trees[ifindex]
            if handle not in found['qdiscs']:
                return False
            for part in found.values():
                part.clear()
            return True

    def add_htb_class(self, ifindex, handle, parent, shape):
        with self.lock:
            found = self.trees[ifindex]
            if not found['qdiscs']:
                _refuse(errno.EINVAL, 'no qdisc on device %d' % ifindex)
            if handle in found['classes']:
                _refuse(errno.EEXIST, 'class %s' % tree.handle_text(handle))
            found['classes'][handle] = self._class_message(
                ifindex, handle, parent, shape)

    def delete_class(self, ifindex, handle):
        with self.lock:
            found = self.trees[ifindex]
            if handle not in found['classes']:
                return False
            if any(self._filter_classid(m) == handle
                   for m in found['filters'].values()):
                _refuse(errno.EBUSY, 'class %s' % tree.handle_text(handle))
            del found['classes'][handle]
            return True

    def add_u32_filter(self, ifindex, parent, prio, protocol, keys, classid):
        with self.lock:
            found = self.trees[ifindex]
            body = (rtnl.filter_tcmsg(ifindex, parent, prio, protocol) +
                    rtnl.u32_options([tuple(k) for k in keys], classid))
            if classid not in found['classes']:
                _refuse(errno.EINVAL, 'class %s' % tree.handle_text(classid))
            self._keep_filter(found, rtnl.netlink_message(
                rtnl.RTM_NEWTFILTER, body))

    def delete_filters(self, ifindex, parent, prio, protocol):
        with self.lock:
            info = rtnl.TCMSG.unpack_from(
                rtnl.filter_tcmsg(ifindex, parent, prio, protocol))['info']
            filters = self.trees[ifindex]['filters']
            gone = [key for key in filters if key[0] == info]
            for key in gone:
                del filters[key]
            return bool(gone)

    # Modulators ----------------------------------------------------------

    def start_modulator(self, ifindex, handle, parent, mtu, policy_name,
                        policy_kwargs, seed, tick_s, ramp_s=0.0, *,
                        modulator_id):
        policy = rate_policies.policy_class(policy_name)(seed=seed,
                                                         **policy_kwargs)

        def apply_rate(rate):
            with self.lock:
                found = self.trees[ifindex]['classes']
                if handle not in found:
                    raise rtnl.NetlinkError(errno.ENOENT, 'class is gone')
                found[handle] = self._class_message(
                    ifindex, handle, parent, tree.htb_shape(rate, mtu))
            return 0

        modulator = modulator_lib.Modulator(policy, apply_rate, tick_s,
                                            ramp_s, policy_name=policy_name)
        with self.lock:
            if modulator_id in self.modulators and (
                    self.modulators[modulator_id].running):
                raise ValueError('modulator %s is already running' %
                                 modulator_id)
            self.modulators[modulator_id] = modulator
        modulator.start()
        return modulator_id

    def stop_modulator(self, modulator_id):
        with self.lock:
            modulator = self.modulators.pop(modulator_id, None)
        if modulator is None:
            return None
        modulator.stop()
        return modulator.report()

    def set_modulator_floor(self, modulator_id, rate, ramp_s):
        modulator = self.modulators.get(modulator_id)
        return None if modulator is None else modulator.set_floor(rate,
                                                                  ramp_s)

    def modulator_rates(self, modulator_id):
        modulator = self.modulators.get(modulator_id)
        return None if modulator is None else modulator.rates_now()

    def modulator_report(self, modulator_id):
        modulator = self.modulators.get(modulator_id)
        return None if modulator is None else modulator.report()

    def modulator_trace(self, modulator_id):
        modulator = self.modulators.get(modulator_id)
        return None if modulator is None else modulator.trace()

    # Chaff ---------------------------------------------------------------

    def chaff_sender(self, peers, schedule, **kwargs):
        sender = RecordedChaff(peers, schedule, **kwargs)
        with self.lock:
            self.chaff.append(sender)
        return sender

    # What tests look at --------------------------------------------------

    def installed(self):
        """``{ifindex: tree}`` of every device with a tree (copies)."""
        with self.lock:
            return {index: {part: dict(objects)
                            for part, objects in found.items()}
                    for index, found in self.trees.items()
                    if found['qdiscs']}

    def running_chaff(self):
        """The chaff senders started and not yet stopped."""
        with self.lock:
            return [c for c in self.chaff if c.running]

    @staticmethod
    def _keep_filter(found, message):
        # As u32 does: the filters of one priority and protocol are nodes
        # of one hash table, 800::800, 800::801 and so on, all deleted
        # together; the kernel refuses only a handle given twice, which
        # nova_stealth never gives. Kept under (tcm_info, node handle), as
        # the messages that were sent.
        header = rtnl.TCMSG.unpack_from(message, rtnl.NLMSGHDR.size)
        info, handle = header['info'], header['handle']
        if not handle:
            taken = {node for key, node in found['filters'] if key == info}
            handle = next(node for node in itertools.count(U32_FIRST_NODE)
                          if node not in taken)
        found['filters'][(info, handle)] = message

    @staticmethod
    def _class_message(ifindex, handle, parent, shape):
        return rtnl.netlink_message(
            rtnl.RTM_NEWTCLASS, rtnl.tcmsg(ifindex, handle, parent) +
            rtnl.htb_class_options(**shape))

    @staticmethod
    def _filter_classid(message):
        options = rtnl.parse_attrs(
            message, rtnl.NLMSGHDR.size + rtnl.TCMSG.size)[rtnl.TCA_OPTIONS]
        nested = rtnl.parse_attrs(options)
        return rtnl.U32.unpack(nested[rtnl.TCA_U32_CLASSID])[0]


class RecordedChaff(object):
    """A chaff sender that follows its schedule but opens no connection.

    Takes the arguments of :class:`nova_stealth.chaff.sender.ChaffSender`.
    """

    def __init__(self, peers, schedule, max_rate, budget,
                 migration_rate=lambda: 0.0, clock=time.monotonic, **_):
        self.peers = [(address, list(ports)) for address, ports in peers]
        self.schedule = schedule
        self.max_rate = max_rate
        self.budget = budget
        self.migration_rate = migration_rate
        self.clock = clock
        self.sent = 0
        self.started = False
        self._stopped = threading.Event()

    def start(self):
        """Start following the schedule."""
        self.schedule.prepare(self.clock())
        self.started = True

    def handover_rate(self):
        """As :meth:`ChaffSender.handover_rate`."""
        return min(self.max_rate, self.schedule.handover_rate(self.clock()))

    def migration_started(self):
        """Tell the schedule the migration's data flows."""
        self.schedule.migration_started(self.clock())

    def migration_ended(self):
        """Tell the schedule the migration's data stopped."""
        self.schedule.migration_ended(self.clock())

    def stop(self, timeout=None):
        """Stop; idempotent."""
        self._stopped.set()

    def wait(self, timeout=None):
        """Wait until the schedule's ramp-down is over or :meth:`stop`."""
        deadline = None if timeout is None else self.clock() + timeout
        while not self._stopped.is_set() and not self.schedule.done(
                self.clock()):
            if deadline is not None and self.clock() >= deadline:
                return False
            self._stopped.wait(0.02)
        return True

    @property
    def running(self):
        """True from :meth:`start` until stopped or done."""
        return (self.started and not self._stopped.is_set() and
                not self.schedule.done(self.clock()))
