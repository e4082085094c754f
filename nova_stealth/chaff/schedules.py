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
"""Chaff schedules: how much chaff to send at each moment of a migration.

Schedules are plugins in the ``nova_stealth.chaff_schedules`` namespace.
A schedule is told when the migration starts and ends, and answers, given
the migration's current rate, the total chaff rate for now.
"""

import abc
import math

import numpy as np

from nova_stealth import plugins

#: How often the envelope's own variation takes a new value.
ENVELOPE_TICK = 0.1
#: Time constant of the average total that the ramp-down starts from: two
#: 100 ms bins, what the host sent just before the migration's data ended.
TRACK_SECONDS = 0.2
#: Least chaff while the migration runs, as a share of the level: idle TCP
#: streams restart from a small window (tcp_slow_start_after_idle) and
#: could not take over at the end in time.
KEEP_ALIVE = 0.1
#: The shortest ramp sizing leaves, slower than a TCP flow's own start.
#: Ramps this short can show the migration's end: see chaff_cost_fraction.
MIN_RAMP_SECONDS = 1.5


def smooth_ramp(progress):
    """0 to 1 as progress goes 0 to 1, along a raised cosine.

    Flat at both ends, so the chaff joins and leaves without a kink that a
    step detector could catch.
    """
    progress = min(max(progress, 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * progress)


class ChaffSchedule(metaclass=abc.ABCMeta):
    """The total chaff rate over a migration's life.

    :param level: bytes per second the chaff is built around
    :param lead: (low, high) seconds of ramp-up before the migration
    :param tail: (low, high) seconds of ramp-down after it
    :param seed: seed of the schedule's random draws
    :param migration_rates: a sample of the migration's rates (the rate
        policy run ahead), for schedules that follow it
    :param expected_bytes: the migration's expected bytes, and
    :param cost_fraction: the share of them the chaff should cost, for
        schedules that size themselves
    """

    def __init__(self, level, lead=(5.0, 15.0), tail=(5.0, 15.0),
                 seed=None, migration_rates=None, expected_bytes=None,
                 cost_fraction=None):
        self.level = float(level)
        self.rng = np.random.default_rng(seed)
        self.lead = float(self.rng.uniform(*lead))
        self.tail = float(self.rng.uniform(*tail))
        self.prepared_at = self.started_at = self.ended_at = None

    def prepare(self, now):
        """The session starts: chaff begins its ramp-up."""
        self.prepared_at = now

    def migration_started(self, now):
        """The migration's data starts to flow."""
        self.started_at = now

    def migration_ended(self, now):
        """The migration's data stopped."""
        self.ended_at = now

    def done(self, now):
        """True once the ramp-down is over."""
        return self.ended_at is not None and now - self.ended_at >= self.tail

    def handover_rate(self, now):
        """The rate the migration should start at, in bytes per second.

        What the chaff sends now less what it keeps sending once the
        migration runs, so that the host's total does not step when the
        migration's data starts. The source session starts the rate
        policy there.
        """
        return max(0.0, self.rate(now, 0.0) - self.rate_under(0.0))

    def rate_under(self, migration_rate):
        """The least chaff sent while a migration runs at this rate."""
        return 0.0

    @abc.abstractmethod
    def rate(self, now, migration_rate):
        """Total chaff bytes per second for ``now``."""


class RampSchedule(ChaffSchedule):
    """Ramp up, fill in under the migration, take over, ramp down.

    The target is ``level`` times a factor that varies like a TCP flow: a
    lognormal AR(1) process sampled every 100 ms with mean 1, a coefficient
    of variation ``cv`` and lag-one autocorrelation ``memory``. Before the
    migration the chaff rises to the target over the lead time, along a
    raised cosine. The migration takes over from the chaff: its rate
    policy starts at :meth:`handover_rate` (what the chaff sends less the
    keep-alive) and its rate climbs no faster than the modulator's ramp,
    while the chaff sends what the migration's measured throughput leaves
    of the target; the target fades along a raised cosine over a random
    time drawn like the lead, leaving the migration alone (the chaff never
    sends less than a tenth of the level, to keep its streams' windows
    open). When the migration has ended and its class
    has drained (measured throughput below a fifth of its recent mean,
    or two seconds after the end), the chaff takes over the total the host
    was sending just before (its mean over about 200 ms), and its variation
    restarts from a factor of exactly 1; it then falls to nothing over the
    tail along a raised cosine.

    ``level`` is the migration's expected mean rate. While the migration
    runs the total is the larger of the target and the migration's rate,
    whose mean is above ``level``; given a sample of the migration's rates
    (``migration_rates``, say the rate policy run ahead), the target is
    that expected total throughout, so that the chaff alone before the
    start looks like the host during the migration.

    ``migration_rate`` passed to :meth:`rate` must be the throughput the
    migration's class measures, not the rate set: a migration's data keeps
    draining from its socket after the hypervisor says it is done.

    Given the migration's ``expected_bytes`` and a ``cost_fraction``, the
    lead and tail drawn are shortened, by one factor and none below
    MIN_RAMP_SECONDS, until the chaff expected (:meth:`expected_cost`) is
    at most that fraction of the migration's bytes: a large guest pays a
    small share for ramps of the full length, a small one the shortest
    ramps (experimental: ramps that short can show the migration's end).
    """

    #: The migration's class counts as drained below this share of its
    #: recent throughput.
    DRAINED = 0.2
    #: The hand-over happens at the latest this long after the end.
    DRAIN_SECONDS = 2.0

    def __init__(self, level, lead=(5.0, 15.0), tail=(5.0, 15.0),
                 seed=None, cv=0.5, memory=0.7, migration_rates=None,
                 expected_bytes=None, cost_fraction=None):
        super().__init__(level, lead, tail, seed, migration_rates,
                         expected_bytes, cost_fraction)
        self.fade = float(self.rng.uniform(*lead))
        self.spread = math.sqrt(math.log(1.0 + cv * cv))
        self.memory = memory
        self.target_level = self.level
        if migration_rates is not None and len(migration_rates):
            factors = np.exp(self.rng.normal(-self.spread ** 2 / 2.0,
                                             self.spread,
                                             len(migration_rates)))
            self.target_level = float(np.mean(np.maximum(
                self.level * factors, np.asarray(migration_rates))))
        if expected_bytes and cost_fraction is not None:
            self._fit(expected_bytes, cost_fraction)
        self.log_factor = float(self.rng.normal(0.0, self.spread))
        self.factor_at = None
        self.recent_total = None
        self.recent_migration = None
        self.recent_at = None
        self.tail_at = None
        self.end_level = None

    def expected_cost(self, expected_bytes):
        """Chaff bytes expected for a migration of ``expected_bytes``.

        The two ramps (a raised cosine averages half its height), what
        the chaff fills in under the fade (at most as much, less what the
        migration sends) and the keep-alive for as long as the migration
        lasts at ``level`` (a share of its bytes).
        """
        return self._ramps_cost() + KEEP_ALIVE * expected_bytes

    def _ramps_cost(self):
        return self.target_level * (self.lead + self.fade + self.tail) / 2.0

    def _fit(self, expected_bytes, cost_fraction):
        # Shorter ramps where the drawn ones would cost more than the
        # budget: lead and tail by one factor, none below
        # MIN_RAMP_SECONDS, so a small guest's chaff is bounded by the
        # shortest ramps.
        ramps = self._ramps_cost()
        room = (cost_fraction - KEEP_ALIVE) * expected_bytes
        if ramps <= room:
            return
        # The fade stays as drawn: it is the migration's own start (the
        # chaff giving way as it climbs), and shortened it let the paper's
        # MaxEnt, trained on native migrations, catch stealthed ones in
        # the quick testbed.
        fade = self.target_level * self.fade / 2.0
        scale = max(room - fade, 0.0) / (ramps - fade)
        self.lead, self.tail = (
            max(min(seconds, MIN_RAMP_SECONDS), seconds * scale)
            for seconds in (self.lead, self.tail))

    def factor(self, now):
        """The target's multiplicative variation at ``now`` (mean 1)."""
        if self.factor_at is None:
            self.factor_at = now
        innovation = self.spread * math.sqrt(1.0 - self.memory ** 2)
        while now - self.factor_at >= ENVELOPE_TICK:
            self.log_factor = (self.memory * self.log_factor +
                               float(self.rng.normal(0.0, innovation)))
            self.factor_at += ENVELOPE_TICK
        return math.exp(self.log_factor - self.spread ** 2 / 2.0)

    def _track(self, now, total, migration_rate):
        # Averages over about the last 200 ms, of the host's total and of
        # the migration's own throughput.
        if self.recent_at is None:
            self.recent_total, self.recent_migration = total, migration_rate
        else:
            weight = 1.0 - math.exp(-(now - self.recent_at) / TRACK_SECONDS)
            self.recent_total += weight * (total - self.recent_total)
            self.recent_migration += weight * (migration_rate -
                                               self.recent_migration)
        self.recent_at = now

    def _drained(self, now, migration_rate):
        if self.ended_at is None:
            return False
        return (now - self.ended_at >= self.DRAIN_SECONDS or
                migration_rate < self.DRAINED * (self.recent_migration or 0))

    def _take_over(self, now):
        self.tail_at = now
        self.end_level = (self.target_level if self.recent_total is None
                          else self.recent_total)
        self.log_factor = self.spread ** 2 / 2.0
        self.factor_at = now

    def done(self, now):
        """True once the ramp-down is over."""
        return self.tail_at is not None and now - self.tail_at >= self.tail

    def rate_under(self, migration_rate):
        """The keep-alive: a tenth of the level."""
        return KEEP_ALIVE * self.level

    def rate(self, now, migration_rate):
        """Total chaff bytes per second for ``now``."""
        if self.prepared_at is None:
            return 0.0
        if self.tail_at is None and self.started_at is not None and (
                self._drained(now, migration_rate)):
            self._take_over(now)
        factor = self.factor(now)
        if self.started_at is None:
            return self.target_level * factor * smooth_ramp(
                (now - self.prepared_at) / self.lead)
        if self.tail_at is None:
            fading = smooth_ramp(1.0 - (now - self.started_at) / self.fade)
            chaff = max(self.rate_under(migration_rate),
                        self.target_level * factor * fading - migration_rate)
            self._track(now, chaff + migration_rate, migration_rate)
            return chaff
        return self.end_level * factor * smooth_ramp(
            1.0 - (now - self.tail_at) / self.tail)


class ConstantSchedule(ChaffSchedule):
    """A fixed level from preparation to the end of the tail.

    A baseline: it hides nothing of the migration's own start and end.
    """

    def rate(self, now, migration_rate):
        """``level`` between preparation and the end of the tail."""
        if self.prepared_at is None or self.done(now):
            return 0.0
        return self.level


def installed_schedules():
    """Sorted names of the installed chaff schedules."""
    return plugins.installed(plugins.CHAFF_SCHEDULES)


def load(name, level, **kwargs):
    """Build the chaff schedule ``name``.

    :raises nova_stealth.exception.UnknownPlugin: listing installed ones
    """
    return plugins.plugin_class(
        plugins.CHAFF_SCHEDULES, name, 'chaff schedule')(level, **kwargs)
