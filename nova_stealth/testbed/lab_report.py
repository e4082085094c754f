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
"""results.json and report.md of a lab: the attackers, per background.

Every background (Markov, trace) is scored on its own: pooled over its
loads and per load, with the same scoring as the testbed's QEMU runs.
Also: flow counts per mode and load, and how often the path held the
stealthed flows back (alone, and while another lab flow was sending).
"""

import collections
import json
import os

import numpy as np

from nova_stealth.analysis import battery as battery_lib
from nova_stealth.analysis import battery_report
from nova_stealth.analysis import cover
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.testbed import lab
from nova_stealth.testbed import report as testbed_report
from nova_stealth.testbed import scoring
from nova_stealth.testbed import topology


def _pct(value):
    return '-' if value is None else '%.0f%%' % (100 * value)


def _overlaps(records):
    """{flow name: True if another lab flow of its site sent meanwhile}."""
    by_site = collections.defaultdict(list)
    for run in records:
        for flow in run['flows']:
            by_site[(run['background'], run['load'],
                     run.get('replica', 0))].append(flow)
    found = {}
    for flows in by_site.values():
        for flow in flows:
            found[flow['name']] = any(
                other is not flow and other['data_start'] < flow['data_end']
                and flow['data_start'] < other['data_end']
                for other in flows)
    return found


def _skipped(check):
    skipped = check.get('skipped_ticks', 0)
    return skipped / max(1, skipped + check.get('ticks', 0))


def rate_checks(records):
    """Per policy and overlap: mean share of 100 ms windows held back."""
    overlaps = _overlaps(records)
    groups = collections.defaultdict(list)
    for run in records:
        for flow in run['flows']:
            check = flow.get('rate_check')
            if check and check['held_back_share'] is not None:
                groups[(run['load'], flow['policy'],
                        'overlapped' if overlaps[flow['name']]
                        else 'alone')].append(check)
    return [{'load': load, 'policy': policy, 'when': when,
             'flows': len(checks),
             'held_back_share': float(np.mean(
                 [c['held_back_share'] for c in checks])),
             'sent_over_set': float(np.mean(
                 [c['sent_over_set'] for c in checks])),
             'skipped_ticks': float(np.mean([_skipped(c) for c in checks]))}
            for (load, policy, when), checks in sorted(groups.items())]


def background_load(records):
    """{'background/load': {'rl': share, 'rr': share}} from the captures.

    The background's bytes in each direction over the captures' time, as
    a share of the bottleneck: measured over every run, not a moment.
    """
    sums = collections.defaultdict(lambda: collections.Counter())
    for run in records:
        found = run.get('background_bytes')
        if found:
            sums['%s/%s' % (run['background'], run['load'])].update(found)
    capacity = topology.BOTTLENECK_MBIT * 1e6 / 8
    return {site: {side: total[side] / (total['seconds'] * capacity)
                   for side in ('rl', 'rr')}
            for site, total in sums.items() if total['seconds'] > 0}


def _attack_table(attacks, modes):
    attackers = sorted(attacks)
    lines = ['| mode | ' + ' | '.join(attackers) + ' |',
             '|---|' + '---|' * len(attackers)]
    for mode in modes:
        cells = []
        for attacker in attackers:
            result = attacks[attacker]
            rate = result['detection'].get(mode)
            fp = result['false_positive_rate']
            if isinstance(fp, dict):
                fp = fp.get(mode)
            cells.append('-' if rate is None else '%s (FP %s)' % (
                _pct(rate), _pct(fp)))
        lines.append('| %s | %s |' % (mode, ' | '.join(cells)))
    return lines


def score(records, seed=0):
    """Score one background's runs: pooled and per load."""
    pooled_by_load = collections.defaultdict(list)
    for run in records:
        pooled_by_load[run['load']] += scoring.labelled_flows([run])
    pooled = [item for load in sorted(pooled_by_load)
              for item in pooled_by_load[load]]
    modes = sorted({item[3] for item in pooled if item[1] == 'migration'})
    found = scoring.battery(pooled, seed)
    # The scores per flow are for the plots, not results.json.
    scores = found.pop('scores')
    return {'modes': modes, 'scores': scores,
            'counts': cover.counts(pooled),
            'battery': found,
            'cover': cover.judge(pooled, seed, run=scoring.battery),
            'pooled': scoring.attack(pooled, seed),
            'per_load': {load: scoring.attack(items, seed)
                         for load, items in sorted(pooled_by_load.items())},
            'rate_checks': rate_checks(records)}, pooled


def strongest(scored):
    """{mode: the battery's row of its strongest attacker, pooled}."""
    return _strongest(scored['modes'], scored['battery'])


def _strongest(modes, found):
    return {mode: battery_lib.strongest(found['results'], mode)
            for mode in modes}


def _battery_headline(modes, found):
    lines = ['| mode | strongest attacker (trained on) | ROC AUC [95% CI] | '
             'TPR at 1% FPR | TPR at 2% FPR |', '|---|---|---|---|---|']
    for mode, row in _strongest(modes, found).items():
        if row is None:
            lines.append('| %s | - | - | - | - |' % mode)
            continue
        low, high = row['auc_ci']
        lines.append('| %s | %s (%s) | %.3f [%.3f, %.3f] | %s | %s |' % (
            mode, row['attacker'], row['trained_on'], row['auc'], low, high,
            _pct(row['tpr_at_0.01']), _pct(row['tpr_at_0.02'])))
    return lines


