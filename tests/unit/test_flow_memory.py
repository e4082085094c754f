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
"""The flow table's memory: short flows stay small, dead ones go."""

import tracemalloc

import numpy as np
import pytest

from nova_stealth.analysis import capture
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.cmd import audit as audit_cmd

START = 1700000000 * 10 ** 9


def batch(flow_ids, times_ns, size=1514):
    """TCP packets of flows told apart by their source address."""
    n = len(flow_ids)
    ones = np.ones(n, dtype=np.uint64)
    return capture.PacketBatch(
        time_ns=np.asarray(times_ns, dtype=np.int64),
        wire_len=np.full(n, size, np.int64),
        version=np.full(n, 4, np.uint8), proto=np.full(n, 6, np.uint8),
        src_hi=0 * ones,
        src_lo=np.uint64(0xFFFFC6120000) + np.asarray(flow_ids, np.uint64),
        dst_hi=0 * ones, dst_lo=ones * np.uint64(0xFFFFC6130001),
        sport=np.full(n, 40000, np.uint16), dport=np.full(n, 61000,
                                                          np.uint16))


def options(**kwargs):
    chosen = flow_lib.FlowOptions(min_packets=kwargs.pop('min_packets', 1))
    for name, value in kwargs.items():
        setattr(chosen, name, value)
    return chosen


def signature(found):
    return [(str(f.key), f.packets, f.bytes, f.first_ns, f.last_ns,
             f.burst_starts.tolist(), sorted(f.ipt_counts.items()),
             [round(f.window_cvs[w], 12) for w in flow_lib.WINDOWS])
            for f in found]


def test_short_flows_are_promoted_with_the_same_features():
    """Flows below, at and above the promotion size, fed in pieces."""
    rng = np.random.default_rng(3)
    sizes = [1, 2, flow_lib.PROMOTE_PACKETS - 1, flow_lib.PROMOTE_PACKETS,
             flow_lib.PROMOTE_PACKETS + 1, 700, 7000]
    ids = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    ids = rng.permutation(ids)
    times = START + np.cumsum(rng.exponential(3e6, len(ids))).astype(
        np.int64)
    cuts = np.sort(rng.choice(np.arange(1, len(ids)), 30, replace=False))
    pieces = flow_lib.FlowTable(options(idle_timeout=0))
    for part_ids, part_times in zip(np.split(ids, cuts),
                                    np.split(times, cuts)):
        pieces.add(batch(part_ids, part_times))
    # The reference: each flow's full state from its first packet.
    reference = []
    for flow in range(len(sizes)):
        state = flow_lib._FlowState(int(times[ids == flow][0]))
        state.update(times[ids == flow], np.full(sizes[flow], 1514),
                     int(0.02e9))
        reference.append((state.packets, state.first_ns, state.last_ns,
                          np.frombuffer(state.burst_starts,
                                        np.int64).tolist(),
                          sorted(state.ipt_counts.items())))
    found = pieces.flows()
    assert [f.packets for f in found] == sizes
    assert [(f.packets, f.first_ns, f.last_ns, f.burst_starts.tolist(),
             sorted(f.ipt_counts.items())) for f in found] == reference
    assert found[-1].window_cvs[100] > 0


def test_flows_that_cannot_qualify_are_forgotten():
    """2-packet flows a second apart, 500 new ones a second, 100 s."""
    table = flow_lib.FlowTable(options(min_packets=1000, idle_timeout=10))
    per_batch = 5000
    for second in range(0, 100, 10):
        ids = np.arange(per_batch) + second * 500
        first = START + second * 10 ** 9 + np.arange(per_batch) * 2000000
        both = np.concatenate([ids, ids])
        stamps = np.concatenate([first, first + 10 ** 9])
        order = np.argsort(stamps, kind='stable')
        table.add(batch(both[order], stamps[order]))
    held = len(table.pending) + len(table.states)
    # At most the flows of one idle timeout, a quarter of one between
    # sweeps and a batch: not all 50,000.
    assert held <= 500 * (10 + 2.5 + 10)
    assert table.evicted == 50000 - held
    assert table.flows() == []


