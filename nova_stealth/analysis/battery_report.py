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
"""The battery's tables and plots, for the testbed's and the audit's report.
"""

import os
import warnings

import numpy as np

from nova_stealth.analysis import battery


def _pct(value):
    return '-' if value is None else '%.0f%%' % (100 * value)


def _auc(row):
    low, high = row['auc_ci']
    if row['auc'] is None:
        return '-'
    return '%.3f [%.3f, %.3f]' % (row['auc'], low, high)


def tables(results):
    """Markdown lines: one table per load, a row per attacker and mode."""
    loads = sorted({r['load'] for r in results}, key=lambda v: (
        v != 'all', str(v)))
    lines = []
    for load in loads:
        title = 'pooled (all loads)' if load == 'all' else load
        lines += ['', '### Load %s' % title, '',
                  '| attacker | trained on | mode | migrations | background '
                  '| ROC AUC [95% CI] | TPR at 1% FPR | TPR at 2% FPR |',
                  '|---|---|---|---|---|---|---|---|']
        rows = sorted((r for r in results if r['load'] == load),
                      key=lambda r: (r['mode'] != 'native', r['mode'],
                                     r['attacker'],
                                     r['trained_on'] != 'native'))
        for row in rows:
            lines.append('| %s | %s | %s | %d | %d | %s | %s | %s |' % (
                row['attacker'], row['trained_on'], row['mode'],
                row['positives'], row['negatives'], _auc(row),
                _pct(row['tpr_at_0.01']), _pct(row['tpr_at_0.02'])))
    return lines


def markdown(found):
    """The battery's section of a report.md."""
    lines = ['', '## The attacker battery', '',
             'Every attacker judges each flow by a model that saw no flow '
             'of its run (cross-validation grouped by run). "trained on '
             'native": as the paper trains; "trained on <mode>": the '
             'adversary who knows the defence. AUC with a 95% bootstrap '
             'interval; TPR at the threshold that flags at most 1% / 2% of '
             'background flows (with fewer than 100 / 50 background flows '
             'that is none of them).']
    lines += _strongest_lines(found['results'])
    lines += tables(found['results'])
    lines += two_sample_lines(found.get('two_sample'))
    counts = found.get('counts')
    if counts:
        lines += ['', 'Runs: ' + ', '.join(
            '%s %d' % item for item in sorted(counts['runs'].items()))]
    if found.get('notes'):
        lines += [''] + ['> %s' % note for note in found['notes']]
    return lines


def _strongest_lines(results):
    modes = sorted({r['mode'] for r in results})
    best = [(mode, battery.strongest(results, mode)) for mode in modes]
    best = [(mode, row) for mode, row in best if row]
    if not best:
        return []
    summary = '; '.join(
        '%s: %s trained on %s, TPR %s at 2%% FPR, AUC %s' % (
            mode, row['attacker'], row['trained_on'],
            _pct(row['tpr_at_0.02']), _auc(row)) for mode, row in best)
    return ['', 'The strongest attacker per mode, pooled (by TPR at '
            '2%% FPR, then AUC): %s.' % summary]


def floor_text(floor):
    """The cover class's floor (:func:`cover.select`), in words."""
    if floor is None:
        return 'no migration to set a floor'
    return ('flows of at least %.1f MB and %.2f MB/s, half the smallest '
            'and slowest migration\'s' % (floor['bytes'] / 1e6,
                                          floor['rate'] / 1e6))


def cover_markdown(cover):
    """The battery's section against the cover class (cover.judge's)."""
    found = cover['battery']
    modes = sorted({r['mode'] for r in found['results']})
    lines = ['', '## Against the cover class', '',
             'The battery again, against only the background flows an '
             'observer could take for a migration by their size and rate '
             '(%s): the rest are told apart by their size before any '
             'attacker runs, and are left out here.' % floor_text(
                 cover['floor']), '',
             '| load | ' + ''.join('%s | ' % m for m in modes) +
             'background |', '|---|' + '---|' * (len(modes) + 1)]
    for load, row in sorted(cover['counts'].items()):
        lines.append('| %s | %s%d |' % (load, ''.join(
            '%d | ' % row.get(m, 0) for m in modes),
            row.get('background', 0)))
    lines += _strongest_lines(found['results'])
    lines += tables(found['results'])
    if found.get('notes'):
        lines += [''] + ['> %s' % note for note in found['notes']]
    return lines


