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
"""Streaming flow features equal the same features computed in one go."""

import math

import numpy as np
import pytest

from nova_stealth.analysis import capture
from nova_stealth.analysis import flows as flow_lib


def batch(times_ns, sizes, dport=61000):
    n = len(times_ns)
    ones = np.ones(n, dtype=np.uint64)
    return capture.PacketBatch(
        time_ns=np.asarray(times_ns, dtype=np.int64),
        wire_len=np.asarray(sizes, dtype=np.int64),
        version=np.full(n, 4, np.uint8), proto=np.full(n, 6, np.uint8),
        src_hi=0 * ones, src_lo=ones * np.uint64(0xFFFFC6120001),
        dst_hi=0 * ones, dst_lo=ones * np.uint64(0xFFFFC6120002),
        sport=np.full(n, 40000, np.uint16), dport=np.full(n, dport,
                                                          np.uint16))


def throughput_cv(times, sizes, window):
    """The definition, written plainly: windows tile the flow's time."""
    starts = list(range(0, len(times), window))
    values = []
    for first, nxt in zip(starts, starts[1:]):
        span = max(times[nxt] - times[first], 1000) / 1e9
        values.append(sum(sizes[first:nxt]) / span)
    if len(values) < flow_lib.MIN_WINDOWS:
        return float('nan')
    return float(np.std(values) / np.mean(values))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_features_do_not_depend_on_batching(seed):
    rng = np.random.default_rng(seed)
    count = 25000
    times = np.cumsum(rng.exponential(200000, count)).astype(np.int64)
    times[rng.integers(0, count, 50)] += 30000000
    times = np.sort(times)
    sizes = rng.integers(60, 1515, count)
    cuts = np.sort(rng.choice(np.arange(1, count), 40, replace=False))
    whole = flow_lib.FlowTable(flow_lib.FlowOptions(min_packets=1))
    whole.add(batch(times, sizes))
    pieces = flow_lib.FlowTable(flow_lib.FlowOptions(min_packets=1))
    for part_t, part_s in zip(np.split(times, cuts), np.split(sizes, cuts)):
        pieces.add(batch(part_t, part_s))
    (one,), (other,) = whole.flows(), pieces.flows()
    assert one.packets == other.packets == count
    assert one.ipt_counts == other.ipt_counts
    assert sum(one.ipt_counts.values()) == count - 1
    np.testing.assert_array_equal(one.burst_starts, other.burst_starts)
    for window in flow_lib.WINDOWS:
        expected = throughput_cv(times.tolist(), sizes.tolist(), window)
        assert one.window_cvs[window] == pytest.approx(expected, rel=1e-9)
        assert other.window_cvs[window] == pytest.approx(expected, rel=1e-9)


def test_burst_starts_follow_the_gap():
    times = [0, 1000, 2000, 30000000, 30001000, 31000000, 80000000]
    table = flow_lib.FlowTable(flow_lib.FlowOptions(min_packets=1,
                                                    burst_gap=0.02))
    table.add(batch(times, [100] * 7))
    (flow,) = table.flows()
    assert flow.burst_starts.tolist() == [0, 3, 6]
    assert flow.ipt_counts == {1: 3, 29000: 1, 999: 1, 49000: 1}


def test_too_few_windows_have_no_cv():
    table = flow_lib.FlowTable(flow_lib.FlowOptions(min_packets=1))
    # 301 packets close three windows of 100 (each needs its successor).
    table.add(batch(np.arange(301) * 1000000, [1500] * 301))
    (flow,) = table.flows()
    assert flow.window_cvs[100] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(flow.window_cvs[200])


def test_filtering():
    table = flow_lib.FlowTable(flow_lib.FlowOptions(min_packets=10))
    table.add(batch(np.arange(20), [100] * 20, dport=1))
    table.add(batch(np.arange(5), [100] * 5, dport=2))
    udp = batch(np.arange(20), [100] * 20, dport=3)
    udp.proto[:] = 17
    table.add(udp)
    assert [f.key.dport for f in table.flows()] == [1]
    keep_udp = flow_lib.FlowTable(flow_lib.FlowOptions(min_packets=10,
                                                       tcp_only=False))
    keep_udp.add(udp)
    assert [f.key.proto for f in keep_udp.flows()] == ['udp']


def test_flow_key_text_and_reverse():
    key = flow_lib.FlowKey('tcp', '198.18.0.1', 40000, '2001:db8::2', 443)
    assert key.reverse().reverse() == key
    assert str(key) == 'tcp [198.18.0.1]:40000 -> [2001:db8::2]:443'
    assert key.as_dict()['dport'] == 443


def test_long_gaps_are_counted_per_millisecond():
    times = [0, 9999000, 9999000 + 10000900, 9999000 + 10000900 + 10999999]
    table = flow_lib.FlowTable(flow_lib.FlowOptions(min_packets=1))
    table.add(batch(times, [100] * 4))
    (flow,) = table.flows()
    assert flow.ipt_counts == {9999: 1, 10000: 2}


@pytest.mark.parametrize('address', ['198.18.0.1', '2001:db8::2', '::1'])
def test_address_halves_invert_the_key_text(address):
    high, low = flow_lib.address_halves(address)
    assert flow_lib._address(high, low) == address
