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
"""The rate modulator: the loop that drives the migration class.

Every tick it asks the rate policy for the next rate and changes the class
in place (never delete-then-add, which would open an unshaped window), then
records the rate it set and the bytes the class had sent. Deadlines are
computed from the start time, so sleeping late on one tick does not shift
the next ones; ticks missed entirely are counted and skipped.

What it keeps is bounded whatever the migration's length: running totals
for the summary that ends a migration (:meth:`Modulator.report`), and the
last :data:`TRACE_RECORDS` ticks in a ring (:meth:`Modulator.trace`). Both
cross the privsep channel, whose messages may not exceed 100 MiB.

A floor (:meth:`Modulator.set_floor`) holds the rate at or above a
guaranteed rate from a moment on, entered geometrically from the rate of
that moment: the switch-over's stop-and-copy gets the bandwidth QEMU was
told, and the policy keeps choosing every rate above it.
"""

import array
import errno
import math
import threading
import time

from oslo_log import log as logging

from nova_stealth.shaping import tree

#: Ticks kept in the trace ring: five minutes at 10 ms, about 1.4 MB when
#: sent over the privsep channel.
TRACE_RECORDS = 30000
#: A tick whose rate came into force more than this fraction of a tick
#: after its deadline counts as late.
LATE_FRACTION = 0.5
_SERIES = ('times', 'lateness', 'applied', 'rates', 'sent')
#: Errors of a class change that a second try may not meet: the kernel
#: was short of memory or busy. Others (the class is gone) end the loop.
TRANSIENT_ERRNOS = frozenset([errno.EAGAIN, errno.EBUSY, errno.EINTR,
                              errno.ENOBUFS, errno.ENOMEM])
#: Tries again within one tick, at most.
TRANSIENT_RETRIES = 3
LOG = logging.getLogger(__name__)


class TraceRing(object):
    """The last ``capacity`` ticks, one float per series and tick."""

    def __init__(self, capacity=TRACE_RECORDS):
        self.capacity = capacity
        self.count = 0
        self.series = {name: array.array('d', bytes(8 * capacity))
                       for name in _SERIES}

    def __len__(self):
        return min(self.count, self.capacity)

    def append(self, **values):
        """Record one tick; the oldest goes once the ring is full."""
        index = self.count % self.capacity
        for name, value in values.items():
            self.series[name][index] = value
        self.count += 1

    def last(self, name, back=0):
        """The value of ``name`` ``back`` ticks before the newest."""
        if back >= len(self):
            raise IndexError('the ring holds %d ticks' % len(self))
        return self.series[name][(self.count - 1 - back) % self.capacity]

    def lists(self):
        """``{series: [oldest ... newest]}`` as plain lists."""
        start = self.count % self.capacity if (
            self.count > self.capacity) else 0
        return {name: (values[start:len(self)] + values[:start]).tolist()
                for name, values in self.series.items()}


