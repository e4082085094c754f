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
"""The interface every rate policy implements."""

import abc

import numpy as np


class RatePolicy(metaclass=abc.ABCMeta):
    """Answers "what rate for the next tick?" for one migration.

    A policy is pure: it does no I/O and keeps no global state, and its
    randomness comes from one seeded :class:`numpy.random.Generator`, so a
    seed gives the same sequence of rates every time. Rates are in MiB/s.

    :param min_rate: lowest rate the policy may return
    :param max_rate: highest rate the policy may return
    :param start_rate: rate of the migration class before the first tick
    :param seed: seed for the random generator; None draws one from the OS
    """

    def __init__(self, min_rate, max_rate, start_rate, seed=None):
        if not 0 < min_rate <= start_rate <= max_rate:
            raise ValueError(
                'need 0 < min_rate <= start_rate <= max_rate, got %s, %s, %s'
                % (min_rate, start_rate, max_rate))
        self.min_rate = float(min_rate)
        self.max_rate = float(max_rate)
        self.start_rate = float(start_rate)
        self.rng = np.random.default_rng(seed)

    @classmethod
    def conf_kwargs(cls, group):
        """Return the constructor arguments taken from the [stealth] group.

        They are plain numbers and lists, so that the policy can be rebuilt
        in another process (the privileged modulator) with the same seed.
        """
        return {'min_rate': group.min_rate, 'max_rate': group.max_rate,
                'start_rate': group.start_rate}

    @classmethod
    def from_conf(cls, group, seed=None):
        """Build the policy from the loaded [stealth] option group."""
        return cls(seed=seed, **cls.conf_kwargs(group))

    @classmethod
    def migration_kwargs(cls, memory_bytes, link_headroom=None):
        """Constructor arguments that describe the migration itself.

        The engine adds them to :meth:`conf_kwargs` for each migration;
        none by default.

        :param memory_bytes: the guest's memory, in bytes
        :param link_headroom: bytes/s of the egress link that the host's
            other traffic left free just before the migration (None: not
            known)
        """
        return {}

    def hold_seconds(self):
        """Seconds the rate last returned should hold; None: one tick.

        A policy that varies the length of its ticks (so that its rate
        changes leave no grid) says here how long the rate it just
        returned is meant for; the modulator then sets the next rate
        that much later.
        """
        return None

    def clamp(self, rate):
        """Return ``rate`` limited to [min_rate, max_rate]."""
        return min(max(rate, self.min_rate), self.max_rate)

    @abc.abstractmethod
    def next_rate(self):
        """Return the rate, in MiB/s, to set for the next tick."""