def test_idle_flows_that_qualify_are_kept():
    table = flow_lib.FlowTable(options(min_packets=100, idle_timeout=10))
    table.add(batch(np.zeros(150), START + np.arange(150) * 10 ** 6))
    for second in range(1, 60):
        table.add(batch(np.ones(10) * second,
                        START + second * 10 ** 9 + np.arange(10)))
    (flow,) = table.flows()
    assert flow.packets == 150


def test_a_flow_silent_past_the_timeout_starts_anew():
    """The documented price of eviction: like a NetFlow idle timeout."""
    def run(timeout):
        table = flow_lib.FlowTable(options(min_packets=15,
                                           idle_timeout=timeout))
        table.add(batch(np.zeros(10), START + np.arange(10)))
        # Other traffic moves the capture's clock on past the timeout.
        table.add(batch(np.ones(5), START + 200 * 10 ** 9 + np.arange(5)))
        table.add(batch(np.zeros(10), START + 201 * 10 ** 9 +
                        np.arange(10)))
        return [f.packets for f in table.flows()]

    assert run(0) == [20]
    assert run(120) == []


def test_memory_per_short_flow():
    """20,000 flows of 2 packets: a few hundred bytes each, not 3.8 KB."""
    ids = np.repeat(np.arange(20000), 2)
    times = START + np.arange(len(ids)) * 1000
    tracemalloc.start()
    try:
        table = flow_lib.FlowTable(options(min_packets=1000,
                                           idle_timeout=0))
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, len(ids), 10000):
            table.add(batch(ids[start:start + 10000],
                            times[start:start + 10000]))
        per_flow = (tracemalloc.get_traced_memory()[0] - before) / 20000
    finally:
        tracemalloc.stop()
    assert len(table.pending) == 20000
    assert per_flow < 600, per_flow


def test_memory_per_long_flow_per_batch():
    """Long flows gain nothing per batch but their bursts' 8 bytes.

    Nothing, that is, beyond the bounded multi-scale series.
    """
    flows = 500
    table = flow_lib.FlowTable(options(idle_timeout=0))
    marks, bursts, series = [], [], []
    now = START
    tracemalloc.start()
    try:
        for _ in range(14):
            ids = np.tile(np.arange(flows), 10)
            # 30 ms between a flow's packets: each one starts a burst.
            times = now + np.arange(len(ids)) * 60000
            now = int(times[-1]) + 60000
            table.add(batch(ids, times))
            marks.append(tracemalloc.get_traced_memory()[0])
            bursts.append(sum(len(s.burst_starts)
                              for s in table.states.values()))
            series.append(sum(s.series_bytes()
                              for s in table.states.values()))
    finally:
        tracemalloc.stop()
    # Every flow has its full state from the 7th batch (64 packets) on.
    assert len(table.states) == flows
    # The multi-scale series grow with the flow's time up to their caps
    # (test_multiscale.test_memory_is_bounded): counted apart.
    growth = (marks[-1] - marks[8] - (series[-1] - series[8])) / flows / 5
    per_burst = 8 * (bursts[-1] - bursts[8]) / flows / 5
    assert per_burst == 80
    assert growth < per_burst + 40, growth


def test_the_audit_takes_the_idle_timeout():
    assert audit_cmd.parse_args(['c.pcap', '--out', 'o']).idle_timeout == (
        flow_lib.FlowOptions().idle_timeout)
    assert audit_cmd.parse_args(['c.pcap', '--out', 'o', '--idle-timeout',
                                 '0']).idle_timeout == 0
    with pytest.raises(SystemExit):
        audit_cmd.parse_args(['c.pcap', '--out', 'o', '--idle-timeout',
                              '-1'])
