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
"""The cover class: the background flows a migration could be taken for.

An observer reads a flow's bytes and duration before anything else. A
background flow far smaller or slower than any migration hides nothing,
and an attacker who drops those flows for free should not be credited
with telling them apart: against a link of many short flows every
attacker's AUC is high for that reason alone. The cover class is where a
migration must hide, so the battery is judged against it too.
"""

import collections

from nova_stealth.analysis import battery

#: The cover class's floor, as a share of the smallest and slowest
#: migration's bytes and mean rate.
SHARE = 0.5


def _rate(flow):
    return flow.bytes / max(flow.duration, 1e-9)


def select(samples, share=SHARE):
    """The migrations, and only the background flows they could be.

    Background flows are kept when they hold at least ``share`` of the
    smallest migration's bytes and of the slowest migration's mean rate
    (bytes over duration); samples of other labels are kept as they are.

    :param samples: :class:`battery.Sample` (their flows have ``bytes``
        and ``duration``)
    :returns: (kept samples, {'bytes': floor, 'rate': floor in bytes/s}),
        or (all samples, None) when none is a migration
    """
    migrations = [s.flow for s in samples if s.label == 'migration']
    if not migrations:
        return list(samples), None
    floor = {'bytes': share * min(f.bytes for f in migrations),
             'rate': share * min(_rate(f) for f in migrations)}
    kept = [s for s in samples if s.label != 'background' or (
        s.flow.bytes >= floor['bytes'] and _rate(s.flow) >= floor['rate'])]
    return kept, floor


def counts(samples):
    """{load: {mode or 'background': flows}}."""
    table = collections.defaultdict(collections.Counter)
    for sample in samples:
        if sample.label == 'migration':
            table[sample.load][sample.mode] += 1
        elif sample.label == 'background':
            table[sample.load]['background'] += 1
    return {load: dict(row) for load, row in table.items()}


def judge(samples, seed=0, run=battery.run, **kwargs):
    """The battery against the cover class only.

    :param run: the battery to run on the kept samples (``battery.run``,
        or a caller's wrapper of it), called with ``seed`` and ``kwargs``
    :returns: {'floor', 'counts', 'battery'}, JSON-ready: the battery's
        scores per flow are dropped (they are for the full set's plots)
    """
    kept, floor = select(samples)
    found = run(kept, seed=seed, **kwargs)
    found.pop('scores', None)
    return {'floor': floor, 'counts': counts(kept), 'battery': found}
