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
"""The modulator's loop, on a clock the test controls."""

import errno
import statistics
import threading

import msgpack
import pytest

from nova_stealth.policy import constant
from nova_stealth.shaping import modulator
from nova_stealth.shaping import tree


class SteppedPolicy(constant.ConstantRatePolicy):
    """Rates 1, 2, 3, ... MiB/s."""

    def __init__(self):
        super().__init__(1.0, 1e6, 1.0)
        self.count = 0

    def next_rate(self):
        self.count += 1
        return float(self.count)


class FakeTime(object):
    """A clock that only moves when the loop sleeps or works."""

    def __init__(self, oversleep=0.0):
        self.now = 100.0
        self.oversleep = oversleep

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds + self.oversleep


def run_until(loop, ticks):
    done = threading.Event()
    apply_rate = loop.apply_rate

    def counting(rate):
        sent = apply_rate(rate)
        if loop.ticks + 1 >= ticks:
            loop._stopping.set()
            done.set()
        return sent

    loop.apply_rate = counting
    loop.start()
    assert done.wait(5)
    loop.stop()
    return dict(loop.report(), **loop.trace())


def test_deadlines_do_not_drift_when_sleep_overshoots():
    fake = FakeTime(oversleep=0.003)

    def slow_change(rate):
        # Changing the class takes 1.5 ms of the clock.
        fake.now += 0.0015
        return rate

    loop = modulator.Modulator(SteppedPolicy(), slow_change, 0.01,
                               clock=fake.clock, sleep=fake.sleep)
    report = run_until(loop, 50)
    assert report['times'] == pytest.approx([0.01 * k for k in range(50)])
    # Woken 3 ms late (the first tick is due at once), and the rate in
    # force 1.5 ms after that.
    assert report['lateness'] == pytest.approx([0.0] + [0.003] * 49)
    assert report['applied'] == pytest.approx([0.0015] + [0.0045] * 49)
    assert report['late'] == 0
    assert report['rates'] == [float(k) for k in range(1, 51)]
    assert report['sent'] == [tree.mib_to_bytes(k) for k in range(1, 51)]
    assert report['skipped'] == 0 and report['error'] is None


def test_ticks_missed_entirely_are_skipped_and_counted():
    fake = FakeTime()

    def slow_on_fifth(rate):
        if rate == tree.mib_to_bytes(5):
            fake.now += 0.025
        return None

    loop = modulator.Modulator(SteppedPolicy(), slow_on_fifth, 0.01,
                               clock=fake.clock, sleep=fake.sleep)
    report = run_until(loop, 8)
    assert report['skipped'] == 2
    assert report['times'][4:6] == pytest.approx([0.04, 0.07])
    assert report['sent'][0] == -1.0


def test_error_stops_the_loop_and_keeps_the_last_rate():
    fake = FakeTime()

    def fails_on_fourth(rate):
        if rate == tree.mib_to_bytes(4):
            raise OSError(2, 'No such file or directory')
        return 0

    loop = modulator.Modulator(SteppedPolicy(), fails_on_fourth, 0.01,
                               clock=fake.clock, sleep=fake.sleep)
    loop.start()
    loop._thread.join(5)
    report = dict(loop.report(), **loop.trace())
    assert not report['running']
    assert report['error'] == (
        'FileNotFoundError: [Errno 2] No such file or directory')
    assert report['last_rate'] == 3.0
    assert report['rates'] == [1.0, 2.0, 3.0]


class StopWhileAsleep(FakeTime):
    """A fake clock whose loop is told to stop in its ``at``-th sleep.

    That sleep waits for the stop and then runs its course: the current
    tick, which is what :meth:`Modulator.stop` promises to wait for.
    """

    def __init__(self, at):
        super().__init__()
        self.at = at
        self.sleeps = 0
        self.loop = None
        self.asleep = threading.Event()
        self.slept_after_stop = 0.0

    def sleep(self, seconds):
        self.sleeps += 1
        stopping = self.loop._stopping
        if self.sleeps == self.at:
            self.asleep.set()
            assert stopping.wait(10)
        if stopping.is_set():
            self.slept_after_stop += seconds
        super().sleep(seconds)