def headline(results):
    """The battery's strongest attacker per mode, for each background."""
    lines = []
    for background, scored in sorted(results['backgrounds'].items()):
        lines += ['%s background, pooled over loads %s:' % (
            background, ', '.join(sorted(scored['counts'])))]
        lines += _battery_headline(scored['modes'], scored['battery']) + ['']
        lines += ['%s background, its cover class only (%s):' % (
            background, battery_report.floor_text(scored['cover']['floor']))]
        lines += _battery_headline(scored['modes'],
                                   scored['cover']['battery']) + ['']
    return '\n'.join(lines)


def markdown(results, plots):
    """report.md."""
    lines = ['# nova_stealth lab', '',
             'Migration-like flows through the engine (greedy senders for '
             'stealthed migrations, QEMU-paced senders for native ones) on '
             'the testbed\'s topology; %d runs, %.0f s from the first lab '
             'flow\'s start to the last one\'s end.' % (
                 len(results['runs']), results['seconds']), '']
    for background, scored in sorted(results['backgrounds'].items()):
        lines += ['## %s background' % background, '',
                  '### Flows scored (at least 1,000 packets)', '',
                  '| load | ' + ' | '.join(scored['modes']) +
                  ' | background |', '|---|' + '---|' * (
                      len(scored['modes']) + 1)]
        for load, row in sorted(scored['counts'].items()):
            lines.append('| %s | %s | %d |' % (load, ' | '.join(
                str(row.get(m, 0)) for m in scored['modes']),
                row.get('background', 0)))
        lines += ['', '### The strongest attacker of the battery, pooled '
                  'over loads', '']
        lines += _battery_headline(scored['modes'], scored['battery'])
        lines += ['', '### The strongest attacker against the cover class, '
                  'pooled over loads', '']
        lines += _battery_headline(scored['modes'],
                                   scored['cover']['battery'])
        # The battery's own section, a level down within this background.
        lines += [line.replace('## ', '### ', 1) if line.startswith('##')
                  else line for line in battery_report.markdown(
                      scored['battery']) + battery_report.cover_markdown(
                          scored['cover'])]
        lines += ['', '### The testbed\'s attackers, pooled over loads '
                  '(detection; false positives on background in brackets)',
                  '']
        lines += _attack_table(scored['pooled'], scored['modes'])
        for load, attacks in sorted(scored['per_load'].items()):
            lines += ['', '#### Load %s' % load, '']
            lines += _attack_table(attacks, scored['modes'])
        lines += ['', '### Stealthed flows held back by the path', '',
                  'Share of 100 ms windows in which the class sent under '
                  '80% of the rate its modulator set, and bytes sent over '
                  'bytes allowed; flows that overlapped another lab flow '
                  'apart from those that did not; and the share of the '
                  'modulator\'s 10 ms ticks it skipped (a busy CPU).', '',
                  '| load | policy | when | flows | held back | sent/set | '
                  'ticks skipped |', '|---|---|---|---|---|---|---|']
        for row in scored['rate_checks']:
            lines.append('| %s | %s | %s | %d | %s | %.2f | %s |' % (
                row['load'], row['policy'], row['when'], row['flows'],
                _pct(row['held_back_share']), row['sent_over_set'],
                _pct(row['skipped_ticks'])))
        lines.append('')
    lines += ['## Background load (share of the bottleneck, left to right / '
              'right to left)', '',
              'Over the %.0f s before the first run, and over all the '
              'runs\' captures.' % lab.SETTLE_SECONDS, '',
              '| site | before | during the runs |', '|---|---|---|']
    for site in sorted(set(results['loads']) |
                       set(results['background_load'])):
        before = results['loads'].get(site, {})
        during = results['background_load'].get(site, {})
        lines.append('| %s | %s / %s | %s / %s |' % (
            site, _pct(before.get('rl')), _pct(before.get('rr')),
            _pct(during.get('rl')), _pct(during.get('rr'))))
    if plots:
        lines += ['', '## Plots', ''] + ['![%s](%s)' % (p, p) for p in plots]
    return '\n'.join(lines) + '\n'


def _span(records):
    """Seconds from the first lab flow's start to the last one's end."""
    flows = [flow for run in records for flow in run['flows']]
    if not flows:
        return 0.0
    return (max(flow['ended'] for flow in flows) -
            min(flow['started'] for flow in flows))


def write(out_dir, records, loads, seed=0, with_plots=True):
    """Score the lab's runs; write results.json and report.md."""
    results = {'runs': [{k: run.get(k) for k in (
        'name', 'mode', 'policy', 'schedule', 'background', 'load', 'index',
        'replica', 'chaff_bytes', 'capture', 'truth', 'namespaces', 'started',
        'ended')} for run in records],
        'flows': [dict(flow, run=run['name']) for run in records
                  for flow in run['flows']],
        'loads': loads, 'seconds': _span(records), 'backgrounds': {},
        'background_load': background_load(records)}
    made = []
    for background in sorted({run['background'] for run in records}):
        mine = [run for run in records if run['background'] == background]
        scored, pooled = score(mine, seed)
        scores = scored.pop('scores')
        results['backgrounds'][background] = scored
        if with_plots:
            summary = scoring.summarise(mine, scored['pooled'],
                                        scored['battery'])
            sub = os.path.join(out_dir, background)
            os.makedirs(sub, exist_ok=True)
            names = testbed_report.plots(sub, mine, pooled, summary)
            names += battery_report.plots(
                sub, [s.label for s in pooled], [s.mode for s in pooled],
                [s.flow.window_cvs for s in pooled], scores,
                flow_lib.WINDOWS)
            made += [os.path.join(background, name) for name in names]
    with open(os.path.join(out_dir, 'results.json'), 'w') as out:
        json.dump(results, out, indent=1, sort_keys=True)
    with open(os.path.join(out_dir, 'report.md'), 'w') as out:
        out.write(markdown(results, made))
    return results
