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
"""The cnn attacker: a tiny model, trained for a few seconds on the CPU."""

import json
import sys

import numpy as np
import pytest
from sklearn import base

from nova_stealth.analysis import battery
from nova_stealth.analysis import detectors
from nova_stealth.analysis import metrics
from nova_stealth.analysis import sequence
from tests.unit import test_battery

TINY = {'length': 128, 'max_windows': 2, 'channels': (8,), 'epochs': 6}


def flows(seed, count):
    """QEMU-like series (a burst every 100 ms) and bursty random ones."""
    rng = np.random.default_rng(seed)
    made, labels = [], []
    for number in range(count):
        length = int(rng.integers(150, 400))
        if number % 4 == 0:
            series = rng.uniform(0, 2000, length)
            series[int(rng.integers(0, 10))::10] += rng.uniform(3e4, 6e4)
        else:
            series = (rng.lognormal(9, 1.2, length) *
                      (rng.uniform(size=length) > 0.3))
        flow = test_battery.flow(np.zeros(test_battery.WIDTH), port=number)
        flow.series_10ms = series
        made.append(flow)
        labels.append(number % 4 == 0)
    return made, labels


@pytest.fixture(scope='module')
def trained():
    train, labels = flows(0, 80)
    detector = sequence.SequenceDetector(**TINY)
    assert detector.fit(train, labels) is detector
    return detector


def test_it_is_an_estimator(trained):
    assert base.clone(trained).get_params() == trained.get_params()
    assert hasattr(trained, 'network_') and hasattr(trained, 'classes_')
    held_out, labels = flows(1, 60)
    probabilities = trained.predict_proba(held_out)
    assert probabilities.shape == (60, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert metrics.auc(labels, probabilities[:, 1]) > 0.9


def test_it_round_trips_through_json(trained):
    saved = json.loads(json.dumps(trained.to_dict()))
    loaded = detectors.detector_from_dict(saved)
    held_out, _ = flows(2, 20)
    np.testing.assert_allclose(loaded.predict_proba(held_out),
                               trained.predict_proba(held_out), atol=1e-6)
    del saved['state'][next(iter(saved['state']))]
    with pytest.raises(ValueError, match='does not match'):
        sequence.SequenceDetector.from_dict(saved)


def test_windows_mask_where_the_flow_was():
    inputs, owners = sequence.windows([np.ones(300), None], 128, 4)
    assert inputs.shape == (4, 2, 128)
    assert owners.tolist() == [0, 0, 0, 1]
    assert inputs[2, 1].sum() == 300 - 256
    assert inputs[3].sum() == 0


def test_without_torch_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'torch', None)
    with pytest.raises(ImportError, match='needs PyTorch: pip install'):
        sequence.SequenceDetector(**TINY).fit(*flows(0, 8))
    assert not battery.sequence_available()
    assert 'cnn' not in battery.attackers()


def test_training_can_draw_a_share_of_the_background(monkeypatch):
    train, labels = flows(3, 40)
    seen = []
    real = sequence.windows

    def recording(series, length, limit):
        seen.append(len(series))
        return real(series, length, limit)

    monkeypatch.setattr(sequence, 'windows', recording)
    detector = sequence.SequenceDetector(**dict(TINY, epochs=1,
                                                max_negatives=5))
    detector.fit(train, labels)
    # All 10 migrations and 5 of the 30 others.
    assert seen == [15]
    held_out, _ = flows(4, 8)
    assert detector.predict_proba(held_out).shape == (8, 2)
    with pytest.raises(ValueError, match='migrations and other flows'):
        sequence.SequenceDetector(**TINY).fit(train[:1], labels[:1])
