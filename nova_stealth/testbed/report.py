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
"""results.json, report.md and plots of a testbed experiment."""

import collections
import json
import os

import numpy as np

from nova_stealth.analysis import battery_report
from nova_stealth.analysis import cover
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import report as audit_report
from nova_stealth.analysis import tells
from nova_stealth.testbed import scoring
from nova_stealth import units

#: What the paper reports, for the side-by-side table.
PAPER = {'native': 'detected ~80% (Alg. 1) and ~90% (Alg. 2) at 1-2% FP',
         'stealth': 'detected 0%; time ratio 1.1-1.3; downtime +0.37 s'}
RUN_KEYS = ('name', 'mode', 'policy', 'schedule', 'load', 'guest',
            'memory_mib', 'index', 'rate_mib_s', 'total_time_s',
            'downtime_ms', 'transferred_bytes', 'dirty_sync_count',
            'chaff_bytes', 'time_ratio', 'downtime_delta_ms',
            'chaff_overhead', 'native_reference', 'capture', 'truth',
            'qemu', 'qemu_package', 'avail_switchover_bandwidth',
            'downtime_limit_ms', 'matched_for', 'baseline',
            'switchover_wait_ms', 'agent', 'namespaces')


def _pct(value):
    return '-' if value is None else '%.0f%%' % (100 * value)


def _num(value, fmt='%.2f'):
    return '-' if value is None else fmt % value


def side_by_side(summary):
    """The headline table: one row per mode, one column per attacker."""
    attackers = sorted({a for entry in summary.values()
                        for a in entry['attackers']})
    lines = ['| mode | runs | ' + ' | '.join(attackers) +
             ' | time ratio | downtime delta (ms) | chaff overhead |',
             '|---|---|' + '---|' * (len(attackers) + 3)]
    for mode, entry in summary.items():
        cells = []
        for attacker in attackers:
            found = entry['attackers'].get(attacker)
            cells.append('-' if not found else '%s (FP %s)' % (
                _pct(found['detection_rate']),
                _pct(found['false_positive_rate'])))
        lines.append('| %s | %d | %s | %s | %s | %s |' % (
            mode, entry['runs'], ' | '.join(cells),
            _num(entry.get('time_ratio')),
            _num(entry.get('downtime_delta_ms'), '%.0f'),
            _pct(entry.get('chaff_overhead'))))
    return '\n'.join(lines)


def _quantile(values, q):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return float(np.quantile(values, q))


def costs_table(runs):
    """Downtime, time and chaff of stealthed runs, per mode and load.

    Downtime is QEMU's figure; the delta is against each run's native
    reference (``baseline``: matched or closest), as median and 95th
    percentile over the runs.
    """
    lines = ['| mode | load | runs | baseline | downtime median (ms) | '
             'native median (ms) | delta median (ms) | delta p95 (ms) | '
             'time ratio | chaff |', '|---|---|---|---|---|---|---|---|---|'
             '---|']
    groups = collections.OrderedDict()
    for run in runs:
        if run['mode'] != 'native':
            groups.setdefault((run['policy'], run['load']), []).append(run)
    names = {run['name']: run for run in runs}
    for (policy, load), mine in sorted(groups.items()):
        natives = [names[r['native_reference']] for r in mine
                   if r.get('native_reference') in names]
        lines.append('| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |' % (
            policy, load, len(mine),
            ','.join(sorted({r.get('baseline') or '-' for r in mine})),
            _num(_quantile([r['downtime_ms'] for r in mine], 0.5), '%.0f'),
            _num(_quantile([n['downtime_ms'] for n in natives], 0.5),
                 '%.0f'),
            _num(_quantile([r.get('downtime_delta_ms') for r in mine], 0.5),
                 '%+.0f'),
            _num(_quantile([r.get('downtime_delta_ms') for r in mine],
                           0.95), '%+.0f'),
            _num(_quantile([r.get('time_ratio') for r in mine], 0.5)),
            _pct(_quantile([r.get('chaff_overhead') for r in mine], 0.5))))
    return '\n'.join(lines)


