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
"""Score the flows of captures with every detector.

The result is the content of report.json (see README.rst): per flow its
5-tuple, label and verdicts; per detector its detection rate, false-positive
rate and ROC AUC when a truth file is given; the chi-square comparisons and
the CV tables.
"""

import collections
import math

import numpy as np
from sklearn import model_selection

from nova_stealth.analysis import battery
from nova_stealth.analysis import cover
from nova_stealth.analysis import detectors as detector_lib
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import metrics
from nova_stealth.analysis import stats
from nova_stealth.analysis import truth

REPORT_VERSION = 1
PATTERN = 'pattern'


def _finite(value):
    return None if value is None or not math.isfinite(value) else value


def rates(probabilities, flagged, labels):
    """Detection rate, false-positive rate and ROC AUC from verdicts.

    Migrations are the positives; background and chaff flows are the
    negatives. A flow without a probability (NaN: too few packets for
    the detector's windows) is least suspicious, and its verdict is not
    flagged (as every detector's ``predict`` gives): a migration the
    detector cannot score is one it missed, so it stays in the detection
    rate's denominator (leaving it out would hide the flows a defence
    made unscorable). ``unscored`` counts them.
    """
    positive = np.array([label == 'migration' for label, _ in labels],
                        dtype=bool)
    negative = np.array([label in ('background', 'chaff')
                         for label, _ in labels], dtype=bool)
    probabilities = np.asarray(probabilities, dtype=float)
    flagged = np.asarray(flagged, dtype=bool)
    result = {
        'migrations': int(positive.sum()),
        'negatives': int(negative.sum()),
        'unscored': int(((positive | negative) &
                         np.isnan(probabilities)).sum()),
        'detection_rate': None, 'false_positive_rate': None, 'auc': None,
    }
    if result['migrations']:
        result['detection_rate'] = float(flagged[positive].mean())
    if result['negatives']:
        result['false_positive_rate'] = float(flagged[negative].mean())
    if result['migrations'] and result['negatives']:
        both = positive | negative
        result['auc'] = _finite(metrics.auc(positive[both],
                                            probabilities[both]))
    return result


def train_maxent(flows, labels, windows):
    """Fit a MaxEnt detector on migrations against everything else."""
    y = [label == 'migration' for label, _ in labels]
    return detector_lib.MaxEntDetector(windows=windows).fit(flows, y)


def cross_validated(flows, labels, windows, folds, seed=0):
    """Out-of-fold MaxEnt probabilities for every labelled flow.

    Stratified K-fold: each flow is judged by a model that did not see it.
    Flows without a label in :data:`truth.LABELS` get the verdict of the
    model fitted on all labelled flows, which is also returned.

    :returns: (probabilities, detector fitted on every labelled flow)
    """
    index = np.array([i for i, (label, _) in enumerate(labels)
                      if label in truth.LABELS])
    y = np.array([labels[i][0] == 'migration' for i in index])
    if min(y.sum(), (~y).sum()) < folds:
        raise ValueError('%d folds need at least %d migration and %d other '
                         'flows; the truth file names %d and %d'
                         % (folds, folds, folds, y.sum(), (~y).sum()))
    full = detector_lib.MaxEntDetector(windows=windows).fit(
        [flows[i] for i in index], y)
    probabilities = full.predict_proba(flows)[:, 1]
    splitter = model_selection.StratifiedKFold(folds, shuffle=True,
                                               random_state=seed)
    for train, test in splitter.split(index, y):
        fold = detector_lib.MaxEntDetector(windows=windows).fit(
            [flows[i] for i in index[train]], y[train])
        probabilities[index[test]] = fold.predict_proba(
            [flows[i] for i in index[test]])[:, 1]
    return probabilities, full


def split(labels, test_size=0.2, seed=0):
    """The paper's random split of labelled flows: (train, test) indices.

    Stratified on migration / not migration, so both sides have both.
    """
    index = [i for i, (label, _) in enumerate(labels)
             if label in truth.LABELS]
    y = [labels[i][0] == 'migration' for i in index]
    counts = collections.Counter(y)
    if counts[True] < 2 or counts[False] < 2:
        raise ValueError('a random split needs at least two migration and '
                         'two other flows; the truth file names %d and %d'
                         % (counts[True], counts[False]))
    train, test = model_selection.train_test_split(
        index, test_size=test_size, random_state=seed, stratify=y)
    return sorted(train), sorted(test)


def _groups(flows, labels):
    groups = collections.defaultdict(list)
    for flow, (label, kind) in zip(flows, labels):
        if label in truth.LABELS:
            groups['%s/%s' % (label, kind) if kind else label].append(flow)
    return dict(sorted(groups.items()))


def chi_square_table(flows, labels):
    """Each migration kind against each background kind and all of them."""
    groups = _groups(flows, labels)
    background = [f for f, (label, _) in zip(flows, labels)
                  if label == 'background']
    others = {name: members for name, members in groups.items()
              if name.startswith('background')}
    others['background (all)'] = background
    rows = []
    for name, members in groups.items():
        if not name.startswith('migration'):
            continue
        for other, other_members in others.items():
            result = stats.chi_square(members, other_members)
            if result:
                rows.append(dict(result, a=name, b=other))
    return rows


