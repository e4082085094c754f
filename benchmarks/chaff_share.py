#!/usr/bin/env python3
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
"""The ramp chaff schedule's own cost, as a share of the migration's bytes.

Simulated in 10 ms steps, for guests of 128 MiB to 16 GiB: the rate
policy's rates (with the default [stealth] options) stand for the
migration's throughput, the ramp schedule's lead, fill-in and tail are
integrated, and the sender's budget cap (``chaff_budget_fraction``) is
left out, so the figure is what the schedule alone would send. Each seed
runs twice, the schedule sized to the guest as the source session sizes
it with ``chaff_cost_fraction`` (``--cost-fraction``, default 0.1) and
unsized (the ramps as drawn from
``chaff_lead_seconds`` and ``chaff_tail_seconds``), the baseline; mean
and 95% interval over seeds. The issue's bound is 20% for 128 MiB guests
and 10% from 1 GiB.

    python benchmarks/chaff_share.py [--sizes 128,1024,4096,16384]
        [--seeds 20]
"""

import argparse
import tempfile

import numpy as np

from nova_stealth.chaff import schedules
from nova_stealth import conf as stealth_conf
from nova_stealth.engine import source
from nova_stealth import policy as rate_policies
from nova_stealth import units

STEP = 0.01


def chaff_share(group, memory_mib, seed, sized=True):
    """Chaff bytes over migration bytes for one simulated migration."""
    policy_cls = rate_policies.policy_class(group.rate_policy)
    memory = memory_mib * units.MIB
    kwargs = dict(policy_cls.conf_kwargs(group),
                  **policy_cls.migration_kwargs(memory_bytes=memory))
    rates = source.expected_rates(group.rate_policy, kwargs, seed)
    schedule = schedules.load(
        group.chaff_schedule, float(np.mean(rates)),
        lead=group.chaff_lead_seconds, tail=group.chaff_tail_seconds,
        seed=seed, migration_rates=rates,
        expected_bytes=memory if sized else None,
        cost_fraction=group.chaff_cost_fraction if sized else None)
    policy = rate_policies.policy_class(group.rate_policy)(seed=seed,
                                                           **kwargs)
    now, chaff, left = 0.0, 0.0, memory_mib * units.MIB
    schedule.prepare(now)
    while now < schedule.lead:
        chaff += schedule.rate(now, 0.0) * STEP
        now += STEP
    schedule.migration_started(now)
    while left > 0:
        rate = policy.next_rate() * units.MIB
        left -= rate * STEP
        chaff += schedule.rate(now, rate) * STEP
        now += STEP
    schedule.migration_ended(now)
    while not schedule.done(now):
        chaff += schedule.rate(now, 0.0) * STEP
        now += STEP
    return chaff / (memory_mib * units.MIB)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default='128,1024,4096,16384',
                        help='guest sizes in MiB')
    parser.add_argument('--seeds', type=int, default=20)
    parser.add_argument('--cost-fraction', type=float, default=0.1)
    args = parser.parse_args()
    group = stealth_conf.load_group(state_dir=tempfile.mkdtemp(),
                                    chaff_cost_fraction=args.cost_fraction)
    print('chaff bytes over migration bytes, mean [95%% interval] over %d '
          'seeds; chaff_cost_fraction %.2f' % (
              args.seeds, group.chaff_cost_fraction))
    for size in (int(s) for s in args.sizes.split(',')):
        found = {}
        for sized in (False, True):
            shares = np.array([chaff_share(group, size, seed, sized)
                               for seed in range(args.seeds)])
            half = 1.96 * shares.std(ddof=1) / np.sqrt(len(shares))
            found[sized] = '%5.1f%% [%5.1f, %5.1f]' % (
                100 * shares.mean(), 100 * (shares.mean() - half),
                100 * (shares.mean() + half))
        print('%6d MiB: unsized %s   sized %s' % (
            size, found[False], found[True]))


if __name__ == '__main__':
    main()
