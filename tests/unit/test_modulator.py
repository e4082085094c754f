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

import threading

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
        if len(loop.rates) + 1 >= ticks:
            loop._stopping.set()
            done.set()
        return sent

    loop.apply_rate = counting
    loop.start()
    assert done.wait(5)
    loop.stop()
    return loop.report()


def test_deadlines_do_not_drift_when_sleep_overshoots():
    fake = FakeTime(oversleep=0.003)
    loop = modulator.Modulator(SteppedPolicy(), lambda rate: rate, 0.01,
                               clock=fake.clock, sleep=fake.sleep)
    report = run_until(loop, 50)
    assert report['times'] == pytest.approx([0.01 * k for k in range(50)])
    assert report['lateness'][1:] == pytest.approx([0.003] * 49)
    assert report['applied'] == report['lateness']
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
    report = loop.report()
    assert not report['running']
    assert report['error'] == (
        'FileNotFoundError: [Errno 2] No such file or directory')
    assert report['last_rate'] == 3.0
    assert report['rates'] == [1.0, 2.0, 3.0]


def test_stop_is_prompt_with_a_real_clock():
    loop = modulator.Modulator(SteppedPolicy(), lambda rate: 0, 0.01)
    loop.start()
    loop.stop()
    assert not loop.running


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
