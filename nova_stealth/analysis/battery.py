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
"""The attacker battery, judged with grouped cross-validation.

Every attacker is trained twice:

* as the paper trains (``trained_on: native``): native migrations against
  background flows;
* as the adversary who knows the defence (``trained_on: <mode>``):
  migrations of the mode judged against background flows.

Folds are grouped by run (scikit-learn's StratifiedGroupKFold): the flows
of one run, migration and background alike, are all in the training part
or all in the judged part of a fold, so no flow and no run is both trained
on and judged. Every migration and background flow is scored once, out of
fold; the scores give ROC AUC with a bootstrap interval and the TPR at
1% and 2% FPR (:mod:`nova_stealth.analysis.metrics`), pooled and per load.
"""

import collections
import zlib

import numpy as np
from sklearn import model_selection

from nova_stealth.analysis import boosting
from nova_stealth.analysis import detectors as detector_lib
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import metrics
from nova_stealth.analysis import sequence
from nova_stealth.analysis import twosample

FOLDS = 5
NATIVE = 'native'
#: The MaxEnt window set of the battery: defined from 3,000 packets on.
MAXENT_WINDOWS = (100, 500, 1000)

#: The battery's cnn: windows of 5.12 s, the first two of each flow; at
#: most 800 background flows in one training (a fit costs the flows it
#: sees: see benchmarks/battery.py).
CNN_SETTINGS = {'length': 512, 'max_windows': 2, 'channels': (16, 32, 32),
                'epochs': 12, 'max_negatives': 800}

#: The attacker whose out-of-fold scores make the classifier two-sample
#: test, trained on the mode it tests.
C2ST_ATTACKER = 'gbm'

#: The attackers that read a flow's multi-scale features and series, which
#: :func:`flows.read_flows` computes only with ``FlowOptions.multiscale``.
MULTISCALE_ATTACKERS = ('gbm', 'gbm-segments', 'cnn')

#: One labelled flow: its run (the CV group) and load level.
Sample = collections.namedtuple('Sample', 'flow label kind mode run load')


def sequence_available():
    """Whether PyTorch, which the cnn attacker needs, is installed."""
    try:
        sequence._torch()
    except ImportError:
        return False
    return True


def attackers(seed=0, cnn=None):
    """{name: factory of an unfitted estimator}; pattern needs no training.

    :param cnn: include the cnn attacker (default: when PyTorch is there)
    """
    found = {
        'pattern': lambda: detector_lib.PatternMatchingDetector(),
        detector_lib.maxent_name(MAXENT_WINDOWS):
            lambda: detector_lib.MaxEntDetector(
                windows=MAXENT_WINDOWS, class_weight='balanced'),
        'gbm': lambda: boosting.GradientBoostingDetector(random_state=seed),
        'gbm-segments': lambda: boosting.GradientBoostingDetector(
            segments=True, random_state=seed),
    }
    if sequence_available() if cnn is None else cnn:
        found['cnn'] = lambda: sequence.SequenceDetector(**dict(
            CNN_SETTINGS, random_state=seed))
    return found


def needs_multiscale(names):
    """Whether any of the attackers ``names`` needs the multi-scale state."""
    return any(name in MULTISCALE_ATTACKERS for name in names)


def _without_multiscale(chosen, samples, explicit, notes):
    """``chosen`` less the attackers whose multi-scale features are lacking.

    :raises ValueError: if such an attacker was chosen ``explicit``-ly
    """
    needing = [name for name in chosen if name in MULTISCALE_ATTACKERS]
    lacking = sum(1 for s in samples if s.flow.multiscale is None)
    if not (needing and lacking):
        return chosen
    message = ('%s need the multi-scale features, which %d of %d flows '
               'lack: read them with FlowOptions(multiscale=True)'
               % (', '.join(needing), lacking, len(samples)))
    if explicit:
        raise ValueError(message)
    notes.append('not run: ' + message)
    return {name: factory for name, factory in chosen.items()
            if name not in needing}


def _score(detector, flows):
    if isinstance(detector, detector_lib.PatternMatchingDetector):
        return detector.decision_function(flows)
    return detector.predict_proba(flows)[:, 1]


