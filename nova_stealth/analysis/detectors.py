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
"""The paper's two attacks as scikit-learn estimators.

Both take a sequence of :class:`nova_stealth.analysis.flows.FlowFeatures`
as X and label a flow True when they take it for a migration. Models are
saved as JSON (``to_dict``/``from_dict``), never pickled.
"""

import math

import numpy as np
from sklearn import base
from sklearn import linear_model

#: The paper's four feature sets for the maximum-entropy attack.
WINDOW_SETS = ((100, 200, 300), (100, 500, 1000), (500, 1000, 2000),
               (1000, 2000, 3000))


class PatternMatchingDetector(base.ClassifierMixin, base.BaseEstimator):
    """Algorithm 1: bursts at regular intervals mean a migration.

    The burst-start rule: a packet starts a burst when at least
    ``burst_gap`` seconds (a feature setting of the flows) passed since
    the previous packet of its flow; the first packet of a flow starts one.
    20 ms by default: a QEMU burst every 100 ms leaves at least that much
    silence whenever the migration uses less than 80% of its bottleneck,
    while the gaps of an ACK-clocked TCP flow are about one round trip.
    The flow is cut into consecutive windows of ``window`` packets (Pwin).
    For each window we take the distances, in packets, between consecutive
    burst starts that end in that window, and their coefficient of
    variation; a window with at least two such distances and a CV below
    ``delta`` (δ) is a pattern. More than ``pattern_count`` (PCt)
    patterns flag the flow.

    The pseudo-code also counts the packets from the window's start to its
    first burst as a distance; that partial distance depends only on where
    the window happens to start, and with a few bursts per window it alone
    decides the CV, so we leave it out and measure only whole distances
    (which may begin in the previous window).
    """

    def __init__(self, window=1000, delta=0.05, pattern_count=3):
        self.window = window
        self.delta = delta
        self.pattern_count = pattern_count

    def fit(self, X, y=None):
        """Nothing is learned; check the parameters and return self."""
        if self.window < 2 or self.delta <= 0 or self.pattern_count < 0:
            raise ValueError('need window >= 2, delta > 0, pattern_count >= 0')
        self.classes_ = np.array([False, True])
        return self

    def pattern_counts(self, X):
        """Number of pattern windows of each flow."""
        return np.array([self._patterns(flow) for flow in X], dtype=float)

    def _patterns(self, flow):
        starts = np.asarray(flow.burst_starts, dtype=np.int64)
        if len(starts) < 3:
            return 0
        distances = np.diff(starts).astype(float)
        windows = starts[1:] // self.window
        edges = np.flatnonzero(np.diff(windows)) + 1
        counts = np.diff(np.concatenate(([0], edges, [len(distances)])))
        sums = np.add.reduceat(distances, np.concatenate(([0], edges)))
        squares = np.add.reduceat(distances * distances,
                                  np.concatenate(([0], edges)))
        means = sums / counts
        variances = np.maximum(squares / counts - means * means, 0.0)
        cvs = np.sqrt(variances) / means
        return int(np.sum((counts >= 2) & (cvs < self.delta)))

    def decision_function(self, X):
        """The number of pattern windows: higher looks more like one."""
        return self.pattern_counts(X)

    def predict_proba(self, X):
        """Scores in [0, 1]; at or above 0.5 exactly when flagged."""
        score = np.clip(self.pattern_counts(X) /
                        (2.0 * (self.pattern_count + 1)), 0.0, 1.0)
        return np.column_stack([1.0 - score, score])

    def predict(self, X):
        """True for each flow with more than ``pattern_count`` patterns."""
        return self.pattern_counts(X) > self.pattern_count

    def to_dict(self):
        """The detector as JSON-ready data."""
        return {'kind': 'pattern', 'window': self.window,
                'delta': self.delta, 'pattern_count': self.pattern_count}

    @classmethod
    def from_dict(cls, data):
        """Rebuild a detector saved by :meth:`to_dict`."""
        return cls(window=data['window'], delta=data['delta'],
                   pattern_count=data['pattern_count']).fit(None)


