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
"""The multi-scale state: only when asked for, only for flows that qualify.
"""

import numpy as np
import pytest

from nova_stealth.analysis import battery
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.cmd import audit as audit_cmd
from tests.unit import test_flow_memory

#: Packets of each flow: below and at a 1,000-packet minimum, above it,
#: and above MAX_HELD_PACKETS.
SIZES = (40, 300, 999, 1000, 1001, 2500, 9000)


def table_of(**kwargs):
    """Interleaved flows of SIZES packets, in batches of random sizes."""
    rng = np.random.default_rng(5)
    ids = np.concatenate([np.full(n, i) for i, n in enumerate(SIZES)])
    ids = ids[rng.permutation(len(ids))]
    gaps = rng.exponential(400000, len(ids))
    gaps[rng.random(len(ids)) < 0.01] += 50e6
    times = test_flow_memory.START + np.cumsum(gaps).astype(np.int64)
    sizes = rng.integers(60, 1515, len(ids))
    table = flow_lib.FlowTable(test_flow_memory.options(**kwargs))
    cuts = np.sort(rng.choice(np.arange(1, len(ids)), 150, replace=False))
    for part in np.split(np.arange(len(ids)), cuts):
        chosen = test_flow_memory.batch(ids[part], times[part])
        chosen.wire_len[:] = sizes[part]
        table.add(chosen)
    return table


def signature(found):
    return [(str(f.key), f.packets, f.bytes, f.first_ns, f.last_ns,
             f.burst_starts.tolist(), sorted(f.ipt_counts.items()),
             [None if np.isnan(f.window_cvs[w]) else f.window_cvs[w]
              for w in flow_lib.WINDOWS]) for f in found]


def by_packets(found):
    return {f.packets: f for f in found}


@pytest.mark.parametrize('minimum', [1000, 5000])
def test_late_multiscale_state_is_the_same_to_the_bit(minimum):
    # min_packets=1 builds the state from the promotion on, as before the
    # state waited for min_packets; 5,000 waits for MAX_HELD_PACKETS.
    early = by_packets(table_of(min_packets=1, multiscale=True).flows())
    late = table_of(min_packets=minimum, multiscale=True)
    found = by_packets(late.flows())
    assert sorted(found) == [n for n in SIZES if n >= minimum]
    for packets, flow in found.items():
        for name in ('multiscale', 'segments', 'series_10ms'):
            np.testing.assert_array_equal(getattr(flow, name),
                                          getattr(early[packets], name))
    assert found[9000].segments.shape == (5, flow.multiscale.size)
    # The flows that never qualified never built it.
    waiting = [s for s in late.states.values() if s.packets < minimum]
    assert waiting and all(s.track is None for s in waiting)
    held = min(minimum, flow_lib.MAX_HELD_PACKETS)
    assert all(s.series_bytes() <= 24 * held for s in waiting)


def test_without_the_option_nothing_multiscale_is_kept():
    plain = table_of(min_packets=1)
    assert all(s.track is None and s.held is None and
               s.series_bytes() == 0 for s in plain.states.values())
    found = plain.flows()
    assert all(f.multiscale is None and f.segments is None and
               f.series_10ms is None for f in found)
    # The rest is what the multi-scale run computes, to the bit.
    full = table_of(min_packets=1, multiscale=True).flows()
    assert signature(found) == signature(full)


def test_the_battery_needs_the_multiscale_state():
    found = table_of(min_packets=1000).flows()
    samples = [battery.Sample(f, 'migration' if i % 2 else 'background',
                              'native', 'native' if i % 2 else None,
                              'run-%d' % i, 'all')
               for i, f in enumerate(found)]
    with pytest.raises(ValueError, match='gbm need the multi-scale'):
        battery.run(samples, factories={
            'gbm': battery.attackers(cnn=False)['gbm']})


def test_the_audit_computes_it_only_for_those_attackers():
    def needed(*argv):
        args = audit_cmd.parse_args(['c.pcap', '--out', 'o'] + list(argv))
        return audit_cmd.multiscale_needed(args)

    assert not needed()
    assert not needed('--attackers', 'gbm')
    assert needed('--truth', 't.json')
    assert needed('--truth', 't.json', '--attackers', 'pattern,gbm-segments')
    assert not needed('--truth', 't.json', '--attackers',
                      'pattern,maxent-100-500-1000')
    assert not needed('--truth', 't.json', '--attackers', 'none')
    parsed = audit_cmd.parse_args(['c.pcap', '--out', 'o', '--attackers',
                                   'gbm,pattern'])
    assert parsed.attackers == ['pattern', 'gbm']


@pytest.mark.parametrize('value', ['svm', 'gbm,svm', ',', 'none,gbm'])
def test_unknown_attackers_stop_the_audit(value, capsys):
    with pytest.raises(SystemExit):
        audit_cmd.parse_args(['c.pcap', '--out', 'o', '--attackers', value])
    error = capsys.readouterr().err
    assert 'argument --attackers' in error and 'choose from' in error
