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
"""Score the testbed's captures with the audit toolkit.

Attackers, each judging every migration flow and every background flow:

* ``pattern``: Algorithm 1 at the paper's settings;
* ``maxent-<windows>``: Algorithm 2 trained as in the paper, on native
  migrations against background flows, for each of the paper's window
  sets; native and background flows are judged out of fold (stratified
  K-fold), stealthed ones by the model trained on all of them;
* ``maxent``: of those, the one an attacker would pick, with the best
  out-of-fold balanced accuracy on native against background (chosen on
  the same folds, so a little optimistic for native flows);
* ``adaptive-<windows>``: the adversary who knows the defence, Algorithm 2
  trained on stealthed migrations of the policy judged against background
  flows, out of fold; it needs two stealthed runs of that policy.

The battery (:mod:`nova_stealth.analysis.battery`): every attacker of it
trained on native migrations and, apart, on each stealthed mode, judged by
cross-validation grouped by run, with ROC AUC [95% CI] and TPR at 1% and
2% FPR pooled and per load (:func:`battery`).

Costs compare a stealthed run with a native run of the same load, guest
and run index: the one run at the stealthed run's own mean throughput
(``--matched``: ``baseline`` says ``matched``), else the one whose
throughput is closest (``closest``): time ratio, downtime difference, and
chaff bytes as a share of the bytes QEMU sent.
"""

import collections
import math

import numpy as np

from nova_stealth.analysis import audit
from nova_stealth.analysis import battery as battery_lib
from nova_stealth.analysis import detectors as detector_lib
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import stats
from nova_stealth.analysis import tells
from nova_stealth.analysis import truth

FOLDS = 5
#: The MaxEnt attacker's false-positive budget. The paper reports detection
#: at 1-2% false positives; with many more background flows than
#: migrations a logistic model's 0.5 threshold flags almost nothing, so the
#: attacker takes the ROC point that spends this budget instead.
FP_BUDGET = 0.02


def mode_name(run):
    """``native`` or the stealthed run's rate policy."""
    return run['policy'] or 'native'


def labelled_flows(runs, options=None, tells_out=None):
    """Every flow of every capture with its label, kind, mode, run, load.

    :param options: :class:`flows.FlowOptions` (default: the attacker's
        filtering, with the multi-scale features the battery needs)
    :param tells_out: a list to which, read in the same pass, each flow's
        (tells, label, load) is added (:mod:`nova_stealth.analysis.tells`)

    :returns: [battery.Sample(flow, label, kind, mode, run, load)], labels
        from the truth files; migration flows carry their run's mode; run
        is the run's name (the cross-validation group)
    """
    pooled = []
    options = options or flow_lib.FlowOptions(multiscale=True)
    for run in runs:
        labels = truth.load(run['truth'])
        table = tells.TellTable(options) if tells_out is not None else None
        flows, _ = flow_lib.read_flows([run['capture']], options,
                                       also=[table] if table else [])
        for flow in flows:
            label, kind = truth.label_of(flow.key, labels)
            pooled.append(battery_lib.Sample(flow, label, kind,
                                             mode_name(run), run['name'],
                                             run.get('load')))
            if table is not None:
                tells_out.append((table.tells_of(flow.key), label,
                                  run.get('load')))
    return pooled


def tells_by_load(found):
    """The tells' tallies pooled and per load, from ``tells_out``.

    :returns: {'pooled': tally, 'per_load': {load: tally}}, or None when
        the captures held no payload (a snap length of headers only)
    """
    if not any(flow_tells and flow_tells['payload_prefix'] != 'none'
               for flow_tells, _, _ in found):
        return None
    per_load = collections.defaultdict(list)
    for entry in found:
        per_load[entry[2]].append(entry)

    def of(entries):
        return tells.tally([e[0] for e in entries], [e[1] for e in entries])
    return {'pooled': of(found),
            'per_load': {load: of(entries)
                         for load, entries in sorted(per_load.items())}}


def _out_of_fold(flows, positive, windows, seed):
    """Out-of-fold probabilities, and the model fitted on every flow."""
    labels = [('migration' if p else 'background', None) for p in positive]
    folds = min(FOLDS, sum(positive), len(positive) - sum(positive))
    if folds >= 2:
        return audit.cross_validated(flows, labels, windows, folds, seed)
    model = audit.train_maxent(flows, labels, windows)
    return model.predict_proba(flows)[:, 1], model


