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
"""The battery's grouped cross-validation and the boosted detector."""

import json

import numpy as np
import pytest
from sklearn import base
from sklearn import model_selection

from nova_stealth.analysis import battery
from nova_stealth.analysis import boosting
from nova_stealth.analysis import detectors
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import metrics
from nova_stealth.analysis import multiscale

WIDTH = len(multiscale.FEATURE_NAMES)


def flow(vector, segments=None, port=1):
    vector = np.asarray(vector, dtype=float)
    return flow_lib.FlowFeatures(
        key=flow_lib.FlowKey('tcp', '198.18.0.1', 40000, '198.18.0.2', port),
        packets=10000, bytes=15000000, first_ns=0, last_ns=10 ** 9,
        window_cvs={w: float('nan') for w in flow_lib.WINDOWS},
        ipt_counts={1: 10}, burst_starts=np.zeros(0),
        multiscale=vector,
        segments=(vector[np.newaxis, :] if segments is None
                  else np.asarray(segments, dtype=float)))


def run_signature_samples(seed=0, runs=20, per_run=6):
    """Flows that say which run they are from, and nothing else.

    Half of the runs hold only migrations, half only background: a model
    that has seen a run knows its label; one that has not can only guess.
    """
    rng = np.random.default_rng(seed)
    samples = []
    for run in range(runs):
        signature = rng.normal(0, 1, WIDTH)
        label = 'migration' if run % 2 else 'background'
        for number in range(per_run):
            samples.append(battery.Sample(
                flow(signature + rng.normal(0, 0.01, WIDTH),
                     port=run * 100 + number), label, 'x',
                'native' if label == 'migration' else None, 'run-%d' % run,
                'S'))
    return samples


def judge(samples, splitter):
    positive = [s.label == 'migration' for s in samples]
    scores = battery.out_of_fold(
        lambda: boosting.GradientBoostingDetector(max_iter=30), samples,
        positive, [True] * len(samples), folds=5, splitter=splitter)
    return metrics.auc(positive, scores)


def test_grouped_folds_never_judge_a_trained_run():
    samples = run_signature_samples()
    # Judged only on runs it never saw, the model cannot tell.
    assert judge(samples, model_selection.StratifiedGroupKFold) < 0.8


def test_without_grouping_the_run_leaks():
    samples = run_signature_samples()
    with pytest.raises(AssertionError, match='both trained on and judged'):
        judge(samples, model_selection.StratifiedKFold)
    # What the leak would have reported, had it not been caught.
    y = np.array([s.label == 'migration' for s in samples])
    scores = np.zeros(len(samples))
    split = model_selection.StratifiedKFold(5, shuffle=True, random_state=0)
    flows = [s.flow for s in samples]
    for train, test in split.split(flows, y):
        model = boosting.GradientBoostingDetector(max_iter=30).fit(
            [flows[i] for i in train], y[train])
        scores[test] = model.predict_proba([flows[i] for i in test])[:, 1]
    assert metrics.auc(y, scores) > 0.95


def test_too_few_runs_say_so():
    samples = run_signature_samples(runs=3)
    with pytest.raises(ValueError, match='at least two runs'):
        battery.grouped_folds([s.label == 'migration' for s in samples],
                              [s.run for s in samples])


def separable(seed=0, count=40):
    rng = np.random.default_rng(seed)
    migrations = [flow(rng.normal(1, 0.5, WIDTH), port=i)
                  for i in range(count)]
    others = [flow(rng.normal(0, 0.5, WIDTH), port=1000 + i)
              for i in range(3 * count)]
    for other in others[:10]:
        other.multiscale[3] = np.nan
    return migrations + others, [True] * count + [False] * (3 * count)


def test_boosted_detector_is_an_estimator():
    flows, y = separable()
    detector = boosting.GradientBoostingDetector(max_iter=50)
    assert base.clone(detector).get_params() == detector.get_params()
    assert detector.fit(flows, y) is detector
    probabilities = detector.predict_proba(flows)
    assert probabilities.shape == (len(flows), 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert metrics.auc(y, probabilities[:, 1]) > 0.99
    assert hasattr(detector, 'model_') and hasattr(detector, 'classes_')


@pytest.mark.parametrize('segments', [False, True])
def test_boosted_detector_round_trips_through_json(segments):
    flows, y = separable(1)
    detector = boosting.GradientBoostingDetector(
        segments=segments, max_iter=40).fit(flows[::2], y[::2])
    saved = json.loads(json.dumps(detector.to_dict()))
    loaded = detectors.detector_from_dict(saved)
    assert isinstance(loaded, boosting.GradientBoostingDetector)
    np.testing.assert_allclose(loaded.predict_proba(flows[1::2]),
                               detector.predict_proba(flows[1::2]),
                               atol=1e-12)


def test_a_tampered_model_is_refused():
    flows, y = separable(2)
    saved = boosting.GradientBoostingDetector(max_iter=20).fit(
        flows, y).to_dict()
    saved['labels'] = [not v for v in saved['labels']]
    with pytest.raises(ValueError, match='does not give the saved scores'):
        boosting.GradientBoostingDetector.from_dict(saved)
    saved['features'] = saved['features'][:-1]
    with pytest.raises(ValueError, match='other features'):
        boosting.GradientBoostingDetector.from_dict(saved)


def test_segments_flag_a_flow_by_its_worst_segment():
    flows, y = separable(3)
    detector = boosting.GradientBoostingDetector(
        segments=True, max_iter=50).fit(flows, y)
    rng = np.random.default_rng(9)
    quiet = [rng.normal(0, 0.5, WIDTH) for _ in range(9)]
    loud = rng.normal(1, 0.5, WIDTH)
    hiding = flow(np.mean(quiet + [loud], axis=0), quiet + [loud])
    innocent = flow(np.mean(quiet, axis=0), quiet)
    scores = detector.predict_proba([hiding, innocent])[:, 1]
    assert scores[0] > 0.5 > scores[1]


def test_battery_judges_both_ways_trained():
    rng = np.random.default_rng(4)
    samples = []
    for run in range(12):
        mode = ('native', 'paper', 'paper')[run % 3]
        centre = {'native': 4.0, 'paper': 2.0}[mode]
        samples.append(battery.Sample(
            flow(rng.normal(centre, 0.3, WIDTH), port=run), 'migration',
            mode, mode, 'run-%d' % run, 'SM'[run % 2]))
        for number in range(8):
            samples.append(battery.Sample(
                flow(rng.normal(0, 0.3, WIDTH), port=100 * run + number),
                'background', 'web', mode, 'run-%d' % run, 'SM'[run % 2]))
    factories = {'gbm': lambda: boosting.GradientBoostingDetector(
        max_iter=30)}
    found = battery.run(samples, factories=factories, samples_ci=100)
    rows = {(r['trained_on'], r['mode'], r['load']): r
            for r in found['results']}
    assert set(rows) == {(t, m, load) for t, m in [
        ('native', 'native'), ('native', 'paper'), ('paper', 'paper')]
        for load in ('all', 'S', 'M')}
    pooled = rows[('paper', 'paper', 'all')]
    assert (pooled['positives'], pooled['negatives']) == (8, 96)
    assert pooled['auc'] == 1.0 and pooled['tpr_at_0.01'] == 1.0
    assert pooled['auc_ci'][0] <= pooled['auc'] <= pooled['auc_ci'][1]
    assert rows[('native', 'native', 'S')]['positives'] == 2
