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
"""A sequence attacker: a 1D CNN on the flow's bytes per 10 ms bin.

In the style of Deep Fingerprinting (Sirinam et al., CCS 2018): blocks of
two convolutions (batch norm, ELU) and a max pool, then a small dense
head; here on a rate series instead of packet directions. A flow's
series (:attr:`FlowFeatures.series_10ms`, its first 82 s) is cut into
windows of ``length`` bins; each window is one input of two channels,
log(1 + bytes) scaled and a mask of where the flow was; a flow scores as
its most suspicious window.

Needs PyTorch (the ``sequence`` extra; a CPU build is enough), imported
only when a model is trained or loaded. Saved as JSON: the settings and
every weight as a list of numbers.
"""

import numpy as np
from sklearn import base

from nova_stealth.analysis import boosting

#: log(1 + bytes per 10 ms bin) is divided by this: 1.25 MB (1 Gbit/s)
#: gives 1.
LOG_SCALE = float(np.log1p(1.25e6))


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            'the cnn attacker needs PyTorch: pip install torch (a CPU build '
            'will do; nova_stealth\'s "sequence" extra)') from e
    return torch


def windows(series, length, limit):
    """(inputs (n, 2, length), owner of each) from flows' 10 ms series."""
    inputs, owners = [], []
    for index, values in enumerate(series):
        values = np.zeros(0) if values is None else np.asarray(values, float)
        count = max(1, min(limit, int(np.ceil(len(values) / length))))
        for number in range(count):
            part = values[number * length:(number + 1) * length]
            window = np.zeros((2, length), np.float32)
            window[0, :len(part)] = np.log1p(part) / LOG_SCALE
            window[1, :len(part)] = 1.0
            inputs.append(window)
            owners.append(index)
    return (np.stack(inputs) if inputs else np.zeros((0, 2, length),
                                                     np.float32),
            np.array(owners, dtype=int))