@pytest.mark.parametrize('tick_s', [0.01, 0.5])
def test_stop_waits_for_the_current_tick_only(tick_s):
    fake = StopWhileAsleep(at=5)
    changes = []
    loop = modulator.Modulator(SteppedPolicy(), changes.append, tick_s,
                               clock=fake.clock, sleep=fake.sleep)
    fake.loop = loop
    loop.start()
    assert fake.asleep.wait(10)
    before = len(changes)
    loop.stop()
    assert not loop.running
    # The first tick is due at once: the fifth sleep is the sixth tick's.
    # The tick asleep when told: its sleep and its change, no other.
    assert before == 5
    assert changes[before:] == [tree.mib_to_bytes(6)]
    assert fake.slept_after_stop == pytest.approx(tick_s)
    assert loop.report()['ticks'] == 6


def test_stop_is_prompt_with_a_real_clock():
    # Counted in ticks, not timed: what ran once the stop was asked, on a
    # machine however loaded, is at most the tick under way. Ordered by
    # the stop flag itself, not by a clock read before stop() sets it.
    changes = []
    after_stop = []

    def change(rate):
        changes.append(rate)
        if loop._stopping.is_set():
            after_stop.append(rate)
        if len(changes) == 3:
            started.set()
        return 0

    started = threading.Event()
    loop = modulator.Modulator(SteppedPolicy(), change, 0.01)
    loop.start()
    assert started.wait(10)
    loop.stop(timeout=10)
    assert not loop.running
    assert len(after_stop) <= 1


class FullPolicy(constant.ConstantRatePolicy):
    """Asks for its maximum every tick, from a start of 2 MiB/s."""

    def __init__(self):
        super().__init__(1.0, 32.0, 2.0)

    def next_rate(self):
        return self.max_rate


def test_start_ramp_caps_the_rate_geometrically():
    fake = FakeTime()
    sent = [0.0]

    def apply_rate(rate):
        sent[0] += rate * 0.01
        return sent[0]

    loop = modulator.Modulator(FullPolicy(), apply_rate, 0.01, ramp_s=0.4,
                               clock=fake.clock, sleep=fake.sleep)
    report = run_until(loop, 60)
    # 2 MiB/s doubling every 0.1 s up to 32 MiB/s, then the policy's own.
    assert report['rates'][0] == pytest.approx(2.0)
    assert report['rates'][10] == pytest.approx(4.0)
    assert report['rates'][30] == pytest.approx(16.0)
    assert report['rates'][40:] == [32.0] * 20
    # The class's throughput over the last three ticks, in bytes/s.
    assert loop.sent_rate() == pytest.approx(tree.mib_to_bytes(32.0))


def test_sent_rate_needs_the_kernel_counter():
    fake = FakeTime()
    loop = modulator.Modulator(FullPolicy(), lambda rate: None, 0.01,
                               clock=fake.clock, sleep=fake.sleep)
    run_until(loop, 10)
    assert loop.sent_rate() is None


def privsep_reply_bytes(value):
    """Bytes of a privsep reply carrying ``value``, as oslo.privsep packs."""
    return len(msgpack.packb((0, value), use_bin_type=True))


@pytest.mark.parametrize('ticks', [1000, 120000])
def test_stop_reply_stays_small_however_long_the_migration(ticks):
    # oslo.privsep drops replies over 100 MiB and with them its reader
    # thread; the old report grew by 45 bytes a tick, 100 MiB in 6.5 h.
    fake = FakeTime()
    loop = modulator.Modulator(SteppedPolicy(), lambda rate: rate, 0.01,
                               clock=fake.clock, sleep=fake.sleep,
                               trace_records=5000)
    run_until(loop, ticks)
    report = loop.report()
    assert report['ticks'] == ticks
    assert privsep_reply_bytes(report) < 1024
    trace = loop.trace()
    assert len(trace['rates']) == min(ticks, 5000)
    assert trace['rates'][-1] == float(ticks)
    assert privsep_reply_bytes(trace) < 5000 * 5 * 10


def test_trace_ring_keeps_the_newest_ticks_in_order():
    ring = modulator.TraceRing(4)
    for k in range(10):
        ring.append(times=k, lateness=0, applied=0, rates=k, sent=k)
    assert len(ring) == 4 and ring.count == 10
    assert ring.lists()['rates'] == [6.0, 7.0, 8.0, 9.0]
    assert ring.last('sent') == 9.0 and ring.last('sent', 3) == 6.0
    with pytest.raises(IndexError):
        ring.last('sent', 4)


