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
"""ROC AUC, its bootstrap interval and TPR at a false-positive budget."""

import numpy as np
import pytest

from nova_stealth.analysis import metrics


def pairs_auc(positive, negative):
    """The AUC by its definition: pairs ranked right, ties a half."""
    wins = 0.0
    for p in positive:
        for n in negative:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positive) * len(negative))


def test_auc_is_the_share_of_pairs_ranked_right():
    positive = [0.9, 0.8, 0.4, 0.4]
    negative = [0.1, 0.4, 0.5, 0.3, 0.2]
    labels = [True] * 4 + [False] * 5
    # 17 of the 20 pairs right, two ties at 0.4: (16 + 2 / 2) / 20.
    assert pairs_auc(positive, negative) == pytest.approx(17 / 20)
    assert metrics.auc(labels, positive + negative) == pytest.approx(0.85)


def test_bootstrap_interval_by_hand():
    rng = np.random.default_rng(5)
    positive = rng.normal(1.0, 1.0, 15)
    negative = rng.normal(0.0, 1.0, 40)
    labels = [True] * 15 + [False] * 40
    low, high = metrics.auc_ci(labels, np.concatenate([positive, negative]),
                               samples=200, seed=3)
    # The same resamples, drawn and scored plainly.
    draw = np.random.default_rng(3)
    values = []
    for _ in range(200):
        pos = draw.choice(positive, len(positive))
        neg = draw.choice(negative, len(negative))
        values.append(pairs_auc(pos, neg))
    assert low == pytest.approx(np.quantile(values, 0.025))
    assert high == pytest.approx(np.quantile(values, 0.975))
    assert low < metrics.auc(labels, np.concatenate([positive,
                                                     negative])) < high


def test_interval_narrows_with_more_flows():
    rng = np.random.default_rng(0)

    def width(n):
        scores = np.concatenate([rng.normal(1, 1, n), rng.normal(0, 1, n)])
        low, high = metrics.auc_ci([True] * n + [False] * n, scores,
                                   samples=300)
        return high - low

    assert width(400) < width(25) / 2


def test_tpr_at_a_budget():
    # 200 background flows: 2% is 4 of them, 1% is 2.
    background = list(np.linspace(0.0, 0.5, 196)) + [0.9, 0.8, 0.7, 0.6]
    migrations = [0.95, 0.85, 0.75, 0.65, 0.55, 0.3]
    labels = [True] * 6 + [False] * 200
    scores = migrations + background
    tpr, fpr = metrics.tpr_at_fpr(labels, scores, 0.02)
    # Flags above 0.5 (the highest of the 196): four background flows.
    assert (tpr, fpr) == (5 / 6, 4 / 200)
    tpr, fpr = metrics.tpr_at_fpr(labels, scores, 0.01)
    # Flags above 0.7: background 0.9 and 0.8; migrations 0.95, 0.85, 0.75.
    assert (tpr, fpr) == (3 / 6, 2 / 200)


def test_too_few_background_flows_allow_no_false_positive():
    tpr, fpr = metrics.tpr_at_fpr([True, True, False, False],
                                  [0.9, 0.4, 0.5, 0.1], 0.02)
    assert (tpr, fpr) == (0.5, 0.0)


def test_unscored_flows_are_least_suspicious():
    labels = [True, True, False, False]
    scores = [float('nan'), 0.9, 0.1, 0.2]
    assert metrics.auc(labels, scores) == pytest.approx(0.5)
    summary = metrics.summary(labels, scores, samples=50)
    assert summary['positives'] == 2 and summary['negatives'] == 2
    assert summary['tpr_at_0.02'] == 0.5


def test_one_class_gives_nothing():
    assert metrics.auc([True, True], [0.1, 0.2]) is None
    assert metrics.auc_ci([False], [0.1]) == (None, None)
    assert metrics.tpr_at_fpr([False, False], [0.1, 0.2], 0.01) == (
        None, None)
