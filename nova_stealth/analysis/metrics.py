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
"""How well an attacker separates migrations from background, with power.

ROC AUC with a 95% bootstrap confidence interval, and the true-positive
rate at a false-positive budget (1% and 2%: what an attacker can act on
when background flows outnumber migrations).
"""

import numpy as np
from sklearn import metrics

BUDGETS = (0.01, 0.02)
BOOTSTRAP = 1000
UNSCORED = -np.finfo(float).max


def _clean(labels, scores):
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    # A flow a detector cannot score is judged as the least suspicious
    # (a finite floor: scikit-learn refuses infinities).
    return labels, np.nan_to_num(scores, nan=UNSCORED, neginf=UNSCORED)


def auc(labels, scores):
    """ROC AUC (ties count a half); None without both classes."""
    labels, scores = _clean(labels, scores)
    if labels.all() or not labels.any():
        return None
    return float(metrics.roc_auc_score(labels, scores))


def auc_ci(labels, scores, samples=BOOTSTRAP, seed=0, level=0.95):
    """Percentile bootstrap interval of the AUC.

    Migrations and background flows are resampled apart (stratified), so
    every resample holds both classes in the original numbers.

    :returns: (low, high), or (None, None) without both classes
    """
    labels, scores = _clean(labels, scores)
    positive, negative = scores[labels], scores[~labels]
    if not len(positive) or not len(negative):
        return None, None
    rng = np.random.default_rng(seed)
    values = np.empty(samples)
    for number in range(samples):
        pos = rng.choice(positive, len(positive))
        neg = rng.choice(negative, len(negative))
        values[number] = _mann_whitney(pos, neg)
    tail = (1.0 - level) / 2.0
    return (float(np.quantile(values, tail)),
            float(np.quantile(values, 1.0 - tail)))


def _mann_whitney(positive, negative):
    """P(score of a migration > score of a background flow) + ties / 2."""
    negative = np.sort(negative)
    below = np.searchsorted(negative, positive, 'left')
    at_or_below = np.searchsorted(negative, positive, 'right')
    return float((below + at_or_below).sum() / 2.0 /
                 (len(positive) * len(negative)))


def operating_threshold(background, budget):
    """The lowest threshold that flags at most ``budget`` of ``background``.

    A flow is flagged when its score is at or above the threshold; NaN
    scores are never flagged.
    """
    scores = np.sort(np.nan_to_num(np.asarray(background, dtype=float),
                                   nan=UNSCORED, neginf=UNSCORED))
    if not len(scores):
        return -np.inf
    allowed = int(np.floor(budget * len(scores) + 1e-9))
    if allowed >= len(scores):
        return -np.inf
    return float(np.nextafter(scores[len(scores) - allowed - 1], np.inf))


def tpr_at_fpr(labels, scores, budget):
    """Share of migrations flagged at the threshold that spends ``budget``.

    With fewer than ``1 / budget`` background flows no background flow may
    be flagged: the rate is then at a false-positive rate of 0.

    :returns: (true-positive rate, false-positive rate reached), or
        (None, None) without both classes
    """
    labels, scores = _clean(labels, scores)
    if labels.all() or not labels.any():
        return None, None
    threshold = operating_threshold(scores[~labels], budget)
    flagged = scores >= threshold
    return float(flagged[labels].mean()), float(flagged[~labels].mean())


def summary(labels, scores, seed=0, samples=BOOTSTRAP):
    """AUC, its interval, and TPR at each of :data:`BUDGETS`, with counts."""
    labels = np.asarray(labels, dtype=bool)
    low, high = auc_ci(labels, scores, samples, seed)
    result = {'positives': int(labels.sum()),
              'negatives': int((~labels).sum()),
              'auc': auc(labels, scores), 'auc_ci': [low, high]}
    for budget in BUDGETS:
        tpr, fpr = tpr_at_fpr(labels, scores, budget)
        result['tpr_at_%g' % budget] = tpr
        result['fpr_at_%g' % budget] = fpr
    return result
