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
"""The two attacks, the chi-square test and the truth file."""

import json
import math

import numpy as np
import pytest
from sklearn import base

from nova_stealth.analysis import audit
from nova_stealth.analysis import detectors
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import stats
from nova_stealth.analysis import truth


def flow(burst_starts=(), cvs=None, ipt=None, port=1, packets=10000):
    return flow_lib.FlowFeatures(
        key=flow_lib.FlowKey('tcp', '198.18.0.1', 40000, '198.18.0.2', port),
        packets=packets, bytes=packets * 1500, first_ns=0, last_ns=10 ** 9,
        window_cvs=cvs or {w: float('nan') for w in flow_lib.WINDOWS},
        ipt_counts=ipt or {1: 10}, burst_starts=np.asarray(burst_starts))


def test_regular_bursts_are_a_pattern():
    detector = detectors.PatternMatchingDetector().fit(None)
    regular = flow(np.arange(0, 10000, 290))
    counts = detector.pattern_counts([regular])
    assert counts[0] == 10
    assert detector.predict([regular]).tolist() == [True]
    assert detector.predict_proba([regular])[0, 1] == 1.0


def test_irregular_bursts_are_not():
    rng = np.random.default_rng(0)
    irregular = flow(np.cumsum(rng.integers(50, 600, 40)))
    detector = detectors.PatternMatchingDetector().fit(None)
    assert detector.pattern_counts([irregular])[0] == 0
    assert detector.predict([irregular]).tolist() == [False]


def test_a_window_needs_two_distances():
    # One burst per window: each window holds a single distance.
    detector = detectors.PatternMatchingDetector(window=1000).fit(None)
    assert detector.pattern_counts([flow(np.arange(0, 20000, 1000))]) == [0]
    assert detector.pattern_counts([flow([0, 5])]) == [0]


def test_pattern_count_threshold_is_strict():
    detector = detectors.PatternMatchingDetector(pattern_count=3).fit(None)
    four_windows = flow(np.arange(0, 4000, 250))
    three_windows = flow(np.arange(0, 3000, 250))
    assert detector.pattern_counts([four_windows, three_windows]).tolist() \
        == [4, 3]
    assert detector.predict([four_windows, three_windows]).tolist() == [
        True, False]
    proba = detector.predict_proba([four_windows, three_windows])[:, 1]
    assert proba[0] >= 0.5 > proba[1]


def test_estimator_api():
    detector = detectors.PatternMatchingDetector(window=500)
    clone = base.clone(detector)
    assert clone.get_params() == {'window': 500, 'delta': 0.05,
                                  'pattern_count': 3}
    assert detector.fit(None) is detector
    assert list(detector.classes_) == [False, True]
    with pytest.raises(ValueError):
        detectors.PatternMatchingDetector(window=1).fit(None)
    maxent = detectors.MaxEntDetector()
    assert base.clone(maxent).get_params()['windows'] == (1000, 2000, 3000)


def cv_flows(values, port0=0):
    return [flow(cvs={w: v for w in flow_lib.WINDOWS}, port=port0 + i)
            for i, v in enumerate(values)]


def test_maxent_learns_low_cv_means_migration():
    migrations = cv_flows([0.01, 0.02, 0.03, 0.015])
    others = cv_flows([0.4, 0.6, 0.8, 0.3, 0.9, 1.1], port0=100)
    detector = detectors.MaxEntDetector()
    assert detector.fit(migrations + others, [True] * 4 + [False] * 6) is (
        detector)
    assert detector.coef_.shape == (3,)
    assert np.all(detector.coef_ < 0)
    new = cv_flows([0.025, 0.7], port0=200)
    assert detector.predict(new).tolist() == [True, False]
    saved = json.loads(json.dumps(detector.to_dict()))
    again = detectors.detector_from_dict(saved)
    np.testing.assert_allclose(again.predict_proba(new),
                               detector.predict_proba(new))


