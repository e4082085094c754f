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

NAMESPACE = 'nova_stealth.chaff_schedules'
#: How often the envelope's own variation takes a new value.
ENVELOPE_TICK = 0.1
#: Time constant of the average total that the ramp-down starts from: two
#: 100 ms bins, what the host sent just before the migration ended.
TRACK_SECONDS = 0.2
#: Least chaff while the migration runs, as a share of the level: idle TCP
#: streams restart from a small window (tcp_slow_start_after_idle) and
#: could not take over at the end in time.
KEEP_ALIVE = 0.1


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
    """

    def __init__(self, level, lead=(5.0, 15.0), tail=(5.0, 15.0),
                 seed=None):
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

    @abc.abstractmethod
    def rate(self, now, migration_rate):
        """Total chaff bytes per second for ``now``."""


class RampSchedule(ChaffSchedule):
    """Ramp up, fill in under the migration, ramp down.

    The envelope is ``level`` times a factor that varies like a TCP flow:
    a lognormal AR(1) process sampled every 100 ms with mean 1, a
    coefficient of variation ``cv`` and lag-one autocorrelation ``memory``.
    Before the migration the chaff rises to the envelope over the lead
    time; while it runs the chaff sends what the migration leaves of the
    envelope (never less than a tenth of the level, to keep its streams'
    windows open), so that the total starts where the chaff was; when it
    ends the chaff takes over the total the host was sending (its average
    over the last 200 ms) and falls to nothing over the tail. Both ramps
    follow a raised cosine.

    ``level`` is the migration's expected mean rate. While the migration
    runs the total is the larger of the envelope and the migration's rate,
    whose mean is above ``level``; given a sample of the migration's rates
    (``migration_rates``, say the rate policy run ahead), the chaff runs
    at that expected total before the start, so that the start is no step.

    Measured on the real kernel it does not yet hide the steps reliably:
    with some seeds the change at the start or end stays as large as
    without chaff (tests/functional/test_chaff_sender.py prints it).
    """

    def __init__(self, level, lead=(5.0, 15.0), tail=(5.0, 15.0),
                 seed=None, cv=0.5, memory=0.7, migration_rates=None):
        super().__init__(level, lead, tail, seed)
        self.spread = math.sqrt(math.log(1.0 + cv * cv))
        self.memory = memory
        self.before_level = self.level
        if migration_rates is not None and len(migration_rates):
            factors = np.exp(self.rng.normal(-self.spread ** 2 / 2.0,
                                             self.spread,
                                             len(migration_rates)))
            self.before_level = float(np.mean(np.maximum(
                self.level * factors, np.asarray(migration_rates))))
        self.log_factor = float(self.rng.normal(0.0, self.spread))
        self.factor_at = None
        self.recent = None
        self.recent_at = None
        self.end_level = None

    def factor(self, now):
        """The envelope's multiplicative variation at ``now`` (mean 1)."""
        if self.factor_at is None:
            self.factor_at = now
        innovation = self.spread * math.sqrt(1.0 - self.memory ** 2)
        while now - self.factor_at >= ENVELOPE_TICK:
            self.log_factor = (self.memory * self.log_factor +
                               float(self.rng.normal(0.0, innovation)))
            self.factor_at += ENVELOPE_TICK
        return math.exp(self.log_factor - self.spread ** 2 / 2.0)

    def _track(self, now, total):
        # The total's average over about the last 200 ms.
        if self.recent is None:
            self.recent, self.recent_at = total, now
            return
        weight = 1.0 - math.exp(-(now - self.recent_at) / TRACK_SECONDS)
        self.recent += weight * (total - self.recent)
        self.recent_at = now

    def migration_ended(self, now):
        """The migration's data stopped: hold the total, then ramp down.

        The chaff takes the level of the recent total, and its variation
        restarts from a factor of exactly 1, so that at the hand-over the
        chaff is what the host was sending; the factor then wanders with
        mean 1 as before.
        """
        super().migration_ended(now)
        self.end_level = self.level if self.recent is None else self.recent
        self.log_factor = self.spread ** 2 / 2.0
        self.factor_at = now

    def rate(self, now, migration_rate):
        """Total chaff bytes per second for ``now``."""
        if self.prepared_at is None:
            return 0.0
        factor = self.factor(now)
        if self.started_at is None:
            return self.before_level * factor * smooth_ramp(
                (now - self.prepared_at) / self.lead)
        if self.ended_at is None:
            chaff = max(KEEP_ALIVE * self.level,
                        self.level * factor - migration_rate)
            self._track(now, chaff + migration_rate)
            return chaff
        return self.end_level * factor * smooth_ramp(
            1.0 - (now - self.ended_at) / self.tail)


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
    return plugins.installed(NAMESPACE)


def load(name, level, **kwargs):
    """Build the chaff schedule ``name``.

    :raises nova_stealth.exception.UnknownPlugin: listing installed ones
    """
    return plugins.plugin_class(NAMESPACE, name, 'chaff schedule')(
        level, **kwargs)
