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

import numpy as np


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
    lines += tables(found['results'])
    counts = found.get('counts')
    if counts:
        lines += ['', 'Runs: ' + ', '.join(
            '%s %d' % item for item in sorted(counts['runs'].items()))]
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