def check_disjoint(groups, train, test):
    """Raise if a group is both in ``train`` and ``test`` of one fold."""
    shared = set(np.asarray(groups)[train]) & set(np.asarray(groups)[test])
    if shared:
        raise AssertionError('runs both trained on and judged: %s'
                             % sorted(shared)[:5])


def grouped_folds(y, groups, folds=FOLDS, seed=0,
                  splitter=model_selection.StratifiedGroupKFold):
    """(train, test) index pairs with no group on both sides.

    :raises ValueError: when fewer than two groups hold each class
    """
    y = np.asarray(y, dtype=bool)
    groups = np.asarray(groups)
    folds = min(folds, len(set(groups[y])), len(set(groups[~y])))
    if folds < 2:
        raise ValueError('grouped cross-validation needs migrations and '
                         'background flows in at least two runs each; got '
                         '%d and %d runs' % (len(set(groups[y])),
                                             len(set(groups[~y]))))
    split = splitter(n_splits=folds, shuffle=True, random_state=seed)
    pairs = list(split.split(np.zeros(len(y)), y, groups))
    for train, test in pairs:
        check_disjoint(groups, train, test)
    return pairs


def out_of_fold(factory, samples, positive, judged, folds=FOLDS, seed=0,
                splitter=model_selection.StratifiedGroupKFold,
                with_folds=False):
    """Out-of-fold scores of ``judged`` samples.

    :param positive: per sample True (a training migration), False (a
        training background flow) or None (not trained on)
    :param judged: per sample whether to score it
    :returns: scores, NaN where not judged; each judged sample is scored
        by a model fitted without any sample of its run; with
        ``with_folds``, also the fold that judged each (-1: none)
    """
    pool = np.array([p is not None for p in positive])
    index = np.flatnonzero(pool)
    y = np.array([positive[i] for i in index], dtype=bool)
    runs = np.array([samples[i].run for i in range(len(samples))])
    pairs = grouped_folds(y, runs[index], folds, seed, splitter)
    fold_of_run = {}
    for number, (_train, test) in enumerate(pairs):
        for run in set(runs[index[test]]):
            fold_of_run[run] = number
    scores = np.full(len(samples), np.nan)
    judged_by = np.full(len(samples), -1)
    flows = [s.flow for s in samples]
    for number, (train, _test) in enumerate(pairs):
        trained_runs = set(runs[index[train]])
        model = factory().fit([flows[i] for i in index[train]], y[train])
        chosen = [i for i in range(len(samples)) if judged[i] and
                  fold_of_run.get(runs[i], _hash_fold(runs[i], len(pairs)))
                  == number]
        assert not trained_runs & {runs[i] for i in chosen}
        if chosen:
            scores[chosen] = _score(model, [flows[i] for i in chosen])
            judged_by[chosen] = number
    return (scores, judged_by) if with_folds else scores


def _hash_fold(run, folds):
    """A fold for a run that has no training flows at all."""
    return zlib.crc32(str(run).encode()) % folds


def _summaries(samples, scores, mode, seed, samples_ci):
    """metrics.summary of ``mode``'s migrations against background."""
    rows = []
    for load, mine in _by_load(samples, mode).items():
        labels = [samples[i].label == 'migration' for i in mine]
        if not any(labels) or all(labels):
            continue
        rows.append(dict(metrics.summary(labels, scores[mine], seed,
                                         samples_ci), load=load))
    return rows