def run_battery(flows, labels, seed=0, groups=None, attackers=None):
    """The attacker battery on labelled flows, and on their cover class.

    A migration's kind is its mode; a kind that begins with ``native``
    (the testbed writes ``native-4``) is ``native``, which trains the
    paper's way. Without ``groups`` (a run name per flow), each flow is its
    own group.

    :param attackers: names of the attackers to run (default: every one
        :func:`battery.attackers` has)
    :returns: (battery.run's result, cover.judge's result)
    """
    samples = [battery.Sample(flow, label, kind,
                              _mode(kind) if label == 'migration' else None,
                              groups[i] if groups else str(flow.key), 'all')
               for i, (flow, (label, kind)) in enumerate(zip(flows, labels))]
    factories = None
    if attackers is not None:
        factories = {name: factory for name, factory in battery.attackers(
            seed, cnn='cnn' in attackers).items() if name in attackers}
    return (battery.run(samples, seed=seed, factories=factories),
            cover.judge(samples, seed, factories=factories))


def _mode(kind):
    return battery.NATIVE if kind.startswith(battery.NATIVE) else kind


def run(flows, labels=None, models=None, seed=0, test_size=0.2, folds=None,
        attackers=None):
    """Score flows; return (report dict, {name: detector}).

    :param labels: (label, kind) per flow, from :func:`truth.label_of`;
        None when there is no truth file
    :param models: fitted detectors by name (from a model file); without
        them, MaxEnt detectors are trained on a random split of the
        labelled flows when there are labels
    :param folds: instead of one split, judge every labelled flow by
        stratified K-fold cross-validation
    :param attackers: the battery's attackers to run with labels (default:
        all; empty: no battery); those of
        :data:`battery.MULTISCALE_ATTACKERS` need flows read with
        ``FlowOptions(multiscale=True)``
    """
    detectors = {PATTERN: detector_lib.PatternMatchingDetector().fit(None)}
    notes = []
    every_flow = (list(range(len(flows))), 'all flows')
    evaluation = {PATTERN: every_flow}
    roles = {}
    out_of_fold = {}
    if models:
        detectors.update(models)
        for name in models:
            evaluation[name] = every_flow
    elif labels and folds:
        for windows in detector_lib.WINDOW_SETS:
            name = detector_lib.maxent_name(windows)
            try:
                out_of_fold[name], detectors[name] = cross_validated(
                    flows, labels, windows, folds, seed)
            except ValueError as e:
                notes.append('%s not trained: %s' % (name, e))
                continue
            evaluation[name] = (list(range(len(flows))),
                                '%d-fold cross-validation' % folds)
    elif labels:
        try:
            train, test = split(labels, test_size, seed)
        except ValueError as e:
            notes.append('MaxEnt not trained: %s' % e)
        else:
            roles = {i: 'train' for i in train}
            roles.update({i: 'test' for i in test})
            for windows in detector_lib.WINDOW_SETS:
                name = detector_lib.maxent_name(windows)
                try:
                    detectors[name] = train_maxent(
                        [flows[i] for i in train],
                        [labels[i] for i in train], windows)
                except ValueError as e:
                    notes.append('%s not trained: %s' % (name, e))
                    continue
                evaluation[name] = (test, 'test split')
    else:
        notes.append('MaxEnt needs a model file or a truth file to train on')

    probabilities = {name: detector.predict_proba(flows)[:, 1]
                     if flows else []
                     for name, detector in detectors.items()}
    verdicts = {name: detector.predict(flows) if flows else []
                for name, detector in detectors.items()}
    for name, oof in out_of_fold.items():
        probabilities[name] = oof
        verdicts[name] = np.nan_to_num(oof, nan=0.0) >= (
            detectors[name].threshold)
    report = {'version': REPORT_VERSION, 'notes': notes, 'flows': [],
              'detectors': {}}
    for index, flow in enumerate(flows):
        label, kind = labels[index] if labels else (None, None)
        entry = dict(flow.key.as_dict(), packets=flow.packets,
                     bytes=flow.bytes, duration_s=flow.duration,
                     label=label, kind=kind, split=roles.get(index),
                     window_cvs={str(w): _finite(c)
                                 for w, c in flow.window_cvs.items()},
                     verdicts={}, scores={})
        for name in detectors:
            probability = _finite(float(probabilities[name][index]))
            entry['scores'][name] = probability
            entry['verdicts'][name] = (None if probability is None
                                       else bool(verdicts[name][index]))
        report['flows'].append(entry)
    for name, detector in detectors.items():
        summary = {'settings': detector.to_dict()}
        if labels:
            chosen, summary['evaluated_on'] = evaluation[name]
            summary.update(rates(
                [probabilities[name][i] for i in chosen],
                [verdicts[name][i] for i in chosen],
                [labels[i] for i in chosen]))
        report['detectors'][name] = summary
    if labels and (attackers is None or attackers):
        found, report['cover'] = run_battery(flows, labels, seed,
                                             attackers=attackers)
        for (attacker, trained_on), scores in found.pop('scores').items():
            for entry, score in zip(report['flows'], scores):
                entry.setdefault('battery_scores', {})[
                    '%s|%s' % (attacker, trained_on)] = _finite(
                        float(score))
        report['battery'] = found
    if labels:
        report['chi_square'] = chi_square_table(flows, labels)
        report['cv_table'] = stats.cv_table(_groups(flows, labels),
                                            flow_lib.WINDOWS)
    else:
        report['cv_table'] = stats.cv_table({'all flows': flows},
                                            flow_lib.WINDOWS)
    return report, detectors
