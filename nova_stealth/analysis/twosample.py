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
"""Two-sample tests: are migrations and background flows one population?

* the classifier two-sample test (Lopez-Paz and Oquab, ICLR 2017): the
  held-out ROC AUC of an attacker, with a permutation p-value. Each flow's
  score comes from a model trained without its fold, so under the null
  hypothesis the labels of a fold are exchangeable given the scores:
  they are permuted within each fold;
* the MMD permutation test (Gretton et al., JMLR 2012) on the vector of
  throughput CVs per paper window: unbiased MMD^2 with a Gaussian kernel
  whose width is the median distance between the pooled vectors.
"""

import numpy as np
from scipy import stats

from nova_stealth.analysis import metrics

PERMUTATIONS = 1000
MAX_SIZE = 1000


def _p_value(observed, null):
    """(1 + permutations at least as extreme) / (1 + permutations)."""
    return float((1 + np.sum(np.asarray(null) >= observed - 1e-12)) /
                 (1 + len(null)))


def classifier_test(labels, scores, folds, permutations=PERMUTATIONS,
                    seed=0):
    """Held-out AUC and its permutation p-value.

    :param labels: True for a migration, per judged flow
    :param scores: out-of-fold scores of those flows
    :param folds: the fold that judged each flow
    :returns: {'auc', 'p_value', 'permutations'}, or None without both
        classes
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    folds = np.asarray(folds)
    observed = metrics.auc(labels, scores)
    if observed is None:
        return None
    # The AUC from ranks (ties averaged), so each permutation costs a sum.
    ranks = stats.rankdata(np.nan_to_num(scores, nan=metrics.UNSCORED))
    m = labels.sum()
    n = len(labels) - m
    offset = m * (m + 1) / 2.0
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(folds == f) for f in np.unique(folds)]
    null = np.empty(permutations)
    shuffled = labels.copy()
    for number in range(permutations):
        for members in groups:
            shuffled[members] = rng.permutation(labels[members])
        null[number] = (ranks[shuffled].sum() - offset) / (m * n)
    return {'auc': observed, 'p_value': _p_value(observed, null),
            'permutations': permutations}


def cv_vectors(flows, windows):
    """log10 of each flow's throughput CV per window; NaN where undefined."""
    values = np.array([[flow.window_cvs[w] for w in windows]
                       for flow in flows], dtype=float)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.log10(np.where(values > 0, values, np.nan)).reshape(
            -1, len(windows))


def _mmd2(kernel, first, total):
    """Unbiased MMD^2 of the rows ``first`` against the others.

    The kernel's diagonal is 1 (Gaussian); ``total`` is its sum.
    """
    weights = first.astype(float)
    m = weights.sum()
    n = len(weights) - m
    product = kernel @ weights
    within_a = weights @ product
    between = product.sum() - within_a
    within_b = total - within_a - 2.0 * between
    return float((within_a - m) / (m * (m - 1)) +
                 (within_b - n) / (n * (n - 1)) - 2.0 * between / (m * n))


def mmd_test(group_a, group_b, permutations=PERMUTATIONS, seed=0,
             max_size=MAX_SIZE):
    """MMD permutation test between two sets of feature vectors.

    A window undefined for a flow (too few packets) takes the pooled median
    of that window; a window undefined for every flow is left out. A group
    larger than ``max_size`` is subsampled to it (seeded), which keeps the
    kernel matrix small.

    :returns: {'mmd2', 'p_value', 'bandwidth', 'permutations', 'sizes'},
        or None when a group has fewer than two vectors
    """
    a, b = np.asarray(group_a, float), np.asarray(group_b, float)
    if len(a) < 2 or len(b) < 2:
        return None
    rng = np.random.default_rng(seed)
    if len(a) > max_size:
        a = a[rng.choice(len(a), max_size, replace=False)]
    if len(b) > max_size:
        b = b[rng.choice(len(b), max_size, replace=False)]
    pooled = np.vstack([a, b])
    defined = ~np.isnan(pooled).all(axis=0)
    pooled = pooled[:, defined]
    medians = np.nanmedian(pooled, axis=0)
    pooled = np.where(np.isnan(pooled), medians, pooled)
    squares = ((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(axis=2)
    distances = np.sqrt(squares[np.triu_indices(len(pooled), 1)])
    bandwidth = float(np.median(distances)) or 1.0
    kernel = np.exp(-squares / (2.0 * bandwidth ** 2))
    first = np.zeros(len(pooled), dtype=bool)
    first[:len(a)] = True
    total = kernel.sum()
    observed = _mmd2(kernel, first, total)
    null = np.array([_mmd2(kernel, rng.permutation(first), total)
                     for _ in range(permutations)])
    return {'mmd2': observed, 'p_value': _p_value(observed, null),
            'bandwidth': bandwidth, 'permutations': permutations,
            'sizes': [len(a), len(b)]}