def run(samples, seed=0, folds=FOLDS, factories=None,
        samples_ci=metrics.BOOTSTRAP):
    """Judge every mode's migrations with every attacker, both ways trained.

    :param samples: :class:`Sample` per flow; labels other than migration
        and background (chaff, reverse, unlabelled) are left out
    :returns: {'results': [{attacker, trained_on, mode, load, auc,
        auc_ci, tpr_at_0.01, ...}], 'notes': [...], 'scores': {...}}
    :raises ValueError: when ``factories`` hold an attacker of
        :data:`MULTISCALE_ATTACKERS` and the flows were read without the
        multi-scale features (without ``factories``, those attackers are
        left out, with a note)
    """
    chosen = factories or attackers(seed)
    modes = sorted({s.mode for s in samples if s.label == 'migration'})
    results, notes, two_sample = [], [], []
    if factories is None and 'cnn' not in chosen:
        notes.append('cnn not run: PyTorch is not installed (the sequence '
                     'extra of nova_stealth)')
    chosen = _without_multiscale(chosen, samples, factories is not None,
                                 notes)
    if modes and NATIVE not in modes:
        notes.append('no native migrations: no attacker trained the '
                     'paper\'s way (but pattern, which learns nothing)')
    scores_by = {}
    for attacker, factory in chosen.items():
        # Algorithm 1 learns nothing: one pass, filed as trained on native.
        trainings = [NATIVE] if attacker == 'pattern' else modes
        for trained_on in trainings:
            judged_modes = (modes if trained_on == NATIVE
                            else [trained_on])
            positive = [True if s.label == 'migration' and
                        s.mode == trained_on else
                        False if s.label == 'background' else None
                        for s in samples]
            judged = [s.label == 'background' or (
                s.label == 'migration' and s.mode in judged_modes)
                for s in samples]
            try:
                if attacker == 'pattern':
                    model = factory().fit(None)
                    scores = np.where(judged, _score(
                        model, [s.flow for s in samples]), np.nan)
                    judged_by = np.zeros(len(samples), int)
                else:
                    scores, judged_by = out_of_fold(
                        factory, samples, positive, judged, folds, seed,
                        with_folds=True)
            except ValueError as e:
                notes.append('%s trained on %s: %s' % (attacker, trained_on,
                                                       e))
                continue
            scores_by[(attacker, trained_on)] = scores
            for mode in judged_modes:
                for row in _summaries(samples, scores, mode, seed,
                                      samples_ci):
                    results.append(dict(row, attacker=attacker,
                                        trained_on=trained_on, mode=mode))
            if attacker == C2ST_ATTACKER:
                two_sample += _classifier_tests(samples, scores, judged_by,
                                                trained_on, seed)
    for mode in modes:
        two_sample += _mmd_tests(samples, mode, seed)
    return {'results': results, 'notes': notes, 'scores': scores_by,
            'two_sample': two_sample}


def _by_load(samples, mode):
    """{load or 'all': indices of background and ``mode``'s migrations}."""
    chosen = [i for i, s in enumerate(samples)
              if s.label == 'background' or
              (s.label == 'migration' and s.mode == mode)]
    loads = sorted({samples[i].load for i in chosen
                    if samples[i].label == 'migration'}, key=str)
    found = {'all': chosen}
    for load in loads:
        found[load] = [i for i in chosen if samples[i].load == load]
    return found


def _classifier_tests(samples, scores, judged_by, mode, seed):
    """The classifier two-sample test of ``mode``, by its own attacker."""
    rows = []
    for load, mine in _by_load(samples, mode).items():
        labels = [samples[i].label == 'migration' for i in mine]
        found = twosample.classifier_test(labels, scores[mine],
                                          judged_by[mine], seed=seed)
        if found:
            rows.append(dict(found, test='c2st', attacker=C2ST_ATTACKER,
                             trained_on=mode, mode=mode, load=load,
                             migrations=sum(labels),
                             background=len(labels) - sum(labels)))
    return rows


def _mmd_tests(samples, mode, seed):
    """MMD of ``mode``'s migrations against background, on CV vectors."""
    rows = []
    for load, mine in _by_load(samples, mode).items():
        migrations = [samples[i].flow for i in mine
                      if samples[i].label == 'migration']
        background = [samples[i].flow for i in mine
                      if samples[i].label == 'background']
        found = twosample.mmd_test(
            twosample.cv_vectors(migrations, flow_lib.WINDOWS),
            twosample.cv_vectors(background, flow_lib.WINDOWS), seed=seed)
        if found:
            rows.append(dict(found, test='mmd', mode=mode, load=load,
                             migrations=len(migrations),
                             background=len(background)))
    return rows


def strongest(results, mode, load='all', key='tpr_at_0.02'):
    """The result row of the attacker that does best on ``mode``.

    Best by ``key`` (TPR at 2% FPR), then by AUC. Chosen after the fact:
    a little optimistic for the attacker, as a worst case should be.
    """
    rows = [r for r in results if r['mode'] == mode and r['load'] == load
            and r.get(key) is not None]
    return max(rows, key=lambda r: (r[key], r['auc'] or 0)) if rows else None
