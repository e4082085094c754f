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
"""Gradient-boosted trees on the multi-scale features of flows.

Per flow, or per segment of a flow: the segment attacker learns from
every segment (labelled as its flow) and scores a flow by its most
suspicious segment, so that a long flow cannot hide in its own average.

Saved as JSON without pickle: the training rows and the estimator's
settings are stored and the model is refitted on load (the fit is
deterministic for a given scikit-learn); a few stored training scores
check that the refit model is the same.
"""

import numpy as np
from sklearn import base
from sklearn import ensemble
import threadpoolctl

from nova_stealth.analysis import multiscale

CHECK_ROWS = 8
#: OpenMP threads of the trees. One: the models are small, and on a busy
#: machine OpenMP threads that wait for each other cost a hundred times
#: the work (seen: 26 s against 0.24 s for one cross-validation).
THREADS = 1
#: The refit model must give the stored scores to this precision.
CHECK_TOLERANCE = 1e-6


def _rows(flows, segments, limit=None):
    """Feature rows and the index of the flow of each row."""
    rows, owners = [], []
    width = len(multiscale.FEATURE_NAMES)
    for index, flow in enumerate(flows):
        if flow.multiscale is None:
            # Features made without the multi-scale state: nothing known.
            chosen = np.full((1, width), np.nan)
        elif segments:
            chosen = flow.segments
            if limit and len(chosen) > limit:
                chosen = chosen[np.linspace(0, len(chosen) - 1,
                                            limit).astype(int)]
        else:
            chosen = flow.multiscale[np.newaxis, :]
        rows.append(chosen)
        owners += [index] * len(chosen)
    matrix = (np.vstack(rows) if rows else np.zeros((0, width)))
    return matrix.reshape(-1, width), np.array(owners, dtype=int)


def balanced_weights(labels, owners):
    """Row weights: each flow weighs the same, and the classes balance.

    :param labels: per flow, True for a migration
    :param owners: per row, the index of its flow
    """
    per_flow = np.bincount(owners, minlength=len(labels))
    share = {True: labels.mean(), False: 1.0 - labels.mean()}
    return np.array([1.0 / per_flow[o] / (2.0 * share[bool(labels[o])])
                     for o in owners])


class GradientBoostingDetector(base.ClassifierMixin, base.BaseEstimator):
    """HistGradientBoostingClassifier on :data:`multiscale.FEATURE_NAMES`.

    :param segments: learn and judge per segment; a flow scores as the
        maximum of its segments' scores
    :param max_train_segments: segments per flow used for training, evenly
        spread (each flow weighs the same whatever its length)

    Classes are balanced by weight: an attacker has few migrations against
    many background flows. Learned: ``model_``, ``classes_``,
    ``train_rows_``, ``train_labels_``, ``train_weights_``.
    """

    def __init__(self, segments=False, max_iter=200, learning_rate=0.1,
                 max_leaf_nodes=15, min_samples_leaf=5, random_state=0,
                 max_train_segments=32):
        self.segments = segments
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state
        self.max_train_segments = max_train_segments

    def _estimator(self):
        return ensemble.HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, early_stopping=False,
            random_state=self.random_state)

    def fit(self, X, y):
        """Learn from flows and labels (True: migration); return self."""
        labels = np.asarray(y, dtype=bool)
        if labels.all() or not labels.any():
            raise ValueError('training needs migrations and other flows; '
                             'got %d and %d' % (labels.sum(),
                                                (~labels).sum()))
        rows, owners = _rows(X, self.segments, self.max_train_segments)
        return self._fit_rows(rows, labels[owners],
                              balanced_weights(labels, owners))

    def _fit_rows(self, rows, labels, weights):
        # A feature no training row has (every segment too short for 10 s
        # scales) is all NaN, which the binning of scikit-learn cannot take;
        # as a constant it is never split on, and NaN at prediction is fine.
        filled = np.where(np.isnan(rows).all(axis=0), 0.0, rows)
        with threadpoolctl.threadpool_limits(THREADS, user_api='openmp'):
            self.model_ = self._estimator().fit(filled, labels,
                                                sample_weight=weights)
        self.classes_ = np.array([False, True])
        self.train_rows_ = rows
        self.train_labels_ = labels
        self.train_weights_ = weights
        return self

    def predict_proba(self, X):
        """Columns: probability of not a migration, of a migration."""
        rows, owners = _rows(X, self.segments)
        positive = np.full(len(X), np.nan)
        if len(rows):
            with threadpoolctl.threadpool_limits(THREADS,
                                                 user_api='openmp'):
                scores = self.model_.predict_proba(rows)[:, 1]
            positive = np.full(len(X), -np.inf)
            np.maximum.at(positive, owners, scores)
            positive[np.isinf(positive)] = np.nan
        return np.column_stack([1.0 - positive, positive])

    def decision_function(self, X):
        return self.predict_proba(X)[:, 1]

    def predict(self, X):
        """True where the probability of a migration reaches 0.5."""
        return np.nan_to_num(self.predict_proba(X)[:, 1], nan=0.0) >= 0.5

    def to_dict(self):
        """The fitted detector as JSON-ready data (training rows kept)."""
        rows = np.where(np.isnan(self.train_rows_), None,
                        self.train_rows_).tolist()
        check = self.model_.predict_proba(
            self.train_rows_[:CHECK_ROWS])[:, 1]
        return {'kind': 'gbm', 'params': self.get_params(),
                'features': list(multiscale.FEATURE_NAMES),
                'rows': rows,
                'labels': [bool(v) for v in self.train_labels_],
                'weights': [float(w) for w in self.train_weights_],
                'check': [float(c) for c in check]}

    @classmethod
    def from_dict(cls, data):
        """Refit a detector saved by :meth:`to_dict`; check it is the same."""
        if data.get('features') != list(multiscale.FEATURE_NAMES):
            raise ValueError('the saved gbm model was trained on other '
                             'features than this version computes')
        detector = cls(**data['params'])
        rows = np.array([[np.nan if v is None else v for v in row]
                         for row in data['rows']], dtype=float)
        detector._fit_rows(rows.reshape(-1, len(data['features'])),
                           np.array(data['labels'], dtype=bool),
                           np.array(data['weights'], dtype=float))
        check = detector.model_.predict_proba(rows[:CHECK_ROWS])[:, 1]
        if not np.allclose(check, data['check'], atol=CHECK_TOLERANCE):
            raise ValueError('the refit gbm model does not give the saved '
                             'scores (another scikit-learn?)')
        return detector