def _verdicts(probabilities, threshold=0.5):
    probabilities = np.asarray(probabilities, dtype=float)
    return np.nan_to_num(probabilities, nan=0.0) >= threshold


def operating_threshold(background, budget=FP_BUDGET):
    """The lowest threshold that flags at most ``budget`` of ``background``.

    Fewer background flows than ``1 / budget`` cannot measure the budget
    (none may be flagged, so the threshold would follow the single highest
    score): the model's own 0.5 stands then.

    :param background: out-of-fold migration probabilities of background
        flows
    """
    scores = np.sort(np.nan_to_num(np.asarray(background, dtype=float),
                                   nan=0.0))
    if len(scores) * budget < 1:
        return 0.5
    allowed = int(np.floor(budget * len(scores)))
    return float(np.nextafter(scores[len(scores) - allowed - 1], np.inf))


def attack(pooled, seed=0):
    """Run every attacker; return {attacker: {mode: share}, 'fp': ...}.

    :returns: {attacker: {'detection': {mode: rate}, 'false_positive_rate':
        rate, 'notes': [...]}}
    """
    migrations = collections.defaultdict(list)
    background = []
    for sample in pooled:
        if sample.label == 'migration':
            migrations[sample.mode].append(sample.flow)
        elif sample.label == 'background':
            background.append(sample.flow)
    results = {}
    pattern = detector_lib.PatternMatchingDetector().fit(None)
    results['pattern'] = {
        'detection': {mode: float(pattern.predict(flows).mean())
                      for mode, flows in migrations.items()},
        'false_positive_rate': _share(pattern.predict(background)),
        'notes': []}
    native = migrations.get('native', [])
    for windows in detector_lib.WINDOW_SETS:
        name = detector_lib.maxent_name(windows)
        if native and background:
            results[name] = _maxent(native, background, migrations, windows,
                                    seed, 'native')
        for mode, flows in migrations.items():
            if mode == 'native' or len(flows) < 2 or not background:
                continue
            adaptive = 'adaptive-' + name.split('-', 1)[1]
            entry = _maxent(flows, background, {mode: flows}, windows, seed,
                            mode)
            found = results.setdefault(adaptive, {
                'detection': {}, 'false_positive_rate': {}, 'notes': []})
            found['notes'] += ['%s: %s' % (mode, note)
                               for note in entry['notes']]
            if mode in entry['detection']:
                found['detection'][mode] = entry['detection'][mode]
                found['false_positive_rate'][mode] = entry[
                    'false_positive_rate']
    trained = [name for name in results if name.startswith('maxent-') and
               results[name].get('balanced_accuracy') is not None]
    if trained:
        best = max(trained, key=lambda n: results[n]['balanced_accuracy'])
        results['maxent'] = dict(results[best], notes=results[best][
            'notes'] + ['maxent: the window set with the best out-of-fold '
                        'balanced accuracy on its training data, %s' % best])
    return results


def battery(pooled, seed=0, folds=battery_lib.FOLDS):
    """The battery's results: rows, two-sample tests, notes, counts.

    All JSON-ready but ``scores``: {(attacker, trained_on): out-of-fold
    score per flow of ``pooled``}, for the plots.
    """
    found = battery_lib.run(pooled, seed=seed, folds=folds)
    return dict(found, counts=_counts(pooled))


def _counts(pooled):
    """Flows per (label/mode, load), and runs: what the figures rest on."""
    counts = collections.Counter()
    runs = collections.defaultdict(set)
    for sample in pooled:
        if sample.label not in ('migration', 'background'):
            continue
        name = (sample.label if sample.label == 'background'
                else 'migration/%s' % sample.mode)
        counts['%s|%s' % (name, sample.load)] += 1
        runs[name].add(sample.run)
    return {'flows': dict(counts),
            'runs': {name: len(found) for name, found in runs.items()}}


def _share(verdicts):
    verdicts = np.asarray(verdicts, dtype=bool)
    return float(verdicts.mean()) if len(verdicts) else None


