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
"""Chaff schedules and records, without a network."""

import math

import numpy as np
import pytest

from nova_stealth.chaff import records
from nova_stealth.chaff import schedules
from nova_stealth import exception

LEVEL = 4.0


def ramp(**kwargs):
    return schedules.load('ramp', LEVEL, lead=(2, 2), tail=(4, 4), seed=1,
                          **kwargs)


def test_installed_schedules_and_unknown_name():
    assert schedules.installed_schedules() == ['constant', 'ramp']
    with pytest.raises(exception.UnknownPlugin, match='constant, ramp'):
        schedules.load('stepwise', LEVEL)


def test_smooth_ramp():
    assert schedules.smooth_ramp(-1) == 0.0
    assert schedules.smooth_ramp(0.5) == pytest.approx(0.5)
    assert schedules.smooth_ramp(2) == 1.0
    assert schedules.smooth_ramp(0.05) < 0.01


def test_envelope_varies_like_tcp():
    schedule = ramp()
    factors = np.array([schedule.factor(t / 10.0) for t in range(20000)])
    assert factors.mean() == pytest.approx(1.0, abs=0.05)
    assert factors.std() / factors.mean() == pytest.approx(0.5, abs=0.05)
    lag_one = np.corrcoef(np.log(factors[:-1]), np.log(factors[1:]))[0, 1]
    assert lag_one == pytest.approx(0.7, abs=0.05)


def test_ramp_before_during_after():
    # Lead and fade are two draws from the lead's range, here apart, so
    # that one cannot stand in for the other.
    schedule = schedules.load('ramp', LEVEL, lead=(1, 3), tail=(4, 4),
                              seed=2)
    lead, fade = schedule.lead, schedule.fade
    assert 1 <= lead <= 3 and 1 <= fade <= 3 and abs(lead - fade) > 0.5
    assert schedule.rate(0.0, 0.0) == 0.0
    schedule.prepare(0.0)
    assert schedule.rate(0.0, 0.0) == 0.0

    def rising(now):
        return schedule.rate(now, 0.0) / schedule.factor(now)

    # Up along the raised cosine over the lead, then at the level.
    ramp_up = [rising(lead * k / 20.0) for k in range(21)]
    assert ramp_up == sorted(ramp_up)
    assert rising(lead / 4.0) == pytest.approx(
        LEVEL * schedules.smooth_ramp(0.25))
    assert rising(lead / 2.0) == pytest.approx(LEVEL / 2.0)
    assert rising(lead) == pytest.approx(LEVEL)
    assert rising(2.0) == pytest.approx(LEVEL)
    # The migration starts where the chaff was, less the keep-alive.
    assert schedule.handover_rate(2.0) == pytest.approx(
        schedule.rate(2.0, 0.0) - schedules.KEEP_ALIVE * LEVEL)
    schedule.migration_started(2.0)
    above_keep_alive = 0
    for tick in range(21, 60):
        now = tick / 10.0
        migration = 3.0 if tick % 2 else 0.5
        chaff = schedule.rate(now, migration)
        # The target fades out over the fade, not the lead.
        fading = schedules.smooth_ramp(1.0 - (now - 2.0) / fade)
        assert chaff == pytest.approx(max(
            schedules.KEEP_ALIVE * LEVEL,
            LEVEL * schedule.factor(now) * fading - migration))
        above_keep_alive += chaff > schedules.KEEP_ALIVE * LEVEL * 1.01
        if now >= 2.0 + fade:
            assert chaff == pytest.approx(schedules.KEEP_ALIVE * LEVEL)
    # Enough ticks where the fade shows, between 2 s and 2 s + fade.
    assert above_keep_alive >= 5
    # Ended, but its class still drains: the chaff keeps filling in.
    schedule.migration_ended(6.0)
    assert schedule.rate(6.1, 5.0) == pytest.approx(
        schedules.KEEP_ALIVE * LEVEL)
    assert schedule.tail_at is None
    recent = schedule.recent_total
    # Drained: the chaff takes over the recent total, factor reset to 1.
    assert schedule.rate(6.2, 0.0) == pytest.approx(recent)
    assert schedule.tail_at == 6.2
    assert not schedule.done(10.1)
    assert schedule.rate(10.3, 0.0) == 0.0
    assert schedule.done(10.3)


