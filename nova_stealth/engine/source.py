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
"""A migration on its source host: DHTB class, modulator and chaff.

The order matters to what an eavesdropper sees. :meth:`SourceSession.start`
shapes the migration's port, starts the chaff and waits out its random
lead, then starts the modulator at the rate the chaff was sending, so the
host's egress does not step when the migration's data begins.
:meth:`SourceSession.finish` lets the migration's class drain, stops the
modulator and leaves the chaff to ramp down in the background, removing
the shaping once it has. :meth:`SourceSession.abort` removes everything at
once. Both are idempotent, and every exit path ends in one of them.

The switch-over: QEMU stops the guest once the data left fits its
``downtime-limit`` at the bandwidth it expects for the last copy.
:attr:`SourceSession.switchover_bandwidth` is the rate the shaping
guarantees for that copy (a quantile of the policy's own rates, so an
ordinary rate of this flow); the caller tells QEMU a share of it
(:attr:`SourceSession.avail_switchover_bandwidth`, QEMU >= 8.2's
``avail-switchover-bandwidth``), so the copy QEMU plans for its
``downtime-limit`` takes that share of it, and reports QEMU's progress
to :meth:`SourceSession.progress`, which starts raising the policy's floor
toward that rate once the rest would take ``switchover_lead_seconds`` at
it. :meth:`SourceSession.switchover`, called when QEMU has decided (its
``pre-switchover`` pause), returns once the whole floor is in force; the
floor holds until :meth:`SourceSession.finish`.
"""

import functools
import os
import socket
import threading
import time

import numpy as np
from oslo_log import log as logging

from nova_stealth import backends
from nova_stealth.chaff import schedules
from nova_stealth.chaff import sender as sender_lib
from nova_stealth import exception
from nova_stealth import policy as rate_policies
from nova_stealth.shaping import tc_lib
from nova_stealth.shaping import tree
from nova_stealth import units

LOG = logging.getLogger(__name__)
#: The policy is run this many ticks ahead to learn its mean rate.
LOOKAHEAD_TICKS = 20000
#: Below this throughput (bytes/s) the migration's class counts as drained.
DRAINED_RATE = 0.01 * units.MIB
DRAIN_TIMEOUT = 10.0
#: How long after its start the migration's rate set stands for what it
#: sends.
SETTLE_SECONDS = 0.3
#: Where the egress device's byte counter is read, to learn the link's load.
SYSFS_NET = '/sys/class/net'
#: Wire bytes per chaff payload byte (TCP/IP headers on full segments).
CHAFF_WIRE_FACTOR = 1.04
#: How often a running migration's modulator is asked whether it holds.
WATCH_SECONDS = 1.0
#: How long :meth:`SourceSession.switchover` waits for a tick at the floor.
FLOOR_TIMEOUT = 1.0


def _figure(value):
    return 'n/a' if value is None else '%.3g' % value


def device_tx_bytes(ifname, sysfs=SYSFS_NET):
    """Bytes the device ``ifname`` has sent; None where sysfs cannot say."""
    if not ifname:
        return None
    try:
        with open(os.path.join(sysfs, ifname, 'statistics',
                               'tx_bytes')) as counter:
            return int(counter.read())
    except Exception:
        # Not only OSError: Nova's functional harness, where the recording
        # backend runs, forbids open() on /sys with a bare Exception.
        return None


def expected_rates(policy_name, policy_kwargs, seed=None, tick_s=0.01):
    """The policy run ahead: its mean rates per 100 ms, in bytes/s.

    ``LOOKAHEAD_TICKS`` ticks of ``tick_s``; a policy that sizes its own
    ticks is run as long, each rate weighted by how long it holds.
    """
    policy = rate_policies.policy_class(policy_name)(seed=seed,
                                                     **policy_kwargs)
    rates = np.empty(LOOKAHEAD_TICKS)
    holds = np.empty(LOOKAHEAD_TICKS)
    for tick in range(LOOKAHEAD_TICKS):
        rates[tick] = policy.next_rate()
        holds[tick] = policy.hold_seconds() or tick_s
    edges = np.concatenate([[0.0], np.cumsum(holds)])
    sent = np.concatenate([[0.0], np.cumsum(rates * holds)])
    bins = np.arange(0.0, LOOKAHEAD_TICKS * tick_s + 1e-9, 10 * tick_s)
    return np.diff(np.interp(bins, edges, sent)) / (10 * tick_s) * units.MIB


