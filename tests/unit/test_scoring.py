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
"""The MaxEnt attacker's operating point."""

from hypothesis import given
from hypothesis import strategies as st
import numpy as np

from nova_stealth.testbed import scoring

# At least 100 flows: enough to measure any budget from 1%.
PROBABILITIES = st.lists(st.floats(0.0, 1.0), min_size=100, max_size=500)


@given(PROBABILITIES, st.floats(0.01, 0.2))
def test_spends_at_most_the_budget(background, budget):
    threshold = scoring.operating_threshold(background, budget)
    flagged = int((np.asarray(background) >= threshold).sum())
    assert flagged <= budget * len(background)


@given(st.lists(st.floats(0.0, 1.0), min_size=100, max_size=500,
                unique=True),
       st.floats(0.01, 0.2))
def test_is_the_lowest_such_threshold(background, budget):
    threshold = scoring.operating_threshold(background, budget)
    below = [p for p in background if p < threshold]
    if below:
        # Flagging the next lower score as well would exceed the budget.
        flagged = int((np.asarray(background) >= max(below)).sum())
        assert flagged > budget * len(background)


def test_imbalanced_classes_are_still_caught():
    # 20 migrations scored 0.3 (a 0.5 threshold flags none) above 1,000
    # background flows scored below 0.3, but for 10 of them.
    background = [0.01] * 990 + [0.9] * 10
    threshold = scoring.operating_threshold(background)
    assert threshold <= 0.3
    assert int((np.asarray(background) >= threshold).sum()) == 10


def flagged(background, threshold):
    return int(scoring._verdicts(background, threshold).sum())


def test_too_few_background_flows_keep_the_models_threshold():
    # 49 flows at 2%: less than one flow's worth of budget.
    assert scoring.operating_threshold([0.1] * 48 + [0.2]) == 0.5


def test_fifty_flows_measure_a_two_percent_budget():
    # 50 * 2% is exactly one flow: the highest is flagged, no other.
    background = [0.1] * 49 + [0.2]
    threshold = scoring.operating_threshold(background)
    assert 0.1 < threshold <= 0.2
    assert flagged(background, threshold) == 1


def test_the_budget_rounds_down_to_whole_flows():
    # 149 * 2% = 2.98 flows: two may be flagged, not three.
    background = [0.1] * 146 + [0.5, 0.6, 0.7]
    threshold = scoring.operating_threshold(background)
    assert 0.5 < threshold <= 0.6
    assert flagged(background, threshold) == 2


def test_flows_tied_above_the_budget_are_none_flagged():
    # Two of 100 may be flagged; three share the highest score.
    background = [0.1] * 97 + [0.7] * 3
    threshold = scoring.operating_threshold(background)
    assert threshold > 0.7
    assert flagged(background, threshold) == 0


def test_a_score_at_the_threshold_is_flagged():
    verdicts = scoring._verdicts([0.5, np.nextafter(0.5, 0.0), np.nan], 0.5)
    assert verdicts.tolist() == [True, False, False]


def _run(name, mode, seconds, downtime, matched_for=None):
    return {'name': name, 'mode': mode, 'load': 'S', 'guest': 'ram',
            'memory_mib': 48, 'index': 0, 'total_time_s': seconds,
            'transferred_bytes': 48 << 20, 'downtime_ms': downtime,
            'chaff_bytes': 0, 'matched_for': matched_for}


def test_costs_prefer_the_native_run_at_the_stealthed_rate():
    stealthed = _run('S-ram-paper-0', 'stealth', 10.0, 30.0)
    closest = _run('S-ram-native4-0', 'native', 10.5, 5.0)
    matched = _run('S-ram-native-matched-paper-0', 'native', 8.0, 10.0,
                   matched_for='S-ram-paper-0')
    scoring.costs([stealthed, closest, matched])
    assert stealthed['baseline'] == 'matched'
    assert stealthed['native_reference'] == matched['name']
    assert stealthed['time_ratio'] == 10.0 / 8.0
    assert stealthed['downtime_delta_ms'] == 20.0
    alone = _run('S-ram-paper-0', 'stealth', 10.0, 30.0)
    scoring.costs([alone, closest])
    assert alone['baseline'] == 'closest'
    assert alone['native_reference'] == closest['name']


def flow_tells(prefix='tls-handshake', hello='t13i291200_x_y', ending='fin',
               port='dynamic', server_port=61500, co_timing=0):
    return {'payload_prefix': prefix, 'tls_client_hello': hello,
            'ending': ending, 'port_range': port, 'server_port': server_port,
            'co_timing': co_timing}


def test_tells_pooled_and_per_load():
    background = [(flow_tells(hello='t13d1516h2_a_b', port='registered',
                              server_port=18080), 'background', load)
                  for load in 'SM' for _ in range(100)]
    migrations = [(flow_tells(port='libvirt', server_port=49152),
                   'migration', load) for load in 'SM' for _ in range(3)]
    chaff = [(flow_tells(ending='rst' if load == 'M' else 'fin'), 'chaff',
              load) for load in 'SM' for _ in range(10)]
    found = scoring.tells_by_load(background + migrations + chaff)
    assert sorted(found['per_load']) == ['M', 'S']
    hello = found['pooled']['tls_client_hello']['operating_point']
    # The hello no background flow sends gives both away.
    assert hello['migration']['tpr'] == 1.0 and hello['chaff']['tpr'] == 1.0
    ending = found['per_load']['S']['ending']['operating_point']
    assert ending['chaff']['tpr'] == 0.0
    ending = found['per_load']['M']['ending']['operating_point']
    assert ending['chaff']['tpr'] == 1.0


def test_no_tells_without_payload():
    assert scoring.tells_by_load(
        [(flow_tells(prefix='none'), 'background', 'S'),
         (None, 'migration', 'S')]) is None