def test_take_over_at_the_latest_two_seconds_after_the_end():
    schedule = ramp()
    schedule.prepare(0.0)
    schedule.migration_started(2.0)
    for tick in range(21, 40):
        schedule.rate(tick / 10.0, 3.0)
    schedule.migration_ended(4.0)
    schedule.rate(5.9, 3.0)
    assert schedule.tail_at is None
    schedule.rate(6.0, 3.0)
    assert schedule.tail_at == 6.0


def test_level_before_the_start_matches_the_expected_total():
    rates = np.random.default_rng(0).lognormal(math.log(LEVEL), 0.6, 5000)
    schedule = ramp(migration_rates=rates)
    factors = np.exp(np.random.default_rng(1).normal(
        -schedule.spread ** 2 / 2, schedule.spread, 5000))
    expected = np.mean(np.maximum(LEVEL * factors, rates))
    assert schedule.target_level == pytest.approx(expected, rel=0.05)
    assert schedule.target_level > LEVEL


def test_constant_schedule():
    schedule = schedules.load('constant', LEVEL, lead=(1, 1), tail=(1, 1))
    assert schedule.rate(0.0, 0.0) == 0.0
    schedule.prepare(0.0)
    schedule.migration_started(1.0)
    assert schedule.rate(1.5, 3.0) == LEVEL
    schedule.migration_ended(2.0)
    assert schedule.rate(2.5, 0.0) == LEVEL
    assert schedule.rate(3.0, 0.0) == 0.0


def test_writes_are_mostly_full_records_of_random_bytes():
    source = records.RecordSource()
    sizes = [len(source.chunk()) for _ in range(2000)]
    assert max(sizes) == records.FULL_RECORD and min(sizes) >= 1
    assert 0.7 < sizes.count(records.FULL_RECORD) / len(sizes) < 0.9
    assert len(set(bytes(source.chunk(100)) for _ in range(50))) == 50


@pytest.mark.parametrize('name', schedules.installed_schedules())
def test_every_schedule_takes_what_the_engine_knows(name):
    # The source session passes these to whichever schedule is set.
    schedule = schedules.load(name, LEVEL, lead=(2, 2), tail=(3, 3), seed=1,
                              migration_rates=[LEVEL] * 10,
                              expected_bytes=1000 * LEVEL,
                              cost_fraction=0.1)
    schedule.prepare(0.0)
    assert schedule.rate(1.0, 0.0) > 0


def sized(expected_seconds, fraction=0.1, lead=(8, 8), tail=(10, 10)):
    return schedules.load('ramp', LEVEL, lead=lead, tail=tail, seed=1,
                          expected_bytes=expected_seconds * LEVEL,
                          cost_fraction=fraction)


def test_a_long_migration_keeps_the_ramps_drawn():
    schedule = sized(expected_seconds=3600, fraction=0.2)
    assert (schedule.lead, schedule.fade, schedule.tail) == (8, 8, 10)
    assert schedule.expected_cost(3600 * LEVEL) <= 0.2 * 3600 * LEVEL


def test_ramps_shrink_by_one_factor_to_fit_the_cost():
    schedule = sized(expected_seconds=100, fraction=0.2)
    # Keep-alive 10% of 100 s leaves 10% (10 s at the level); the fade,
    # 8 s as drawn (4 s at the level), stays; lead and tail, drawn 8 and
    # 10 s (9 s at the level), get the 6 s left.
    assert schedule.fade == 8
    assert schedule.lead == pytest.approx(8 * 6 / 9)
    assert schedule.tail / schedule.lead == pytest.approx(10 / 8)
    assert schedule.expected_cost(100 * LEVEL) == pytest.approx(
        0.2 * 100 * LEVEL)


def test_a_short_migration_gets_the_shortest_ramps_not_less():
    schedule = sized(expected_seconds=10)
    assert schedule.lead == schedule.tail == schedules.MIN_RAMP_SECONDS
    assert schedule.fade == 8
    # Ramps drawn shorter than that are left as they are.
    schedule = sized(expected_seconds=10, lead=(1, 1), tail=(1, 1))
    assert schedule.lead == schedule.tail == 1


def test_without_a_size_the_ramps_are_as_drawn():
    schedule = schedules.load('ramp', LEVEL, lead=(8, 8), tail=(10, 10),
                              seed=1)
    assert (schedule.lead, schedule.tail) == (8, 10)