def chaff_peers(group, destination):
    """(address, ports) of every responder the chaff may go to.

    The destination and the operator's other compute nodes, each stream
    drawing one at random, so that chaff does not single out the
    migration's two hosts.
    """
    ports = list(group.chaff_ports)
    peers = [destination] + [peer for peer in group.chaff_peers
                             if peer != destination]
    return [(peer, ports) for peer in peers]


def hypervisor_max_bandwidth(group):
    """QEMU's max-bandwidth for a stealthed migration, in MiB/s.

    Four times the policy's highest rate: QEMU's limiter hands out a tenth
    of it every 100 ms and sleeps the rest of the period once it is spent,
    which would put its bursts back on the wire. At four times the most
    the class ever drains, QEMU always has data queued in its socket, so
    the modulated class alone paces what leaves the host.
    """
    return 4.0 * group.max_rate


class SourceSession(object):
    """Shape and hide one outgoing migration.

    :param group: the loaded [stealth] option group
    :param migration_id: a name unique on this host (Nova's migration uuid)
    :param peer: the destination's address
    :param port: the migration's data port on the destination
    :param memory_bytes: the guest's memory, for the chaff's byte budget
    :param shaper: a :class:`nova_stealth.shaping.tc_lib.Shaper` (built
        from ``group``, with the backend ``[stealth] backend`` names, if
        None)
    :param socket_factory: makes the chaff's sockets, like socket.socket
    :param chaff_sender: makes the chaff sender, taking the arguments of
        :class:`nova_stealth.chaff.sender.ChaffSender` (default: that
        class, with ``socket_factory``)
    :param seed: seed of the policy and the chaff (None: fresh entropy)
    :param abort_migration: called, without arguments, to abort the
        migration when its defence cannot hold and ``[stealth]
        on_defence_failure`` is ``abort`` (the driver aborts the libvirt
        job); None to go on unhidden
    """

    def __init__(self, group, migration_id, peer, port, memory_bytes,
                 shaper=None, socket_factory=socket.socket, seed=None,
                 sleep=time.sleep, chaff_sender=None, abort_migration=None):
        self.group = group
        self.migration_id = migration_id
        self.peer = peer
        self.port = port
        self.memory_bytes = memory_bytes
        self.shaper = shaper or tc_lib.Shaper.from_conf(
            group, backends.load(group.backend))
        self.chaff_sender = chaff_sender or functools.partial(
            sender_lib.ChaffSender, socket_factory=socket_factory)
        self.seed = seed
        self.sleep = sleep
        policy_cls = rate_policies.policy_class(group.rate_policy)
        self.policy_kwargs = dict(
            policy_cls.conf_kwargs(group),
            **policy_cls.migration_kwargs(memory_bytes=memory_bytes))
        self.session = None
        self.modulator = None
        self.chaff = None
        self.report = None
        self.started_at = None
        self.guaranteed = None
        self._rates = None
        self.abort_migration = abort_migration
        self.degraded = None
        self._lock = threading.Lock()
        self._tail = None
        self._closed = False
        self._watching = threading.Event()

    def start(self):
        """Shape the port, start the chaff, wait its lead, modulate.

        Returns when the migration may start sending. On any error
        everything done so far is undone before the error is raised.
        """
        try:
            self.session = self.shaper.install(
                self.migration_id, self.peer, self.port,
                self.policy_kwargs['start_rate'])
            start_rate = self.policy_kwargs['start_rate']
            headroom = None
            if self.group.chaff_enabled:
                self.chaff = self._chaff()
            if self.chaff:
                before = (time.monotonic(),
                          device_tx_bytes(self.session.get('ifname')))
                self.chaff.start()
                self.sleep(self.chaff.schedule.lead)
                headroom = self._headroom(*before)
                start_rate = self._clamp(
                    self.chaff.handover_rate() / units.MIB)
            kwargs = dict(self.policy_kwargs, start_rate=start_rate)
            kwargs.update(rate_policies.policy_class(
                self.group.rate_policy).migration_kwargs(
                    memory_bytes=self.memory_bytes, link_headroom=headroom))
            self.started_at = time.monotonic()
            self.modulator = self.shaper.start_modulator(
                self.session, self.group.rate_policy, kwargs,
                self.group.tick_interval_ms / 1000.0, seed=self.seed,
                ramp_s=self.group.start_ramp_seconds)
            if self.chaff:
                self.chaff.migration_started()
            threading.Thread(target=self._watch, args=(self.modulator,),
                             daemon=True,
                             name='nova-stealth-watch-%s' % (
                                 self.migration_id)).start()
            LOG.info('Migration %s to [%s]:%d shaped by %s from %.2f MiB/s',
                     self.migration_id, self.peer, self.port,
                     self.group.rate_policy, start_rate)
        except BaseException:
            self.abort()
            raise

    @property
    def switchover_bandwidth(self):
        """Bytes/s the shaping guarantees for the stop-and-copy.

        The ``switchover_rate_quantile`` of the policy's 100 ms mean rates
        run ahead with this migration's seed, within the policy's bounds.
        """
        rate = float(np.quantile(self._expected_rates(),
                                 self.group.switchover_rate_quantile))
        return self._clamp(rate / units.MIB) * units.MIB

    @property
    def avail_switchover_bandwidth(self):
        """Bytes/s to tell QEMU as its ``avail-switchover-bandwidth``.

        ``switchover_bandwidth_share`` of the guaranteed rate: QEMU plans a
        stop-and-copy of ``downtime-limit`` at the rate it is told, which
        then takes that share of it at the rate guaranteed.
        """
        return (self.switchover_bandwidth *
                self.group.switchover_bandwidth_share)

    def progress(self, remaining_bytes):
        """QEMU has ``remaining_bytes`` left to send; returns the floor.

        Once the rest would take ``switchover_lead_seconds`` at the
        guaranteed rate, the policy's floor starts climbing toward it over
        ``switchover_ramp_seconds``. Returns the guaranteed rate (bytes/s)
        once the floor is asked for, else None.
        """
        if self.guaranteed is None and self.modulator and (
                remaining_bytes <= self.switchover_bandwidth *
                self.group.switchover_lead_seconds):
            self.guarantee(ramp_s=self.group.switchover_ramp_seconds)
        return self.guaranteed

    def guarantee(self, rate=None, ramp_s=0.0):
        """Hold the migration's class at or above ``rate`` bytes/s.

        :param rate: None for :attr:`switchover_bandwidth`
        :param ramp_s: seconds over which the floor climbs to it
        :returns: the rate guaranteed, bytes/s (None without a modulator)
        """
        rate = self.switchover_bandwidth if rate is None else rate
        if self.modulator is None:
            return None
        floor = self.shaper.set_modulator_floor(self.modulator,
                                                rate / units.MIB,
                                                ramp_s)
        if floor is not None and self.guaranteed is None:
            LOG.info('Migration %s: guaranteeing %.2f MiB/s for the '
                     'switch-over, entered over %.1f s', self.migration_id,
                     floor, ramp_s)
        self.guaranteed = None if floor is None else floor * units.MIB
        return self.guaranteed

    def switchover(self):
        """QEMU has decided to switch over: the whole floor, now.

        Returns the guaranteed rate (bytes/s) once a tick has run at it,
        or after FLOOR_TIMEOUT (logged) if none has.
        """
        rate = self.guarantee(self.guaranteed, ramp_s=0.0)
        deadline = time.monotonic() + FLOOR_TIMEOUT
        while rate is not None and time.monotonic() < deadline:
            now = self.shaper.modulator_rates(self.modulator)
            if now is None or now['floor_reached']:
                return rate
            self.sleep(self.group.tick_interval_ms / 1000.0)
        LOG.warning('Migration %s: the switch-over floor was not in force '
                    'within %.1f s', self.migration_id, FLOOR_TIMEOUT)
        return rate

    def migration_throughput(self):
        """Bytes per second the migration's class sends now.

        The rate set, until the migration has run for SETTLE_SECONDS: a
        measure over the first ticks sees a connection still opening, and
        the chaff would fill in what the migration is about to send.
        """
        rates = (self.shaper.modulator_rates(self.modulator)
                 if self.modulator else None)
        if rates is None:
            return 0.0
        if rates['sent'] is None or (
                time.monotonic() - self.started_at < SETTLE_SECONDS):
            return max(rates['set'] * units.MIB, rates['sent'] or 0.0)
        return rates['sent']

    def finish(self):
        """The migration's data is done: drain, then hide its end.

        Waits for the class to drain (so the last data is still shaped),
        stops the modulator, and leaves the chaff ramping down in a thread
        that removes the shaping when it is over; :meth:`close` waits for
        it.
        """
        with self._lock:
            if self._closed or self._tail is not None:
                return
            self._watching.set()
            if self.chaff:
                self.chaff.migration_ended()
            self._wait_drained()
            self._step('stopping the modulator', self._stop_modulator)
            self._tail = threading.Thread(
                target=self._finish_tail, daemon=True,
                name='nova-stealth-tail-%s' % self.migration_id)
            self._tail.start()

    def abort(self):
        """Stop the chaff and remove the shaping now; idempotent.

        Each step is tried whatever became of the one before (a dead
        privsep daemon must not keep the chaff going, nor the chaff's
        failure keep the class); a failed step is logged and left to the
        node's periodic sweep.

        :returns: True when every step succeeded
        """
        self._watching.set()
        with self._lock:
            done = True
            if self.chaff:
                done &= self._step('stopping the chaff', self.chaff.stop)
            done &= self._step('stopping the modulator', self._stop_modulator)
            done &= self._step('removing the shaping', self._remove_shaping)
            return done

    def _watch(self, modulator):
        # The modulator runs in the privsep daemon: ask it, every second,
        # whether it still runs, until the migration's data is done.
        while not self._watching.wait(WATCH_SECONDS):
            try:
                report = self.shaper.modulator_report(modulator)
            except Exception as e:
                report = {'error': 'the privsep daemon did not answer: %s'
                          % e}
            if self._watching.is_set():
                return
            if report is None:
                report = {'error': 'the modulator is gone (the privsep '
                          'daemon restarted)'}
            if report.get('error'):
                self._defence_failed(report['error'])
                return

    def _defence_failed(self, error):
        self.degraded = error
        if self.group.on_defence_failure == 'abort' and self.abort_migration:
            LOG.error('Migration %s can no longer be hidden (%s): aborting '
                      'it ([stealth] on_defence_failure = abort)',
                      self.migration_id, error)
            try:
                self.abort_migration()
            except Exception:
                LOG.exception('Migration %s: aborting it failed; removing '
                              'its shaping', self.migration_id)
            else:
                return
        else:
            LOG.error('Migration %s can no longer be hidden (%s): it goes '
                      'on unshaped and visible ([stealth] '
                      'on_defence_failure = %s%s)', self.migration_id, error,
                      self.group.on_defence_failure,
                      '' if self.abort_migration else
                      ', and nothing here can abort it')
        self.abort()

    def _step(self, what, action):
        try:
            action()
        except Exception:
            LOG.exception('Migration %s: %s failed; the periodic sweep '
                          'retries it', self.migration_id, what)
            return False
        return True

    def close(self, timeout=None):
        """Wait for the ramp-down after :meth:`finish`; True when done."""
        if self._tail is not None:
            self._tail.join(timeout)
            return not self._tail.is_alive()
        return True

    @property
    def chaff_bytes(self):
        """Chaff payload bytes sent so far."""
        return self.chaff.sent if self.chaff else 0

    def _chaff(self):
        """The chaff sender, or None (logged loudly) if it cannot run."""
        rates = self._expected_rates()
        schedule = schedules.load(
            self.group.chaff_schedule, float(np.mean(rates)),
            lead=self.group.chaff_lead_seconds,
            tail=self.group.chaff_tail_seconds, seed=self.seed,
            migration_rates=rates, expected_bytes=self.memory_bytes,
            cost_fraction=self.group.chaff_cost_fraction)
        try:
            return self.chaff_sender(
                chaff_peers(self.group, self.peer), schedule,
                max_rate=tree.mib_to_bytes(self.group.chaff_max_rate),
                budget=int(self.group.chaff_budget_fraction *
                           self.memory_bytes),
                tls_dir=self.group.chaff_tls_x509_dir,
                tls_priority=self.group.chaff_tls_priority,
                switch_mean=self.group.chaff_switch_seconds,
                migration_rate=self.migration_throughput, seed=self.seed)
        except exception.InvalidOption as e:
            LOG.error('Migration %s goes WITHOUT chaff, so its start and end '
                      'show on the wire: %s', self.migration_id, e)
            return None

    def _expected_rates(self):
        """The policy run ahead with this migration's seed (cached)."""
        if self._rates is None:
            self._rates = expected_rates(
                self.group.rate_policy, self.policy_kwargs, self.seed,
                self.group.tick_interval_ms / 1000.0)
        return self._rates

    def _headroom(self, since, sent_before):
        """Bytes/s of the link the host left free over the chaff's lead.

        The egress device's counter, less what the chaff sent, is the
        host's other traffic now; None when the counter cannot be read
        or the link's rate is not known.
        """
        sent_after = device_tx_bytes(self.session.get('ifname'))
        link_rate = getattr(self.shaper, 'link_rate', None)
        elapsed = time.monotonic() - since
        if None in (sent_before, sent_after, link_rate) or elapsed <= 0:
            return None
        other = max(0.0, sent_after - sent_before -
                    CHAFF_WIRE_FACTOR * self.chaff_bytes) / elapsed
        return max(link_rate - other, 0.0)

    def _clamp(self, rate):
        return min(max(rate, self.policy_kwargs['min_rate']),
                   self.policy_kwargs['max_rate'])

    def _wait_drained(self):
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (self.modulator and time.monotonic() < deadline and
               self.migration_throughput() > DRAINED_RATE):
            self.sleep(0.02)

    def _stop_modulator(self):
        modulator, self.modulator = self.modulator, None
        if modulator is not None:
            # Forgotten even if the stop fails: the sweep stops it by its
            # name, the migration's id.
            self.report = self.shaper.stop_modulator(modulator)

    def _remove_shaping(self):
        if not self._closed:
            self._closed = True
            self._log_summary()
            self.shaper.remove(self.migration_id)

    def _log_summary(self):
        # The one line an operator reads to know how a migration was hidden.
        report = self.report or {}
        chaff = self.chaff
        LOG.info(
            'Migration %s shaping summary: policy %s, %s ticks (%s late, '
            '%s skipped, %s retried), mean rate %s MiB/s, CV of rates %s, %s '
            'bytes sent in the class, chaff %d bytes%s, modulator error: %s',
            self.migration_id, report.get('policy', self.group.rate_policy),
            report.get('ticks', 0), report.get('late', 0),
            report.get('skipped', 0), report.get('retries', 0),
            _figure(report.get('mean_rate')),
            _figure(report.get('cv_rate')), report.get('bytes_sent'),
            self.chaff_bytes,
            ' (budget spent)' if chaff and chaff.sent >= chaff.budget else '',
            report.get('error'))

    def _finish_tail(self):
        try:
            if self.chaff:
                self.chaff.wait(self.chaff.schedule.tail + 10.0)
                self._step('stopping the chaff', self.chaff.stop)
        finally:
            with self._lock:
                self._step('removing the shaping', self._remove_shaping)
