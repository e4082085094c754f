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
"""Install, share and remove the DHTB tree: the unprivileged side.

:class:`Shaper` decides what the tree looks like (through
:mod:`nova_stealth.shaping.tree`), records it on disk before touching the
kernel, and acts through the kernel backend it is given (the privsep
entrypoints of :mod:`nova_stealth.privileged.tc` on a compute node). Every
change to a device happens under that device's inter-process lock.
"""

import os

from oslo_log import log as logging

from nova_stealth import exception
from nova_stealth import rtnl
from nova_stealth.shaping import state
from nova_stealth.shaping import tree

LOG = logging.getLogger(__name__)

#: Qdiscs with nothing for an operator to tune: one configured explicitly
#: is saved and put back, without asking. Any other qdisc an operator
#: configured (it has a handle; the kernel's own have none), anywhere in the
#: device's egress tree, an ``fq`` or ``fq_codel`` root or a child tuned
#: under ``mq`` as much as a ``tbf``, needs ``allow_replace_root_qdisc``.
#: The kernel's own qdiscs, of any kind (an ``fq_codel`` by
#: ``net.core.default_qdisc``), are replaced freely.
UNTUNED_KINDS = frozenset(['noqueue', 'pfifo_fast', 'mq'])


def _snapshot_to_record(snapshot):
    return {part: [message.hex() for message in messages]
            for part, messages in snapshot.items()}


def _snapshot_from_record(record):
    return {part: [bytes.fromhex(message) for message in messages]
            for part, messages in record.items()}


def _session_slots(snapshot):
    slots = set()
    for message in snapshot['classes']:
        handle = rtnl.message_handles(message)[1]
        minor = handle & 0xFFFF
        if handle >> 16 == tree.ROOT_MAJOR and (
                tree.FIRST_SESSION_MINOR <= minor <
                tree.FIRST_SESSION_MINOR + tree.MAX_SESSIONS):
            slots.add(minor - tree.FIRST_SESSION_MINOR)
    return slots


def _root_qdisc(snapshot):
    for message in snapshot['qdiscs']:
        _ifindex, handle, parent = rtnl.message_handles(message)
        if parent == rtnl.TC_H_ROOT:
            return rtnl.message_kind(message), handle
    return 'noqueue', 0


def is_shaped(snapshot):
    """True if a device's tree (a :meth:`dump_tc`) has our root qdisc."""
    return _root_qdisc(snapshot) == ('htb', tree.ROOT_HANDLE)


def tuned_qdisc(snapshot):
    """The first qdisc an operator tuned in a device's tree, or None.

    What the shaper may replace only with ``allow_replace_root_qdisc``
    (see :data:`UNTUNED_KINDS`), as ``(kind, handle)``: the handle in
    tc's notation, with its parent when it is not the root.
    """
    for message in snapshot['qdiscs']:
        _index, handle, parent = rtnl.message_handles(message)
        kind = rtnl.message_kind(message)
        if handle and kind not in UNTUNED_KINDS:
            return kind, tree.handle_text(handle) + (
                '' if parent == rtnl.TC_H_ROOT else
                ' (parent %s)' % tree.handle_text(parent))
    return None