def markdown(results, plots):
    """report.md."""
    lines = ['# nova_stealth testbed', '',
             'Detection of each mode\'s migrations by each attacker (false '
             'positives on background flows in brackets), and costs '
             'against native migration of the same VM in the same run.', '',
             'QEMU: %s.' % ', '.join(results['qemu']), '',
             side_by_side(results['summary']), '',
             'The paper: native %s; stealth %s.' % (PAPER['native'],
                                                    PAPER['stealth']), '',
             '## Background load (share of the 100 Mbit/s bottleneck, '
             'left to right / right to left)', '',
             '| load | measured |', '|---|---|']
    for load, measured in sorted(results['loads'].items()):
        lines.append('| %s | %s / %s |' % (load, _pct(measured.get('rl')),
                                           _pct(measured.get('rr'))))
    lines += ['', '## Costs of the stealthed runs (medians over runs)', '',
              costs_table(results['runs'])]
    lines += ['', '## Runs', '',
              '| run | mode | load | rate | QEMU time (s) | downtime (ms) | '
              'sent (MiB) | dirty syncs | chaff (MiB) | time ratio |',
              '|---|---|---|---|---|---|---|---|---|---|']
    for run in results['runs']:
        lines.append('| %s | %s | %s | %s | %.1f | %.0f | %.1f | %s | %.1f '
                     '| %s |' % (
                         run['name'], run['mode'], run['load'],
                         run['policy'] or '%g MiB/s' % run['rate_mib_s'],
                         run['total_time_s'], run['downtime_ms'],
                         run['transferred_bytes'] / units.MIB,
                         run.get('dirty_sync_count', '-'),
                         run['chaff_bytes'] / units.MIB,
                         _num(run.get('time_ratio'))))
    lines += battery_report.markdown(results['battery'])
    if results.get('cover'):
        lines += battery_report.cover_markdown(results['cover'])
    lines += tells_markdown(results.get('tells'))
    lines += ['', '## Chi-square test against background (Section VI)', '',
              '| flows | chi2 | p-value | result |', '|---|---|---|---|']
    for row in results['chi_square']:
        lines.append('| %s | %.2f | %.3f | %s |' % (
            row['a'], row['statistic'], row['p_value'],
            'distinguishable' if row['distinguishable']
            else 'indistinguishable'))
    lines += ['', '## Median throughput CV per packet window (Tables II, '
              'IV)', '', '| flows | n | ' +
              ' | '.join(str(w) for w in flow_lib.WINDOWS) + ' |',
              '|---|---|' + '---|' * len(flow_lib.WINDOWS)]
    for row in results['cv_table']:
        lines.append('| %s | %d | %s |' % (
            row['group'], row['flows'], ' | '.join(
                _num(row['cv'][w], '%.3f') for w in flow_lib.WINDOWS)))
    notes = sorted({note for result in results['attacks'].values()
                    for note in result['notes']})
    if notes:
        lines += ['', '## Notes', ''] + ['- %s' % n for n in notes]
    if plots:
        lines += ['', '## Plots', ''] + ['![%s](%s)' % (p, p) for p in plots]
    return '\n'.join(lines) + '\n'


def tells_markdown(found):
    """report.md's tells: each alone at 2% FPR, per load, then pooled."""
    if not found:
        return []
    lines = ['', '## Tells besides timing, each alone at %d%% FPR' % (
        100 * tells.OPERATING_FPR), '',
        'Migrations (native and stealthed) and chaff flows caught by the '
        'observer\'s best rule on one tell, learned on these flows '
        '(their best case); see the pooled tables below.', '',
        '| load | tell | migrations caught | chaff caught |',
        '|---|---|---|---|']
    groups = list(found['per_load'].items()) + [('pooled',
                                                 found['pooled'])]
    for load, summary in groups:
        for tell, table in summary.items():
            point = table['operating_point']
            lines.append('| %s | %s | %s | %s |' % (
                load, tell, *tells.caught(point)))
    return lines + tells.markdown(found['pooled'])


def plots(out_dir, runs, pooled, summary):
    """Throughput of one native and one stealthed migration; detections."""
    names = []
    chosen = {}
    for sample in pooled:
        if sample.label == 'migration' and sample.mode not in chosen:
            chosen[sample.mode] = sample.flow.key
    if chosen:
        keys = list(chosen.values())
        series = audit_report.throughput_series(
            [r['capture'] for r in runs], keys, seconds=5.0)
        audit_report.plot_throughput(
            series, {key: mode for mode, key in chosen.items()},
            os.path.join(out_dir, 'throughput.png'))
        names.append('throughput.png')
    for mode, entry in summary.items():
        if entry['attackers']:
            name = 'detection-%s.png' % mode
            audit_report.plot_detection(entry['attackers'],
                                        os.path.join(out_dir, name))
            names.append(name)
    return names


def write(out_dir, runs, loads, seed=0, with_plots=True):
    """Score the runs and write results.json and report.md."""
    found_tells = []
    pooled = scoring.labelled_flows(runs, tells_out=found_tells)
    attacks = scoring.attack(pooled, seed)
    found = scoring.battery(pooled, seed)
    scores_by = found.pop('scores')
    scoring.costs(runs)
    summary = scoring.summarise(runs, attacks, found)
    chi, cv = scoring.tables(pooled)
    results = {'runs': [{k: run.get(k) for k in RUN_KEYS} for run in runs],
               'summary': summary, 'attacks': attacks, 'loads': loads,
               'battery': found,
               'cover': cover.judge(pooled, seed, run=scoring.battery),
               'tells': scoring.tells_by_load(found_tells),
               'qemu': sorted({run.get('qemu_package') or run.get('qemu') or
                               'unknown' for run in runs}),
               'chi_square': chi,
               'cv_table': [dict(row, cv={str(w): c for w, c in
                                          row['cv'].items()})
                            for row in cv]}
    with open(os.path.join(out_dir, 'results.json'), 'w') as out:
        json.dump(results, out, indent=1, sort_keys=True)
    made = []
    if with_plots:
        made = plots(out_dir, runs, pooled, summary)
        made += battery_report.plots(
            out_dir, [s.label for s in pooled], [s.mode for s in pooled],
            [s.flow.window_cvs for s in pooled], scores_by,
            flow_lib.WINDOWS)
    for row in results['cv_table']:
        row['cv'] = {int(w): c for w, c in row['cv'].items()}
    with open(os.path.join(out_dir, 'report.md'), 'w') as out:
        out.write(markdown(results, made))
    return results