class MaxEntDetector(base.ClassifierMixin, base.BaseEstimator):
    """Algorithm 2: logistic regression on three window CVs.

    A maximum-entropy classifier over binary outcomes is a logistic
    regression; the features are the throughput CVs of the flow for the
    three packet windows of ``windows``. A flow whose CV is not defined
    for one of them (too few packets) cannot be scored: its probability is
    NaN and it is never flagged.

    The paper trained OpenNLP's maxent, which applies no smoothing; here a
    weak L2 penalty (``C`` = 1000) keeps the fit finite when the classes
    separate, and the classes are weighted to balance, since an attacker
    has a handful of migrations against many other flows. With sklearn's
    default (C = 1, unweighted), CVs of 0 to 1 barely move the
    coefficients: two paced flows against 56 real ones never reach 0.5.

    Learned: ``coef_``, ``intercept_``, ``classes_``.
    """

    def __init__(self, windows=(1000, 2000, 3000), threshold=0.5, C=1000.0,
                 class_weight=None):
        self.windows = windows
        self.threshold = threshold
        self.C = C
        self.class_weight = class_weight

    def features(self, X):
        """The (n_flows, 3) matrix of window CVs; NaN where undefined."""
        rows = [[flow.window_cvs[w] for w in self.windows] for flow in X]
        return np.array(rows, dtype=float).reshape(-1, len(self.windows))

    def scorable(self, X):
        """True for each flow that has all three CVs."""
        return ~np.isnan(self.features(X)).any(axis=1)

    def fit(self, X, y):
        """Learn from flows and labels (True: migration); return self."""
        features = self.features(X)
        labels = np.asarray(y, dtype=bool)
        usable = ~np.isnan(features).any(axis=1)
        if len(set(labels[usable].tolist())) < 2:
            raise ValueError(
                'training needs scorable flows of both classes; got %d '
                'migrations and %d others with CVs for windows %s' % (
                    int(labels[usable].sum()),
                    int((~labels[usable]).sum()), self.windows))
        model = linear_model.LogisticRegression(
            C=self.C, class_weight=self.class_weight, max_iter=1000)
        model.fit(features[usable], labels[usable])
        self.coef_ = model.coef_[0].copy()
        self.intercept_ = float(model.intercept_[0])
        self.classes_ = np.array([False, True])
        return self

    def decision_function(self, X):
        """Log-odds of being a migration; NaN where not scorable."""
        return self.features(X) @ self.coef_ + self.intercept_

    def predict_proba(self, X):
        """Columns: probability of not a migration, of a migration."""
        logit = self.decision_function(X)
        with np.errstate(over='ignore'):
            positive = 1.0 / (1.0 + np.exp(-logit))
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X):
        """True where the probability of a migration reaches threshold."""
        positive = self.predict_proba(X)[:, 1]
        return np.nan_to_num(positive, nan=0.0) >= self.threshold

    def to_dict(self):
        """The fitted detector as JSON-ready data."""
        return {'kind': 'maxent', 'windows': list(self.windows),
                'threshold': self.threshold, 'C': self.C,
                'class_weight': self.class_weight,
                'coef': [float(c) for c in self.coef_],
                'intercept': self.intercept_}

    @classmethod
    def from_dict(cls, data):
        """Rebuild a detector saved by :meth:`to_dict`."""
        detector = cls(windows=tuple(data['windows']),
                       threshold=data['threshold'], C=data['C'],
                       class_weight=data.get('class_weight'))
        detector.coef_ = np.array(data['coef'], dtype=float)
        detector.intercept_ = float(data['intercept'])
        if len(detector.coef_) != len(detector.windows) or not all(
                math.isfinite(c) for c in detector.coef_):
            raise ValueError('a maxent model needs one finite coefficient '
                             'per window')
        detector.classes_ = np.array([False, True])
        return detector


def detector_from_dict(data):
    """Rebuild any detector saved with ``to_dict``."""
    # Imported here: they build on this module's names (and the cnn's
    # module imports PyTorch only when a model is loaded).
    from nova_stealth.analysis import boosting
    from nova_stealth.analysis import sequence

    kinds = {'pattern': PatternMatchingDetector, 'maxent': MaxEntDetector,
             'gbm': boosting.GradientBoostingDetector,
             'cnn': sequence.SequenceDetector}
    if data.get('kind') not in kinds:
        raise ValueError('unknown detector kind %r' % data.get('kind'))
    return kinds[data['kind']].from_dict(data)


def maxent_name(windows):
    """The name a maxent detector has in reports: maxent-1000-2000-3000."""
    return 'maxent-' + '-'.join(str(w) for w in windows)