class Modulator(object):
    """Run ``policy`` every ``tick_s`` seconds in a thread of its own.

    :param policy: a :class:`nova_stealth.policy.base.RatePolicy`
    :param apply_rate: called with the rate in bytes/s; returns the bytes
        the class has sent so far (or None)
    :param tick_s: seconds between two ticks
    :param ramp_s: seconds over which the rate may rise at most from the
        policy's start rate to its maximum, geometrically (0: no ramp); the
        chaff fills in the rest, so the migration's start is no step
    :param trace_records: ticks kept in the trace ring
    :param policy_name: the policy's plugin name, for the summary
    """

    def __init__(self, policy, apply_rate, tick_s, ramp_s=0.0,
                 clock=time.monotonic, sleep=time.sleep,
                 trace_records=TRACE_RECORDS, policy_name=None):
        self.policy = policy
        self.policy_name = policy_name or type(policy).__name__
        self.apply_rate = apply_rate
        self.tick_s = tick_s
        self.ramp_s = ramp_s
        self.clock = clock
        self.sleep = sleep
        self.ring = TraceRing(trace_records)
        self.skipped = 0
        self.late = 0
        self.retries = 0
        self.error = None
        self.last_rate = policy.start_rate
        # Welford's running mean and sum of squared deviations of the
        # rates set, so the summary needs no history.
        self._mean = 0.0
        self._m2 = 0.0
        self._first_sent = None
        self._last_sent = None
        self.floor = None
        self._floor_from = None
        self._floor_start = None
        self._floor_ramp = 0.0
        self.floor_since = None
        self.floor_low = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='nova-stealth-modulator')

    def start(self):
        """Start ticking."""
        self._thread.start()

    def stop(self, timeout=5.0):
        """Stop after the current tick; the class keeps its last rate."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self):
        """True while the loop runs."""
        return self._thread.is_alive()

    @property
    def ticks(self):
        """Ticks run since the start."""
        return self.ring.count

    def ceiling(self, elapsed):
        """The most the rate may be, ``elapsed`` seconds after the start."""
        if elapsed >= self.ramp_s:
            return self.policy.max_rate
        growth = self.policy.max_rate / self.policy.start_rate
        return self.policy.start_rate * growth ** (elapsed / self.ramp_s)

    def set_floor(self, rate, ramp_s=0.0):
        """Hold the rate at or above ``rate`` (MiB/s) from now on.

        The floor climbs geometrically over ``ramp_s`` seconds from the
        rate of the moment; a floor already in force is never lowered (a
        ``ramp_s`` of 0 then puts the whole of it in force at once).
        Returns the floor, capped at the policy's maximum rate.
        """
        rate = min(float(rate), self.policy.max_rate)
        # The same floor asked again in bytes/s comes back a rounding off.
        if self.floor is not None and rate <= self.floor * (1 + 1e-9):
            if ramp_s <= 0:
                # The whole floor from the next tick on.
                self._floor_ramp = 0.0
            return self.floor
        # From the rate of the moment, or the floor already in force.
        now = self.clock()
        self._floor_from = max(min(max(self.last_rate, self.floor_at(now)),
                                   rate), 1e-6)
        self._floor_start = now
        self._floor_ramp = max(float(ramp_s), 0.0)
        self.floor = rate
        self.floor_since = None
        self.floor_low = None
        return rate

    def floor_at(self, now):
        """The floor in force at ``now`` (0 when there is none)."""
        if self.floor is None:
            return 0.0
        # ``now`` may be from just before the floor was set.
        elapsed = max(now - self._floor_start, 0.0)
        if self._floor_ramp <= 0 or elapsed >= self._floor_ramp:
            return self.floor
        return self._floor_from * (self.floor / self._floor_from) ** (
            elapsed / self._floor_ramp)

    @property
    def floor_reached(self):
        """True once a tick has run at the whole floor."""
        return self.floor_since is not None

    def rates_now(self):
        """The last rate set, the recent throughput and the floor."""
        return {'set': self.last_rate, 'sent': self.sent_rate(),
                'floor': self.floor, 'floor_reached': self.floor_reached}

    def sent_rate(self, ticks=3):
        """Bytes per second the class sent over the last ``ticks`` ticks.

        None until the kernel has reported the byte counter that long.
        """
        ring = self.ring
        if len(ring) <= ticks:
            return None
        newest, oldest = ring.last('sent'), ring.last('sent', ticks)
        if newest < 0 or oldest < 0:
            return None
        return (newest - oldest) / (ring.last('times') -
                                    ring.last('times', ticks))

    def _record(self, started, deadline, now, rate, sent):
        # Called right after the change: ``applied`` is how long after its
        # deadline the new rate was in force.
        applied = self.clock() - deadline
        if applied > LATE_FRACTION * self.tick_s:
            self.late += 1
        count = self.ring.count + 1
        delta = rate - self._mean
        self._mean += delta / count
        self._m2 += delta * (rate - self._mean)
        if sent is not None:
            if self._first_sent is None:
                self._first_sent = sent
            self._last_sent = sent
        self.ring.append(times=deadline - started, lateness=now - deadline,
                         applied=applied, rates=rate,
                         sent=-1.0 if sent is None else float(sent))

    def _run(self):
        started = self.clock()
        offset = 0.0
        while not self._stopping.is_set():
            deadline = started + offset
            now = self.clock()
            if deadline > now:
                self.sleep(deadline - now)
                now = self.clock()
            try:
                rate = min(self.policy.next_rate(),
                           self.ceiling(deadline - started))
                floor = self.floor_at(now)
                rate = max(rate, floor)
                sent = self._apply(tree.mib_to_bytes(rate))
            except Exception as e:
                self.error = '%s: %s' % (type(e).__name__, e)
                # The class keeps one rate from now on: the constant
                # baseline an eavesdropper can tell apart.
                LOG.error('The rate modulator stopped after %d ticks (%s); '
                          'the migration class stays at %.2f MiB/s and the '
                          'migration is no longer hidden', self.ring.count,
                          self.error, self.last_rate)
                return
            self.last_rate = rate
            if (self.floor is not None and self.floor_since is None and
                    floor >= self.floor):
                self.floor_since = deadline - started
            if self.floor_since is not None:
                self.floor_low = (rate if self.floor_low is None
                                  else min(self.floor_low, rate))
            self._record(started, deadline, now, rate, sent)
            # A policy may size its own ticks, so that its rate changes
            # fall on no grid.
            offset += self.policy.hold_seconds() or self.tick_s
            # Deadlines already past are skipped, not run late in a burst.
            behind = math.floor(
                (self.clock() - started - offset) / self.tick_s) + 1
            if behind > 0:
                self.skipped += behind
                offset += behind * self.tick_s

    def _apply(self, rate):
        for attempt in range(TRANSIENT_RETRIES + 1):
            try:
                return self.apply_rate(rate)
            except OSError as e:
                if e.errno not in TRANSIENT_ERRNOS or (
                        attempt == TRANSIENT_RETRIES):
                    raise
                self.retries += 1

    def report(self):
        """Return a summary of what the loop did, of bounded size.

        ``ticks`` run, ``late`` (in force more than half a tick after their
        deadline) and ``skipped`` (deadlines missed entirely), the mean rate
        set and the coefficient of variation of the rates (MiB/s), the bytes
        the class sent while modulated (None if the kernel never said), the
        class changes tried again after a transient error (``retries``), and
        the error that stopped the loop, if any. ``floor`` is the
        guaranteed rate (None if none was asked for), ``floor_since`` the
        deadline of the first tick that ran at it and ``floor_low`` the
        lowest rate set from then on.
        """
        ticks = self.ring.count
        mean = self._mean if ticks else None
        cv = None
        if ticks > 1 and self._mean > 0:
            cv = math.sqrt(self._m2 / (ticks - 1)) / self._mean
        sent = None
        if self._first_sent is not None:
            sent = int(self._last_sent - self._first_sent)
        return {
            'running': self.running,
            'error': self.error,
            'policy': self.policy_name,
            'tick_s': self.tick_s,
            'ticks': ticks,
            'late': self.late,
            'skipped': self.skipped,
            'retries': self.retries,
            'last_rate': self.last_rate,
            'mean_rate': mean,
            'cv_rate': cv,
            'bytes_sent': sent,
            'floor': self.floor,
            'floor_since': self.floor_since,
            'floor_low': self.floor_low,
        }

    def trace(self):
        """Return the last ticks (at most ``trace_records``), oldest first.

        ``times`` are the deadlines since start, ``lateness`` how late
        each tick ran, ``applied`` how late its rate was in force,
        ``rates`` the rates set (MiB/s) and ``sent`` the class's byte
        counter after each change (-1 where the kernel gave none).
        """
        return self.ring.lists()
