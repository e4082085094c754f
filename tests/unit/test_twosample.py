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
"""The classifier two-sample test and the MMD permutation test."""

import numpy as np
import pytest

from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import twosample
from tests.unit import test_battery


def test_classifier_test_rejects_a_real_difference():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(1, 1, 40), rng.normal(0, 1, 200)])
    labels = [True] * 40 + [False] * 200
    folds = rng.integers(0, 5, 240)
    found = twosample.classifier_test(labels, scores, folds,
                                      permutations=500)
    assert found['auc'] > 0.7
    # No permutation comes near: the smallest p-value 500 of them give.
    assert found['p_value'] == pytest.approx(1 / 501)


def test_classifier_test_keeps_the_null():
    rng = np.random.default_rng(1)
    p_values = []
    for _ in range(40):
        scores = rng.normal(0, 1, 120)
        labels = rng.uniform(size=120) < 0.25
        folds = rng.integers(0, 4, 120)
        p_values.append(twosample.classifier_test(
            labels, scores, folds, permutations=200,
            seed=len(p_values))['p_value'])
    # Under the null hypothesis p is uniform: about 5% below 0.05.
    assert np.mean(np.array(p_values) < 0.05) <= 0.15
    assert 0.3 < np.mean(p_values) < 0.7


def test_permutations_stay_within_folds():
    # Fold 0's model scores all its flows 0.5, fold 1's model all 0.1, and
    # only fold 0 holds migrations: a difference between the folds' models,
    # not between migrations and background. Permuted within folds, the
    # null reaches the observed AUC every time; permuted across folds it
    # would not, and would reject.
    scores = np.array([0.5] * 20 + [0.1] * 20)
    labels = np.array([True] * 10 + [False] * 30)
    folds = np.array([0] * 20 + [1] * 20)
    found = twosample.classifier_test(labels, scores, folds,
                                      permutations=100)
    assert found['auc'] == pytest.approx((10 * 0.5 + 20 * 1.0) / 30)
    assert found['p_value'] == 1.0


def test_mmd_tells_apart_and_not():
    rng = np.random.default_rng(2)
    same = twosample.mmd_test(rng.normal(0, 1, (30, 7)),
                              rng.normal(0, 1, (200, 7)), permutations=300)
    different = twosample.mmd_test(rng.normal(0.8, 1, (30, 7)),
                                   rng.normal(0, 1, (200, 7)),
                                   permutations=300)
    assert same['p_value'] > 0.05 and different['p_value'] < 0.01
    assert different['mmd2'] > same['mmd2']
    assert different['sizes'] == [30, 200]


def test_mmd_unbiased_statistic_by_hand():
    a = np.array([[0.0], [1.0], [3.0]])
    b = np.array([[0.5], [2.0]])
    found = twosample.mmd_test(a, b, permutations=10)
    h = found['bandwidth']

    def k(x, y):
        return np.exp(-((x - y) ** 2).sum() / (2 * h * h))

    aa = sum(k(x, y) for i, x in enumerate(a) for j, y in enumerate(a)
             if i != j) / 6
    bb = sum(k(x, y) for i, x in enumerate(b) for j, y in enumerate(b)
             if i != j) / 2
    ab = sum(k(x, y) for x in a for y in b) / 6
    assert found['mmd2'] == pytest.approx(aa + bb - 2 * ab)


def test_cv_vectors_take_logs_and_keep_gaps():
    cvs = {w: 0.1 for w in flow_lib.WINDOWS}
    cvs[3000] = float('nan')
    flow = test_battery.flow(np.zeros(test_battery.WIDTH))
    flow.window_cvs = cvs
    vectors = twosample.cv_vectors([flow], flow_lib.WINDOWS)
    assert vectors[0, 0] == pytest.approx(-1.0)
    assert np.isnan(vectors[0, -1])
    found = twosample.mmd_test(np.vstack([vectors] * 3),
                               np.vstack([vectors] * 3) + 0.5,
                               permutations=50)
    assert found is not None and np.isfinite(found['mmd2'])