class Shaper(object):
    """The DHTB trees of this host's devices.

    :param state_dir: the service's own state directory; it names the
        service that owns a session
    :param records_dir: where the device records and their locks are
        kept (default: ``state_dir``); every service on one kernel must use
        the same, so that the tree of a device has one record, shared, in
        which each session names its service: the tree goes with the last
        session of any service, and no service takes another's class
    :param link_rate_mbit: rate of the parent and default classes
    :param allow_replace_root_qdisc: replace (and later restore) a root
        qdisc an operator configured
    :param egress_device: device to shape; None follows the route to the
        peer
    :param chaff_port_blocks: (port, mask) pairs that the chaff class takes
    :param chaff_rate_mib: rate of the chaff class, in MiB/s
    :param kernel: the :class:`nova_stealth.backends.base.KernelBackend`
        to act through; the caller chooses it (see
        :func:`nova_stealth.backends.load`), so that shaping imports no
        backend
    """

    def __init__(self, state_dir, kernel, link_rate_mbit=100000,
                 allow_replace_root_qdisc=False, egress_device=None,
                 chaff_port_blocks=(), chaff_rate_mib=2.0, records_dir=None):
        self.state_dir = state_dir
        self.records_dir = records_dir or state_dir
        self.service = os.path.abspath(state_dir)
        self.link_rate = tree.mbit_to_bytes(link_rate_mbit)
        self.allow_replace_root_qdisc = allow_replace_root_qdisc
        self.egress_device = egress_device
        self.chaff_port_blocks = [tuple(b) for b in chaff_port_blocks]
        self.chaff_rate = tree.mib_to_bytes(chaff_rate_mib)
        self.kernel = kernel

    @classmethod
    def from_conf(cls, group, kernel, state_dir=None, records_dir=None):
        """Build the shaper from the loaded [stealth] option group.

        :param kernel: the backend, loaded by the caller as
            ``[stealth] backend`` names it
        :param state_dir: instead of ``[stealth] state_dir``
        :param records_dir: where device records are shared (default:
            the state directory)
        """
        return cls(state_dir or group.state_dir, kernel,
                   records_dir=records_dir,
                   link_rate_mbit=group.link_rate_mbit,
                   allow_replace_root_qdisc=group.allow_replace_root_qdisc,
                   egress_device=group.egress_device,
                   chaff_port_blocks=tree.port_blocks(group.chaff_ports),
                   chaff_rate_mib=max(group.chaff_max_rate, 0.01))

    def device_for(self, peer):
        """Return the device whose egress carries traffic to ``peer``."""
        return self.egress_device or self.kernel.route_device(peer)

    def install(self, session_id, peer, port, rate_mib, ifname=None):
        """Shape TCP to ``peer``:``port`` at ``rate_mib`` MiB/s.

        Builds the device's tree on first use and adds a class and filter
        for this migration. Installing a session twice returns the first.

        :returns: the session record (ifname, ifindex, slot, classid, ...)
        :raises nova_stealth.exception.ExistingRootQdisc: when an operator's
            root qdisc is there and may not be replaced
        """
        ifname = ifname or self.device_for(peer)
        protocol, keys = tree.migration_filter(peer, port)
        with state.device_lock(self.records_dir, ifname):
            record = self._tree_record(ifname)
            if session_id in record['sessions']:
                return record['sessions'][session_id]
            # A class the kernel shows is taken, recorded or not: two
            # services must never drive one class.
            used = {s['slot'] for s in record['sessions'].values()} | (
                _session_slots(self.kernel.dump_tc(record['ifindex'])))
            slot = next(n for n in range(tree.MAX_SESSIONS + 1)
                        if n not in used)
            session = {
                'session_id': session_id, 'ifname': ifname,
                'ifindex': record['ifindex'], 'mtu': record['mtu'],
                'slot': slot, 'classid': tree.handle(tree.session_minor(slot)),
                'prio': tree.session_prio(slot), 'protocol': protocol,
                'peer': peer, 'port': port,
                'owner': state.process_identity(),
                'service': self.service,
            }
            record['sessions'][session_id] = session
            state.save(self.records_dir, ifname, record)
            try:
                self.kernel.add_htb_class(
                    record['ifindex'], session['classid'],
                    tree.handle(tree.PARENT_MINOR),
                    tree.htb_shape(tree.mib_to_bytes(rate_mib),
                                   record['mtu']))
                self.kernel.add_u32_filter(
                    record['ifindex'], tree.ROOT_HANDLE, session['prio'],
                    protocol, keys, session['classid'])
            except Exception:
                try:
                    self._remove_locked(ifname, record, session_id)
                except Exception:
                    LOG.exception('Could not undo the shaping of migration '
                                  '%s; the sweep retries it', session_id)
                raise
            LOG.info('Shaping migration %s to [%s]:%d on %s in class %s',
                     session_id, peer, port, ifname,
                     tree.handle_text(session['classid']))
            return session

    def remove(self, session_id):
        """Remove a migration's class and filter; the tree with the last.

        Idempotent: removing an unknown session does nothing.

        :returns: True if something was removed
        """
        for ifname in state.devices(self.records_dir):
            with state.device_lock(self.records_dir, ifname):
                record = state.load(self.records_dir, ifname)
                if record and self._mine(record['sessions'].get(session_id)):
                    self._remove_locked(ifname, record, session_id)
                    return True
        return False

    def sessions(self):
        """Return the ids of this service's recorded sessions."""
        found = []
        for ifname in state.devices(self.records_dir):
            with state.device_lock(self.records_dir, ifname):
                record = state.load(self.records_dir, ifname)
            if record:
                found += [sid for sid, s in record['sessions'].items()
                          if self._mine(s)]
        return sorted(found)

    def _mine(self, session):
        # A record written before sessions named their service is ours.
        return session is not None and session.get(
            'service', self.service) == self.service

    def sweep(self, everything=False, keep=None):
        """Remove what processes that died left: sessions and trees.

        Also finishes teardowns that failed part-way (a tree whose last
        session is gone, a saved root qdisc not yet put back). A session
        that cannot be removed is logged and left for the next sweep.

        :param everything: remove every recorded session, whoever made it
            (for a service starting again: nothing before it is in use)
        :param keep: remove every recorded session but these ids (the
            migrations a running service owns); its modulator, if it still
            runs, is stopped first
        :returns: the ids of the sessions removed
        """
        removed = []
        for ifname in state.devices(self.records_dir):
            with state.device_lock(self.records_dir, ifname):
                record = state.load(self.records_dir, ifname)
                if record is None:
                    # Unreadable, and moved aside: what it described is
                    # known only to the kernel.
                    self._remove_unrecorded_tree(ifname)
                    continue
                orphans = [sid for sid, s in record['sessions'].items()
                           if not state.is_alive(s['owner']) or (
                               self._mine(s) and (everything or (
                                   keep is not None and sid not in keep)))]
                for session_id in orphans:
                    LOG.warning('Removing shaping of migration %s, which no '
                                'live migration of process %d owns',
                                session_id,
                                record['sessions'][session_id]['owner']['pid'])
                    try:
                        if keep is not None:
                            self.kernel.stop_modulator(session_id)
                        self._remove_locked(ifname, record, session_id)
                    except Exception:
                        LOG.exception('Could not remove the shaping of '
                                      'migration %s; trying again at the '
                                      'next sweep', session_id)
                        continue
                    removed.append(session_id)
                if not record['sessions'] and not orphans:
                    try:
                        self._teardown_locked(ifname, record)
                    except Exception:
                        LOG.exception('Could not remove the shaping tree '
                                      'from %s; trying again at the next '
                                      'sweep', ifname)
        return removed

    def start_modulator(self, session, policy_name, policy_kwargs, tick_s,
                        seed=None, ramp_s=0.0):
        """Start the loop that sets the session's class rate every tick.

        :param ramp_s: seconds over which the rate may climb from the
            policy's start rate to its maximum (0: at once)
        :returns: the modulator's id, for :meth:`stop_modulator`: the
            session's own, so that a teardown of an older migration cannot
            stop a newer one's modulator after the daemon restarted
        """
        return self.kernel.start_modulator(
            session['ifindex'], session['classid'],
            tree.handle(tree.PARENT_MINOR), session['mtu'], policy_name,
            policy_kwargs, seed, tick_s, ramp_s,
            modulator_id=session['session_id'])

    def stop_modulator(self, modulator_id):
        """Stop a modulator and return its summary (None if unknown)."""
        return self.kernel.stop_modulator(modulator_id)

    def modulator_rates(self, modulator_id):
        """A running modulator's last rate and measured throughput (cheap).

        :returns: ``{'set': MiB/s, 'sent': bytes/s or None, 'floor': MiB/s
            or None, 'floor_reached': bool}`` or None
        """
        return self.kernel.modulator_rates(modulator_id)

    def set_modulator_floor(self, modulator_id, rate_mib, ramp_s=0.0):
        """Hold the class at or above ``rate_mib`` MiB/s from now on.

        The floor is entered geometrically over ``ramp_s`` seconds; it is
        never lowered. Returns the floor (capped at the policy's maximum),
        None if the modulator is unknown.
        """
        return self.kernel.set_modulator_floor(modulator_id, rate_mib,
                                               ramp_s)

    def modulator_report(self, modulator_id):
        """Return a running modulator's summary so far."""
        return self.kernel.modulator_report(modulator_id)

    def modulator_trace(self, modulator_id):
        """Return a running modulator's last ticks, oldest first.

        At most :data:`nova_stealth.shaping.modulator.TRACE_RECORDS`.
        """
        return self.kernel.modulator_trace(modulator_id)

    def _tree_record(self, ifname):
        """Return the device's record, building the tree if it is not up."""
        link = self.kernel.link_info(ifname)
        record = state.load(self.records_dir, ifname)
        snapshot = self.kernel.dump_tc(link['index'])
        ours = is_shaped(snapshot)
        if record and ours:
            return record
        if ours:
            # Ours, but no record says what it holds (the state directory
            # was lost): nothing tracks its sessions, so it goes.
            LOG.warning('Removing a shaping tree on %s that no record '
                        'describes', ifname)
            self.kernel.delete_root(link['index'], tree.ROOT_HANDLE)
            snapshot = self.kernel.dump_tc(link['index'])
        if record:
            LOG.warning('The shaping tree recorded on %s is gone; '
                        'building it again', ifname)
        prior = None
        configured = [m for m in snapshot['qdiscs']
                      if rtnl.message_handles(m)[1]]
        tuned = tuned_qdisc(snapshot)
        if tuned and not self.allow_replace_root_qdisc:
            raise exception.ExistingRootQdisc(
                ifname=ifname, kind=tuned[0], handle=tuned[1])
        if configured:
            prior = _snapshot_to_record(snapshot)
        record = {'ifname': ifname, 'ifindex': link['index'],
                  'mtu': link['mtu'], 'prior': prior, 'sessions': {}}
        state.save(self.records_dir, ifname, record)
        try:
            self._build_tree(record)
        except Exception:
            self._teardown_locked(ifname, record)
            raise
        return record

    def _remove_unrecorded_tree(self, ifname):
        try:
            link = self.kernel.link_info(ifname)
        except LookupError:
            return
        if is_shaped(self.kernel.dump_tc(link['index'])):
            LOG.error('Removing the shaping tree on %s, whose record was '
                      'unreadable: the root qdisc it replaced, if any, is '
                      'not restored', ifname)
            self.kernel.delete_root(link['index'], tree.ROOT_HANDLE)

    def _build_tree(self, record):
        ifindex, mtu = record['ifindex'], record['mtu']
        parent = tree.handle(tree.PARENT_MINOR)
        self.kernel.replace_root_htb(ifindex, tree.ROOT_HANDLE,
                                     tree.DEFAULT_MINOR)
        self.kernel.add_htb_class(ifindex, parent, tree.ROOT_HANDLE,
                                  tree.htb_shape(self.link_rate, mtu))
        self.kernel.add_htb_class(ifindex, tree.handle(tree.DEFAULT_MINOR),
                                  parent, tree.htb_shape(self.link_rate, mtu))
        self.kernel.add_htb_class(ifindex, tree.handle(tree.CHAFF_MINOR),
                                  parent,
                                  tree.htb_shape(self.chaff_rate, mtu))
        for version, protocol, keys in tree.chaff_filters(
                self.chaff_port_blocks):
            self.kernel.add_u32_filter(
                ifindex, tree.ROOT_HANDLE, tree.CHAFF_PRIO[version],
                protocol, keys, tree.handle(tree.CHAFF_MINOR))

    def _remove_locked(self, ifname, record, session_id):
        # Each step is tried whatever became of the other; the session
        # stays recorded until both are done, so a sweep finishes the job.
        session = record['sessions'][session_id]
        failed = []
        for what, step, args in (
                ('filter', self.kernel.delete_filters,
                 (record['ifindex'], tree.ROOT_HANDLE, session['prio'],
                  session['protocol'])),
                ('class', self.kernel.delete_class,
                 (record['ifindex'], session['classid']))):
            try:
                step(*args)
            except Exception as e:
                LOG.error('Could not remove the %s of migration %s from '
                          '%s: %s', what, session_id, ifname, e)
                failed.append('%s: %s' % (what, e))
        if failed:
            raise exception.ShapingError(ifname=ifname,
                                         reason='; '.join(failed))
        del record['sessions'][session_id]
        LOG.info('Removed shaping of migration %s from %s', session_id,
                 ifname)
        if record['sessions']:
            state.save(self.records_dir, ifname, record)
        else:
            self._teardown_locked(ifname, record)

    def _teardown_locked(self, ifname, record):
        # The record goes only once the root qdisc it saved is back: until
        # then a sweep tries again (deleting a root already gone is a no-op).
        self.kernel.delete_root(record['ifindex'], tree.ROOT_HANDLE)
        if record['prior']:
            try:
                self.kernel.replay_tc(record['ifindex'],
                                      _snapshot_from_record(record['prior']))
            except Exception as e:
                state.save(self.records_dir, ifname, record)
                LOG.error('Could not put back the root qdisc saved on %s '
                          '(%s); the device is left with the kernel\'s '
                          'default until a sweep manages it', ifname, e)
                raise
        state.delete(self.records_dir, ifname)
        LOG.info('Removed the shaping tree from %s', ifname)