def _network(torch, channels, kernel):
    nn = torch.nn

    def block(inputs, outputs):
        return [nn.Conv1d(inputs, outputs, kernel, padding=kernel // 2),
                nn.BatchNorm1d(outputs), nn.ELU(),
                nn.Conv1d(outputs, outputs, kernel, padding=kernel // 2),
                nn.BatchNorm1d(outputs), nn.ELU(),
                nn.MaxPool1d(4), nn.Dropout(0.1)]

    layers = []
    previous = 2
    for width in channels:
        layers += block(previous, width)
        previous = width
    layers += [nn.AdaptiveMaxPool1d(1), nn.Flatten(),
               nn.Linear(previous, 32), nn.ReLU(), nn.Linear(32, 1)]
    return nn.Sequential(*layers)


class SequenceDetector(base.ClassifierMixin, base.BaseEstimator):
    """The 1D CNN attacker, with the scikit-learn estimator API.

    :param length: bins per window (10 ms each: 1024 is 10.24 s)
    :param max_windows: windows per flow (training and judging)
    :param channels: convolution widths, one block each
    :param threads: torch threads while training
    :param max_negatives: train on at most this many non-migration flows,
        drawn at random (seeded): the cost of a fit is the flows it sees

    Classes are balanced by weight. Learned: ``network_`` (the torch
    module), ``classes_``.
    """

    def __init__(self, length=1024, max_windows=4, channels=(16, 32, 64),
                 kernel=7, epochs=20, batch_size=32, learning_rate=2e-3,
                 random_state=0, threads=1, max_negatives=None):
        self.length = length
        self.max_windows = max_windows
        self.channels = channels
        self.kernel = kernel
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.threads = threads
        self.max_negatives = max_negatives

    def _network(self, torch):
        return _network(torch, tuple(self.channels), self.kernel)

    def fit(self, X, y):
        """Learn from flows and labels (True: migration); return self."""
        torch = _torch()
        labels = np.asarray(y, dtype=bool)
        if labels.all() or not labels.any():
            raise ValueError('training needs migrations and other flows; '
                             'got %d and %d' % (labels.sum(),
                                                (~labels).sum()))
        X = list(X)
        if self.max_negatives is not None and (
                (~labels).sum() > self.max_negatives):
            rng = np.random.default_rng(self.random_state)
            keep = np.flatnonzero(labels)
            keep = np.sort(np.concatenate((keep, rng.choice(
                np.flatnonzero(~labels), self.max_negatives,
                replace=False))))
            X = [X[i] for i in keep]
            labels = labels[keep]
        inputs, owners = windows([f.series_10ms for f in X], self.length,
                                 self.max_windows)
        weights = boosting.balanced_weights(labels, owners).astype(
            np.float32)
        # One thread by default: small batches gain nothing from more, and
        # the machine is shared with the capture and the other attackers.
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            self._train(torch, inputs, labels[owners], weights)
        finally:
            torch.set_num_threads(threads)
        self.classes_ = np.array([False, True])
        return self

    def _train(self, torch, inputs, labels, weights):
        torch.manual_seed(self.random_state)
        generator = np.random.default_rng(self.random_state)
        network = self._network(torch)
        optimiser = torch.optim.Adam(network.parameters(),
                                     lr=self.learning_rate)
        loss = torch.nn.BCEWithLogitsLoss(reduction='none')
        data = torch.from_numpy(inputs)
        target = torch.from_numpy(labels.astype(np.float32))
        weight = torch.from_numpy(weights)
        network.train()
        for _epoch in range(self.epochs):
            order = generator.permutation(len(inputs))
            for start in range(0, len(order), self.batch_size):
                chosen = torch.from_numpy(order[start:start +
                                                self.batch_size])
                if len(chosen) < 2:
                    continue  # batch norm needs two
                optimiser.zero_grad()
                logits = network(data[chosen])[:, 0]
                value = (loss(logits, target[chosen]) *
                         weight[chosen]).sum() / weight[chosen].sum()
                value.backward()
                optimiser.step()
        network.eval()
        self.network_ = network

    def predict_proba(self, X):
        """Columns: probability of not a migration, of a migration."""
        torch = _torch()
        inputs, owners = windows([f.series_10ms for f in X], self.length,
                                 self.max_windows)
        with torch.no_grad():
            scores = torch.sigmoid(self.network_(
                torch.from_numpy(inputs))[:, 0]).numpy().astype(float)
        positive = np.full(len(X), -np.inf)
        np.maximum.at(positive, owners, scores)
        return np.column_stack([1.0 - positive, positive])

    def decision_function(self, X):
        return self.predict_proba(X)[:, 1]

    def predict(self, X):
        """True where the probability of a migration reaches 0.5."""
        return self.predict_proba(X)[:, 1] >= 0.5

    def to_dict(self):
        """The fitted detector as JSON-ready data, every weight included."""
        params = dict(self.get_params(), channels=list(self.channels))
        state = {name: {'shape': list(tensor.shape),
                        'values': tensor.detach().reshape(-1).tolist()}
                 for name, tensor in self.network_.state_dict().items()}
        return {'kind': 'cnn', 'params': params, 'state': state}

    @classmethod
    def from_dict(cls, data):
        """Rebuild a detector saved by :meth:`to_dict`."""
        torch = _torch()
        detector = cls(**dict(data['params'],
                              channels=tuple(data['params']['channels'])))
        network = detector._network(torch)
        expected = network.state_dict()
        if set(expected) != set(data['state']):
            raise ValueError('the saved cnn model does not match its '
                             'settings')
        state = {}
        for name, saved in data['state'].items():
            tensor = torch.tensor(saved['values'],
                                  dtype=expected[name].dtype)
            state[name] = tensor.reshape(saved['shape'])
        network.load_state_dict(state)
        network.eval()
        detector.network_ = network
        detector.classes_ = np.array([False, True])
        return detector