def test_summary_says_what_the_log_line_needs():
    fake = FakeTime()

    def slow_on_fifth(rate):
        if rate == tree.mib_to_bytes(5):
            fake.now += 0.025
        return rate * 10

    loop = modulator.Modulator(SteppedPolicy(), slow_on_fifth, 0.01,
                               clock=fake.clock, sleep=fake.sleep,
                               policy_name='stepped')
    run_until(loop, 8)
    report = loop.report()
    rates = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert report['policy'] == 'stepped'
    assert report['ticks'] == 8
    # The fifth tick's change took 25 ms: late, and two deadlines missed.
    assert report['late'] == 1 and report['skipped'] == 2
    assert report['mean_rate'] == pytest.approx(statistics.mean(rates))
    assert report['cv_rate'] == pytest.approx(
        statistics.stdev(rates) / statistics.mean(rates))
    assert report['bytes_sent'] == (tree.mib_to_bytes(8) -
                                    tree.mib_to_bytes(1)) * 10
    assert report['error'] is None


class LowPolicy(constant.ConstantRatePolicy):
    """Asks for 1 MiB/s every tick, within [1, 32]."""

    def __init__(self):
        super().__init__(1.0, 32.0, 1.0)

    def next_rate(self):
        return 1.0


def test_floor_is_entered_geometrically_and_holds():
    fake = FakeTime()
    loop = modulator.Modulator(LowPolicy(), lambda rate: 0, 0.01,
                               clock=fake.clock, sleep=fake.sleep)
    floors = {}

    def apply_rate(rate):
        count = loop.ticks
        if count == 10:
            floors['set'] = loop.set_floor(8.0, ramp_s=0.3)
        if count == 20:
            # Asking again, lower, changes nothing.
            floors['again'] = loop.set_floor(2.0, ramp_s=5.0)
        return 0

    loop.apply_rate = apply_rate
    report = run_until(loop, 70)
    rates = loop.trace()['rates']
    assert floors == {'set': 8.0, 'again': 8.0}
    assert rates[:11] == [1.0] * 11
    # 1 MiB/s doubling every 0.1 s, then the whole floor.
    assert rates[20] == pytest.approx(2.0)
    assert rates[30] == pytest.approx(4.0)
    assert rates[40:] == [8.0] * 30
    assert report['floor'] == 8.0
    assert report['floor_since'] == pytest.approx(0.40)
    assert report['floor_low'] == 8.0
    assert loop.rates_now()['floor_reached']


def test_floor_asked_between_a_ticks_clock_and_its_rate():
    # The loop reads the clock, then the floor: a floor set in between
    # (whole at once) must not divide by its zero ramp.
    fake = FakeTime()
    loop = modulator.Modulator(LowPolicy(), lambda rate: 0, 0.01,
                               clock=fake.clock, sleep=fake.sleep)
    loop.set_floor(4.0, ramp_s=0.0)
    assert loop.floor_at(fake.now - 0.005) == 4.0
    loop.set_floor(8.0, ramp_s=1.0)
    assert loop.floor_at(fake.now - 0.005) == pytest.approx(4.0)
    loop.set_floor(8.0, ramp_s=0.0)
    assert loop.floor_at(fake.now - 0.005) == 8.0


def test_floor_at_once_cuts_a_ramp_short_and_is_capped():
    fake = FakeTime()
    loop = modulator.Modulator(LowPolicy(), lambda rate: 0, 0.01,
                               clock=fake.clock, sleep=fake.sleep)
    assert loop.set_floor(100.0, ramp_s=60.0) == 32.0
    assert not loop.floor_reached
    assert loop.set_floor(32.0, ramp_s=0.0) == 32.0
    report = run_until(loop, 3)
    assert loop.trace()['rates'] == [32.0] * 3
    assert report['floor_since'] == 0.0


def test_transient_errors_are_retried_a_bounded_number_of_times(caplog):
    fake = FakeTime()
    failures = {tree.mib_to_bytes(3): 2, tree.mib_to_bytes(5): 99}

    def flaky(rate):
        if failures.get(rate, 0) > 0:
            failures[rate] -= 1
            raise OSError(errno.ENOBUFS, 'No buffer space available')
        return 0

    loop = modulator.Modulator(SteppedPolicy(), flaky, 0.01,
                               clock=fake.clock, sleep=fake.sleep)
    loop.start()
    loop._thread.join(5)
    report = loop.report()
    # Tick 3 went through on its third try; tick 5 failed four times.
    assert report['ticks'] == 4 and report['last_rate'] == 4.0
    assert report['retries'] == 2 + modulator.TRANSIENT_RETRIES
    assert 'No buffer space' in report['error']
    errors = [r.getMessage() for r in caplog.records
              if r.levelname == 'ERROR']
    assert errors == ['The rate modulator stopped after 4 ticks (%s); the '
                      'migration class stays at 4.00 MiB/s and the migration '
                      'is no longer hidden' % report['error']]
