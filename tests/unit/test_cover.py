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
"""The cover class: the background flows a migration could be."""

import numpy as np

from nova_stealth.analysis import battery
from nova_stealth.analysis import battery_report
from nova_stealth.analysis import boosting
from nova_stealth.analysis import cover
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import multiscale

WIDTH = len(multiscale.FEATURE_NAMES)


def flow(size, seconds, vector=None, port=1):
    vector = np.zeros(WIDTH) if vector is None else np.asarray(vector)
    return flow_lib.FlowFeatures(
        key=flow_lib.FlowKey('tcp', '198.18.0.1', 40000, '198.18.0.2', port),
        packets=max(int(size // 1448), 1), bytes=int(size), first_ns=0,
        last_ns=int(seconds * 1e9),
        window_cvs={w: float('nan') for w in flow_lib.WINDOWS},
        ipt_counts={1: 10}, burst_starts=np.zeros(0), multiscale=vector,
        segments=vector[np.newaxis, :])


def sample(label, size, seconds, run='run', load='M', vector=None,
           port=1):
    return battery.Sample(flow(size, seconds, vector, port), label,
                          'paper' if label == 'migration' else 'web',
                          'paper' if label == 'migration' else None, run,
                          load)


def test_select_keeps_the_flows_a_migration_could_be():
    # Migrations of 100 MB in 10 s and 400 MB in 20 s: the floor is half
    # the smallest (50 MB) and half the slowest rate (5 MB/s).
    samples = [sample('migration', 100e6, 10), sample('migration', 400e6, 20),
               sample('background', 60e6, 10),   # kept
               sample('background', 40e6, 2),    # too small
               sample('background', 60e6, 30),   # too slow
               sample('chaff', 1e5, 1)]          # not background: kept
    kept, floor = cover.select(samples)
    assert floor == {'bytes': 50e6, 'rate': 5e6}
    assert [s.flow.bytes for s in kept] == [100e6, 400e6, 60e6, 1e5]
    assert cover.counts(kept) == {'M': {'paper': 2, 'background': 1}}
    # Nothing to set a floor by: all is kept.
    background = [s for s in samples if s.label == 'background']
    assert cover.select(background) == (background, None)


def test_the_battery_is_judged_on_the_cover_class_only():
    rng = np.random.default_rng(3)
    samples = []
    for run in range(10):
        name = 'run-%d' % run
        samples.append(sample('migration', 64e6, 8, name,
                              vector=rng.normal(2.0, 0.3, WIDTH), port=run))
        for number in range(6):
            # Half of each run's background is large enough to be a
            # migration, half is a short web flow.
            size = 80e6 if number % 2 else 2e5
            samples.append(sample('background', size, 8, name,
                                  vector=rng.normal(0, 0.3, WIDTH),
                                  port=100 * run + number))
    factories = {'gbm': lambda: boosting.GradientBoostingDetector(
        max_iter=20)}
    judged = cover.judge(samples, run=battery.run, factories=factories,
                         samples_ci=50)
    assert judged['counts'] == {'M': {'paper': 10, 'background': 30}}
    assert 'scores' not in judged['battery']
    pooled = [r for r in judged['battery']['results'] if r['load'] == 'all']
    assert [(r['positives'], r['negatives']) for r in pooled] == [(10, 30)]
    report = '\n'.join(battery_report.cover_markdown(judged))
    assert '## Against the cover class' in report
    assert 'at least 32.0 MB and 4.00 MB/s' in report
    assert '| M | 10 | 30 |' in report
