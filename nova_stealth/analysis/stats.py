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
"""Section VI's indistinguishability test and the CV tables."""

import collections

import numpy as np
from scipy import stats


def average_ipt_distribution(flows):
    """Mean over flows of each flow's share of packets per IPT category.

    Every flow weighs the same, whatever its length, as the paper's
    "average inter-packet time distribution" does.
    """
    shares = collections.Counter()
    for flow in flows:
        total = sum(flow.ipt_counts.values())
        for category, count in flow.ipt_counts.items():
            shares[category] += count / total / len(flows)
    return shares


def chi_square(group_a, group_b, top=10, scale=100.0, alpha=0.05):
    """Test whether two groups of flows share one IPT distribution.

    The statistic, exactly: take each group's average distribution over
    1-microsecond inter-packet-time categories
    (:func:`average_ipt_distribution`); keep the ``top`` categories with
    the largest combined share; renormalise each group over those to sum
    to ``scale`` (100: percentages); Pearson's chi-square of that 2 x top
    table, (top - 1) degrees of freedom, no continuity correction. The
    groups are distinguishable when the p-value is below ``alpha``.

    Percentages, not packet counts: with the raw counts of flows of 10^5
    packets any difference, however small, would be significant, and the
    test would not measure how alike the shapes are.

    :returns: a dict, or None when a group is empty
    """
    if not group_a or not group_b:
        return None
    share_a = average_ipt_distribution(group_a)
    share_b = average_ipt_distribution(group_b)
    combined = share_a + share_b
    categories = [c for c, _ in sorted(combined.items(),
                                       key=lambda item: (-item[1], item[0]))]
    categories = sorted(categories[:top])
    table = np.array([[share_a.get(c, 0.0) for c in categories],
                      [share_b.get(c, 0.0) for c in categories]])
    table = table / table.sum(axis=1, keepdims=True) * scale
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        statistic, p_value, dof = 0.0, 1.0, 0
    else:
        statistic, p_value, dof, _expected = stats.chi2_contingency(
            table, correction=False)
    return {
        'statistic': float(statistic), 'p_value': float(p_value),
        'dof': int(dof), 'alpha': alpha,
        'distinguishable': bool(p_value < alpha),
        'categories_us': [int(c) for c in categories],
        'flows': [len(group_a), len(group_b)],
    }


def cv_table(groups, windows):
    """Median throughput CV per window for each named group of flows.

    :param groups: {name: [FlowFeatures]}
    :returns: [{'group', 'flows', 'cv': {window: median or None}}]
    """
    rows = []
    for name, flows in groups.items():
        medians = {}
        for window in windows:
            values = [f.window_cvs[window] for f in flows
                      if not np.isnan(f.window_cvs[window])]
            medians[window] = float(np.median(values)) if values else None
        rows.append({'group': name, 'flows': len(flows), 'cv': medians})
    return rows