def _maxent(trained, background, migrations, windows, seed, trained_mode):
    flows = list(trained) + list(background)
    positive = [True] * len(trained) + [False] * len(background)
    try:
        probabilities, model = _out_of_fold(flows, positive, windows, seed)
    except ValueError as e:
        return {'detection': {}, 'false_positive_rate': None,
                'notes': ['not trained: %s' % e]}
    threshold = operating_threshold(probabilities[len(trained):])
    flagged = _verdicts(probabilities, threshold)
    detection = {trained_mode: _share(flagged[:len(trained)])}
    false_positive_rate = _share(flagged[len(trained):])
    for mode, others in migrations.items():
        if mode != trained_mode:
            detection[mode] = _share(_verdicts(
                model.predict_proba(others)[:, 1], threshold))
    notes = []
    if sum(positive) < 2:
        notes.append('one %s migration: judged by a model that saw it'
                     % trained_mode)
    return {'detection': detection,
            'false_positive_rate': false_positive_rate,
            'balanced_accuracy': (detection[trained_mode] + 1.0 -
                                  false_positive_rate) / 2.0,
            'notes': notes}


def costs(runs):
    """Per stealthed run: time ratio, downtime delta, chaff overhead."""
    native = [r for r in runs if r['mode'] == 'native']
    for run in runs:
        if run['mode'] == 'native':
            continue
        peers = [n for n in native
                 if (n['load'], n['guest'], n['memory_mib'],
                     n.get('index')) == (run['load'], run['guest'],
                                         run['memory_mib'], run.get('index'))]
        throughput = run['transferred_bytes'] / max(run['total_time_s'],
                                                    1e-9)
        matched = [n for n in peers if n.get('matched_for') == run['name']]
        if matched:
            # A native run at this run's own mean throughput.
            peer = matched[0]
            run['baseline'] = 'matched'
        elif peers:
            peer = min(peers, key=lambda n: abs(
                n['transferred_bytes'] / n['total_time_s'] - throughput))
            run['baseline'] = 'closest'
        if peers:
            run['native_reference'] = peer['name']
            run['time_ratio'] = run['total_time_s'] / peer['total_time_s']
            run['downtime_delta_ms'] = (run['downtime_ms'] -
                                        peer['downtime_ms'])
        run['chaff_overhead'] = (run['chaff_bytes'] /
                                 max(run['transferred_bytes'], 1))
    return runs


def _mean(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def summarise(runs, attacks, found=None):
    """The ``summary`` of results.json, one entry per mode.

    :param found: the battery's results; each mode then carries its pooled
        rows (attacker, trained_on, auc, auc_ci, tpr_at_0.01/0.02)
    """
    summary = {}
    for mode in sorted({mode_name(r) for r in runs}):
        mine = [r for r in runs if mode_name(r) == mode]
        entry = {'runs': len(mine), 'attackers': {}}
        for attacker, result in attacks.items():
            if mode not in result['detection']:
                continue
            fp = result['false_positive_rate']
            if isinstance(fp, dict):
                fp = fp.get(mode)
            entry['attackers'][attacker] = {
                'detection_rate': result['detection'][mode],
                'false_positive_rate': fp}
        if found is not None:
            entry['battery'] = [row for row in found['results']
                                if row['mode'] == mode and
                                row['load'] == 'all']
        if mode != 'native':
            entry['time_ratio'] = _mean([r.get('time_ratio') for r in mine])
            entry['downtime_delta_ms'] = _mean(
                [r.get('downtime_delta_ms') for r in mine])
            entry['chaff_overhead'] = _mean(
                [r.get('chaff_overhead') for r in mine])
        summary[mode] = entry
    return summary


def tables(pooled):
    """Chi-square of each mode against background, and the CV table."""
    groups = collections.defaultdict(list)
    for flow, label, kind, mode, _run, _load in pooled:
        if label == 'migration':
            groups['migration/%s' % mode].append(flow)
        elif label == 'background':
            groups['background/%s' % kind].append(flow)
            groups['background (all)'].append(flow)
    chi = []
    for name, flows in sorted(groups.items()):
        if name.startswith('migration'):
            result = stats.chi_square(flows, groups['background (all)'])
            if result:
                chi.append(dict(result, a=name, b='background (all)'))
    return chi, stats.cv_table(dict(sorted(groups.items())),
                               flow_lib.WINDOWS)