def test_maxent_cannot_score_short_flows():
    detector = detectors.MaxEntDetector().fit(
        cv_flows([0.01, 0.02, 0.5, 0.7]), [True, True, False, False])
    short = flow()
    assert detector.scorable([short]).tolist() == [False]
    assert np.isnan(detector.predict_proba([short])[0, 1])
    assert detector.predict([short]).tolist() == [False]


def test_maxent_needs_both_classes():
    with pytest.raises(ValueError, match='both classes'):
        detectors.MaxEntDetector().fit(cv_flows([0.1, 0.2]), [True, True])


def test_bad_saved_models():
    with pytest.raises(ValueError, match='unknown detector kind'):
        detectors.detector_from_dict({'kind': 'magic'})
    with pytest.raises(ValueError, match='one finite coefficient'):
        detectors.detector_from_dict({
            'kind': 'maxent', 'windows': [1, 2, 3], 'threshold': 0.5,
            'C': 1.0, 'coef': [1.0], 'intercept': 0.0})


def test_chi_square_statistic_is_as_documented():
    # Worked by hand, with top=2 so that one category is dropped.
    # Shares per flow: a = 30/50, 10/50, 10/50 = (0.6, 0.2, 0.2);
    # b1 = 1/4, 3/4 = (0.25, 0.75, 0); b2 = 550, 50, 400 of 1000 =
    # (0.55, 0.05, 0.4); b's flows weigh the same: (0.4, 0.4, 0.2).
    # Combined 1.0, 0.6, 0.4: categories 1 and 2 are kept, renormalised to
    # 100: a = (75, 25), b = (50, 50). Rows 100, columns 125 and 75, total
    # 200: expected 62.5 and 37.5 in each row, so the statistic is
    # 2 * (12.5**2 / 62.5 + 12.5**2 / 37.5) = 40 / 3 with one degree of
    # freedom, whose p-value is erfc(sqrt(x / 2)).
    a = [flow(ipt={1: 30, 2: 10, 3: 10})]
    b = [flow(ipt={1: 1, 2: 3}), flow(ipt={1: 550, 2: 50, 3: 400})]
    result = stats.chi_square(a, b, top=2)
    assert result['categories_us'] == [1, 2]
    assert result['statistic'] == pytest.approx(40.0 / 3.0)
    assert result['dof'] == 1
    assert result['p_value'] == pytest.approx(
        math.erfc(math.sqrt(20.0 / 3.0)))
    assert result['distinguishable']
    assert result['flows'] == [1, 2]
    same = stats.chi_square(a, a)
    assert same['p_value'] == pytest.approx(1.0)
    assert not same['distinguishable']
    assert stats.chi_square([], a) is None


def test_chi_square_counts_shares_not_packets():
    # The same shapes, a thousand times the packets: the same statistic.
    a = [flow(ipt={1: 30, 2: 10})]
    b = [flow(ipt={1: 10, 2: 10})]
    many = [flow(ipt={1: 30000, 2: 10000})]
    # (75, 25) against (50, 50), as above.
    assert stats.chi_square(a, b)['statistic'] == pytest.approx(40.0 / 3.0)
    assert stats.chi_square(many, b)['statistic'] == pytest.approx(
        40.0 / 3.0)


def test_chi_square_keeps_the_ten_most_common_categories():
    wide = [flow(ipt={c: 100 - c for c in range(30)})]
    result = stats.chi_square(wide, wide)
    assert result['categories_us'] == list(range(10))


def test_average_distribution_weighs_flows_equally():
    shares = stats.average_ipt_distribution(
        [flow(ipt={1: 1000}), flow(ipt={2: 1})])
    assert shares == {1: 0.5, 2: 0.5}