def roc_points(labels, scores):
    """(false-positive rates, true-positive rates) of every threshold."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    order = np.argsort(-scores, kind='stable')
    labels = labels[order]
    tpr = np.concatenate(([0.0], np.cumsum(labels) / max(labels.sum(), 1)))
    fpr = np.concatenate(([0.0], np.cumsum(~labels) /
                          max((~labels).sum(), 1)))
    return fpr, tpr


def two_sample_lines(rows):
    """Markdown lines: the two-sample tests, per mode and load."""
    if not rows:
        return []
    lines = ['', '### Two-sample tests: migrations against background', '',
             'c2st: the held-out AUC of gbm trained on the mode, p-value of '
             'labels permuted within folds; mmd: unbiased MMD^2 on log '
             'throughput CV per paper window, Gaussian kernel, p-value of '
             'labels permuted. Small p: the two are told apart.', '',
             '| test | mode | load | migrations | background | statistic '
             '| p-value |', '|---|---|---|---|---|---|---|']
    for row in sorted(rows, key=lambda r: (r['test'], r['mode'],
                                           r['load'] != 'all',
                                           str(r['load']))):
        statistic = ('AUC %.3f' % row['auc'] if row['test'] == 'c2st'
                     else 'MMD2 %.4f' % row['mmd2'])
        lines.append('| %s | %s | %s | %d | %d | %s | %.4f |' % (
            row['test'], row['mode'], row['load'], row['migrations'],
            row['background'], statistic, row['p_value']))
    return lines


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    return pyplot


def plot_roc(labels, modes, scores_by, out_dir):
    """roc-<mode>.png: each attacker's ROC on that mode against background.

    :param labels: per flow, its label (migration, background...)
    :param modes: per flow, the mode of a migration
    :param scores_by: {(attacker, trained_on): out-of-fold scores per flow}
    :returns: the names of the files written
    """
    pyplot = _pyplot()
    labels = np.asarray(labels, dtype=object)
    modes = np.asarray(modes, dtype=object)
    written = []
    for mode in sorted({m for m, l in zip(modes, labels)
                        if l == 'migration'}):
        chosen = (labels == 'background') | ((labels == 'migration') &
                                             (modes == mode))
        positive = (labels == 'migration')[chosen]
        figure, axis = pyplot.subplots(figsize=(5.5, 5))
        for (attacker, trained_on), scores in sorted(scores_by.items()):
            mine = np.asarray(scores, dtype=float)[chosen]
            if np.isnan(mine).all() or trained_on not in ('native', mode):
                continue
            fpr, tpr = roc_points(positive, mine)
            axis.plot(fpr, tpr, linewidth=1, label='%s (trained on %s)' % (
                attacker, trained_on), linestyle='-' if trained_on == mode
                else '--')
        axis.plot([0, 1], [0, 1], color='grey', linewidth=0.5)
        axis.axvline(0.02, color='grey', linewidth=0.5, linestyle=':')
        axis.set_xlabel('false-positive rate (background flows)')
        axis.set_ylabel('true-positive rate (%s migrations)' % mode)
        axis.set_title('ROC: %s, %d migrations, %d background' % (
            mode, positive.sum(), (~positive).sum()), fontsize=9)
        axis.legend(fontsize=7, loc='lower right')
        figure.tight_layout()
        name = 'roc-%s.png' % mode
        figure.savefig(os.path.join(out_dir, name), dpi=100)
        pyplot.close(figure)
        written.append(name)
    return written


def plot_cv_windows(labels, modes, window_cvs, windows, out_dir):
    """cv-windows.png: each mode's median CV per window (Tables II, IV).

    The background's 10th to 90th percentile is drawn as a band.

    :returns: the names of the files written
    """
    pyplot = _pyplot()
    values = np.array([[cvs[w] for w in windows] for cvs in window_cvs],
                      dtype=float).reshape(-1, len(windows))
    labels = np.asarray(labels, dtype=object)
    modes = np.asarray(modes, dtype=object)
    background = values[labels == 'background']
    if not len(background):
        return []
    figure, axis = pyplot.subplots(figsize=(6.5, 4))
    with warnings.catch_warnings():
        # A window no flow of a group reaches gives NaN, drawn as a gap.
        warnings.simplefilter('ignore', RuntimeWarning)
        low = np.nanpercentile(background, 10, axis=0)
        high = np.nanpercentile(background, 90, axis=0)
        middle = np.nanmedian(background, axis=0)
        axis.fill_between(windows, low, high, color='grey', alpha=0.3,
                          label='background, 10th-90th percentile '
                                '(%d flows)' % len(background))
        axis.plot(windows, middle, color='grey', label='background, median')
        for mode in sorted({m for m, l in zip(modes, labels)
                            if l == 'migration'}):
            mine = values[(labels == 'migration') & (modes == mode)]
            axis.plot(windows, np.nanmedian(mine, axis=0), marker='o',
                      label='%s migrations, median (%d)' % (mode, len(mine)))
    axis.set_xscale('log')
    axis.set_yscale('log')
    axis.set_xlabel('packet window')
    axis.set_ylabel('throughput CV')
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(os.path.join(out_dir, 'cv-windows.png'), dpi=100)
    pyplot.close(figure)
    return ['cv-windows.png']


def plots(out_dir, labels, modes, window_cvs, scores_by, windows):
    """Every battery plot; returns the names of the files written."""
    return (plot_roc(labels, modes, scores_by, out_dir) +
            plot_cv_windows(labels, modes, window_cvs, windows, out_dir))
