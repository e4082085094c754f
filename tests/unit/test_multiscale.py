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
"""Multi-scale flow features: streamed, bounded, and what they measure."""

import numpy as np
import pytest

from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import multiscale
from tests.unit import test_flows

NAMES = list(multiscale.FEATURE_NAMES)


def features(times, sizes, cuts=()):
    table = flow_lib.FlowTable(flow_lib.FlowOptions(min_packets=1,
                                                    multiscale=True))
    times, sizes = np.asarray(times, np.int64), np.asarray(sizes, np.int64)
    for part_t, part_s in zip(np.split(times, cuts), np.split(sizes, cuts)):
        table.add(test_flows.batch(part_t, part_s))
    (flow,) = table.flows()
    return flow


def value(flow, name):
    return flow.multiscale[NAMES.index(name)]


@pytest.mark.parametrize('seed', [0, 1])
def test_features_do_not_depend_on_batching(seed):
    rng = np.random.default_rng(seed)
    count = 30000
    times = np.sort(np.cumsum(rng.exponential(300000, count)).astype(
        np.int64))
    sizes = rng.integers(60, 1515, count)
    cuts = np.sort(rng.choice(np.arange(1, count), 60, replace=False))
    whole, pieces = features(times, sizes), features(times, sizes, cuts)
    np.testing.assert_allclose(whole.multiscale, pieces.multiscale,
                               rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(whole.segments, pieces.segments, rtol=1e-6,
                               equal_nan=True)
    assert whole.segments.shape == (15, len(NAMES))
    np.testing.assert_array_equal(whole.series_10ms, pieces.series_10ms)
    # The window CVs lead the vector, as the paper's windows define them.
    assert whole.multiscale[:7] == pytest.approx(
        [whole.window_cvs[w] for w in flow_lib.WINDOWS], nan_ok=True)


def test_a_steady_flow():
    # One 1,000-byte packet every 100 microseconds for 20 s: 80 Mbit/s.
    times = np.arange(200000) * 100000
    flow = features(times, [1000] * len(times))
    assert value(flow, 'allan_1ms') == pytest.approx(0.0, abs=1e-6)
    assert value(flow, 'vt_cv_2000ms') == pytest.approx(0.0, abs=1e-6)
    # Two 10 s blocks are too few to vary.
    assert np.isnan(value(flow, 'vt_cv_10000ms'))
    assert value(flow, 'on_share_1ms') == 1.0
    assert value(flow, 'ipt_q50_log_us') == pytest.approx(2.0, abs=0.05)
    assert value(flow, 'log_rate') == pytest.approx(7.0, abs=0.01)
    assert value(flow, 'duration_s') == pytest.approx(20.0, abs=0.01)
    assert value(flow, 'high_share_100ms') == 1.0
    assert value(flow, 'mean_size') == 1000


def test_bursts_every_100_ms():
    # QEMU's limiter: 40 packets at line rate, then silence, 10 times a
    # second for 10 s.
    bursts = np.arange(100) * 100000000
    times = (bursts[:, None] + np.arange(40) * 120000).ravel()
    flow = features(times, [1500] * len(times))
    assert value(flow, 'peak_10hz') > 2.0
    assert value(flow, 'on_mean_1ms') == pytest.approx(0.0048, abs=0.001)
    assert value(flow, 'off_mean_1ms') == pytest.approx(0.095, abs=0.002)
    # Periodic: no variation from one 100 ms block to the next.
    assert value(flow, 'allan_100ms') == pytest.approx(0.0, abs=1e-6)
    assert value(flow, 'allan_1ms') > 1.0


def test_a_random_flow_has_no_spectral_line():
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.exponential(500000, 40000)).astype(np.int64)
    flow = features(times, [1500] * len(times))
    assert abs(value(flow, 'peak_10hz')) < 0.5
    assert abs(value(flow, 'peak_100hz')) < 0.5


def test_memory_is_bounded():
    # 2 hours at one packet per 10 ms: the series stop at their caps, the
    # segments at twice MAX_SEGMENTS.
    times = np.arange(720000, dtype=np.int64) * 10000000
    table = flow_lib.FlowTable(flow_lib.FlowOptions(min_packets=1,
                                                    multiscale=True))
    for part in np.array_split(times, 100):
        table.add(test_flows.batch(part, [100] * len(part)))
    (state,) = table.states.values()
    for series, (_bin, cap) in zip(state.track.scales.series,
                                   multiscale.SERIES):
        assert cap - 10 <= len(series) <= cap
    assert len(state.track.segments) < 2 * flow_lib.MAX_SEGMENTS
    (flow,) = table.flows()
    assert flow.duration == pytest.approx(7200, abs=0.1)
    assert value(flow, 'duration_s') == pytest.approx(7200, abs=0.1)


def test_ipt_quantiles_from_the_histogram():
    hist = np.zeros(len(multiscale.IPT_EDGES_US) + 1, np.int64)
    # All gaps in [100, 112.2) microseconds: bin 41 (1 + 2 decades x 20).
    hist[41] = 100
    quantiles = multiscale.ipt_quantiles(hist)
    assert all(2.0 <= q <= 2.05 for q in quantiles)
    assert quantiles == sorted(quantiles)