def test_truth_file_round_trip_and_errors(tmp_path):
    key = flow_lib.FlowKey('tcp', '2001:db8::1', 40000, '2001:db8::2', 61001)
    path = str(tmp_path / 'truth.json')
    truth.dump(path, [(key, 'migration', 'paper')])
    labels = truth.load(path)
    assert labels == {key: ('migration', 'paper')}
    assert truth.label_of(key.reverse(), labels) == (truth.REVERSE, 'paper')
    other = flow_lib.FlowKey('tcp', '198.18.0.9', 1, '198.18.0.8', 2)
    assert truth.label_of(other, labels) == truth.UNLABELLED
    bad = [
        ({'flows': [{'proto': 'sctp'}]}, r'flows\[0\]\.proto'),
        ({'flows': [dict(key.as_dict(), label='video')]},
         r'flows\[0\]\.label'),
        ({'flows': [dict(key.as_dict(), src='nowhere', label='chaff')]},
         r'flows\[0\]\.src'),
        ({'flows': [dict(key.as_dict(), dport=70000, label='chaff')]},
         r'flows\[0\]\.dport'),
        ({'flow': []}, 'a "flows" list'),
    ]
    for content, message in bad:
        with open(path, 'w') as bad_file:
            json.dump(content, bad_file)
        with pytest.raises(truth.TruthError, match=message):
            truth.load(path)


def labelled_flows():
    """Six migration-like flows and ten others, with their labels."""
    migrations = cv_flows([0.01, 0.02, 0.03, 0.015, 0.02, 0.01])
    others = cv_flows([0.4, 0.6, 0.8, 0.3, 0.9, 1.1, 0.5, 0.7, 0.45, 0.65],
                      port0=100)
    labels = ([('migration', 'native')] * 6 +
              [('background', 'web')] * 10)
    return migrations + others, labels


def test_audit_scores_with_a_split():
    flows, labels = labelled_flows()
    report, fitted = audit.run(flows, labels, seed=1)
    name = detectors.maxent_name((1000, 2000, 3000))
    assert name in fitted
    summary = report['detectors'][name]
    assert summary['evaluated_on'] == 'test split'
    assert summary['migrations'] + summary['negatives'] == 4
    assert summary['detection_rate'] == 1.0
    assert summary['false_positive_rate'] == 0.0
    splits = [f['split'] for f in report['flows']]
    assert splits.count('test') == 4 and splits.count('train') == 12
    assert report['detectors']['pattern']['detection_rate'] == 0.0


def test_audit_without_enough_labels_explains_why():
    report, fitted = audit.run(cv_flows([0.01, 0.5]),
                               [('migration', 'x'), ('background', 'y')])
    assert list(fitted) == ['pattern']
    assert 'at least two migration' in report['notes'][0]


def test_audit_cross_validation_judges_every_labelled_flow():
    flows, labels = labelled_flows()
    report, fitted = audit.run(flows, labels, folds=3)
    name = detectors.maxent_name((100, 200, 300))
    summary = report['detectors'][name]
    assert summary['evaluated_on'] == '3-fold cross-validation'
    assert (summary['migrations'], summary['negatives']) == (6, 10)
    assert summary['detection_rate'] == 1.0
    assert summary['false_positive_rate'] == 0.0
    assert all(f['verdicts'][name] is not None for f in report['flows'])
    with pytest.raises(ValueError, match='3 folds need'):
        audit.cross_validated(flows[:2] + flows[6:], labels[:2] + labels[6:],
                              (100, 200, 300), 3)


def test_audit_counts_an_unscorable_migration_as_missed():
    # Three migrations, one too short for the detector's windows (NaN):
    # it is a migration the detector missed, not one left out.
    probabilities = [0.9, 0.8, float('nan'), 0.1, 0.2, float('nan')]
    flagged = [True, True, False, False, False, False]
    labels = ([('migration', 'paper')] * 3 +
              [('background', 'web'), ('chaff', ''), ('background', 'web')])
    found = audit.rates(probabilities, flagged, labels)
    assert (found['migrations'], found['negatives']) == (3, 3)
    assert found['unscored'] == 2
    assert found['detection_rate'] == pytest.approx(2 / 3)
    assert found['false_positive_rate'] == 0.0
    # The unscored migration ranks below every scored negative, the
    # unscored negative ties it: (2 * 3 + 0 + 0 + 0.5) / 9.
    assert found['auc'] == pytest.approx(6.5 / 9)
