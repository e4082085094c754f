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
"""report.json, report.md and the PNG plots of an audit."""

import json
import os

import numpy as np

from nova_stealth.analysis import battery_report
from nova_stealth.analysis import capture
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import tells

PLOT_SECONDS = 5.0
PLOT_BIN = 0.01


def _key_columns(key):
    """The packed columns flow_lib.FlowTable uses, for one key."""
    src_hi, src_lo = flow_lib.address_halves(key.src)
    dst_hi, dst_lo = flow_lib.address_halves(key.dst)
    return (flow_lib.PROTOCOL_NUMBERS[key.proto], key.sport, key.dport,
            src_hi, src_lo, dst_hi, dst_lo)


def throughput_series(paths, keys, seconds=PLOT_SECONDS, bin_s=PLOT_BIN):
    """Bytes per bin over the first ``seconds`` of each flow, in Mbit/s.

    A second pass over the captures, for the few flows that are plotted.
    """
    wanted = {key: _key_columns(key) for key in keys}
    first = {}
    bins = {key: np.zeros(int(seconds / bin_s)) for key in keys}
    for path in paths:
        for batch in capture.CaptureReader(path, tolerant=True):
            for key, (proto, sport, dport, shi, slo, dhi, dlo) in (
                    wanted.items()):
                match = ((batch.proto == proto) & (batch.sport == sport) &
                         (batch.dport == dport) & (batch.src_lo == slo) &
                         (batch.src_hi == shi) & (batch.dst_lo == dlo) &
                         (batch.dst_hi == dhi))
                if not match.any():
                    continue
                times = batch.time_ns[match]
                first.setdefault(key, int(times[0]))
                index = (times - first[key]) // int(bin_s * 1e9)
                # A clock stepped back leaves packets before the first.
                inside = (index >= 0) & (index < len(bins[key]))
                np.add.at(bins[key], index[inside],
                          batch.wire_len[match][inside])
    return {key: series * 8 / bin_s / 1e6 for key, series in bins.items()}


def plot_throughput(series, labels, path):
    """Throughput over time of chosen flows, one panel each (Figures 1, 6)."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(len(series), 1, squeeze=False,
                                   figsize=(8, 2.2 * len(series)))
    for axis, (key, values) in zip(axes[:, 0], series.items()):
        times = np.arange(len(values)) * PLOT_BIN
        axis.plot(times, values, linewidth=0.8)
        axis.set_title('%s (%s)' % (key, labels.get(key, '')), fontsize=8)
        axis.set_ylabel('Mbit/s')
    axes[-1, 0].set_xlabel('seconds since the flow began (%d ms bins)'
                           % int(PLOT_BIN * 1000))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def plot_detection(detectors, path):
    """Detected migrations and false positives per detector (Figs 3, 4)."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    names = [n for n, d in detectors.items()
             if d.get('detection_rate') is not None]
    figure, axis = pyplot.subplots(figsize=(8, 3.5))
    x = np.arange(len(names))
    detection = [100 * detectors[n]['detection_rate'] for n in names]
    false_positive = [100 * (detectors[n]['false_positive_rate'] or 0)
                      for n in names]
    axis.bar(x - 0.2, detection, 0.4, label='migrations detected (%)')
    axis.bar(x + 0.2, false_positive, 0.4, label='false positives (%)')
    axis.set_xticks(x)
    axis.set_xticklabels(names, rotation=15, fontsize=8)
    axis.set_ylim(0, 105)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _rate(value):
    return '-' if value is None else '%.1f%%' % (100 * value)


def _number(value, digits=3):
    return '-' if value is None else '%.*f' % (digits, value)


def markdown(report, plots):
    """report.md: the summary tables and links to the plots."""
    lines = ['# nova_stealth audit', '']
    for capture_info in report['captures']:
        lines.append('- `%s`: %d packets%s' % (
            capture_info['path'], capture_info['packets'],
            ' (stopped: %s)' % capture_info['error']
            if capture_info['error'] else ''))
    lines += ['', '%d flows after filtering (%s).' % (
        len(report['flows']), ', '.join('%s=%s' % item for item in
                                        report['options'].items())), '']
    for note in report['notes']:
        lines.append('> %s' % note)
    lines += ['', '## Detectors', '',
              '| detector | detection rate | false positives | ROC AUC | '
              'migrations | others | unscored | evaluated on |',
              '|---|---|---|---|---|---|---|---|']
    for name, summary in report['detectors'].items():
        lines.append('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
            name, _rate(summary.get('detection_rate')),
            _rate(summary.get('false_positive_rate')),
            _number(summary.get('auc')), summary.get('migrations', '-'),
            summary.get('negatives', '-'), summary.get('unscored', '-'),
            summary.get('evaluated_on', '-')))
    if report.get('battery'):
        lines += battery_report.markdown(report['battery'])
    if report.get('cover'):
        lines += battery_report.cover_markdown(report['cover'])
    if report.get('chi_square'):
        lines += ['', '## Chi-square test of inter-packet times '
                  '(Section VI)', '',
                  '| compared flows | chi2 | p-value | result (alpha 0.05) |',
                  '|---|---|---|---|']
        for row in report['chi_square']:
            lines.append('| %s <> %s | %.2f | %.3f | %s |' % (
                row['a'], row['b'], row['statistic'], row['p_value'],
                'distinguishable' if row['distinguishable']
                else 'indistinguishable'))
    windows = flow_lib.WINDOWS
    lines += ['', '## Throughput CV per packet window (Tables II and IV)',
              '', '| flows | n | ' + ' | '.join(str(w) for w in windows) +
              ' |', '|---|---|' + '---|' * len(windows)]
    for row in report['cv_table']:
        lines.append('| %s | %d | %s |' % (row['group'], row['flows'],
                                           ' | '.join(
                                               _number(row['cv'][w])
                                               for w in windows)))
    lines += tells.markdown(report.get('tells'))
    flagged = [f for f in report['flows']
               if f['label'] == 'migration' or any(f['verdicts'].values())]
    lines += ['', '## Migrations and flagged flows', '',
              '| flow | label | packets | ' +
              ' | '.join(report['detectors']) + ' |',
              '|---|---|---|' + '---|' * len(report['detectors'])]
    for flow in flagged[:200]:
        lines.append('| %s [%s]:%d -> [%s]:%d | %s | %d | %s |' % (
            flow['proto'], flow['src'], flow['sport'], flow['dst'],
            flow['dport'], '%s/%s' % (flow['label'], flow['kind'])
            if flow['label'] else '-', flow['packets'],
            ' | '.join({True: 'flagged', False: '', None: 'n/a'}[
                flow['verdicts'][name]] for name in report['detectors'])))
    if plots:
        lines += ['', '## Plots', '']
        lines += ['![%s](%s)' % (name, name) for name in plots]
    return '\n'.join(lines) + '\n'


def write(out_dir, report, plots=()):
    """Write report.json and report.md into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'report.json'), 'w') as report_file:
        json.dump(report, report_file, indent=1, sort_keys=True)
    with open(os.path.join(out_dir, 'report.md'), 'w') as report_file:
        report_file.write(markdown(report, plots))
