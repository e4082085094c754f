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
left out, so the figure is what the schedule alone would send. The
issue's bound is 20% for 128 MiB guests and 10% from 1 GiB.
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


def chaff_share(group, memory_mib, seed):
    """Chaff bytes over migration bytes for one simulated migration."""
    kwargs = rate_policies.policy_class(group.rate_policy).conf_kwargs(
        group)
    rates = source.expected_rates(group.rate_policy, kwargs, seed)
    schedule = schedules.load(
        group.chaff_schedule, float(np.mean(rates)),
        lead=group.chaff_lead_seconds, tail=group.chaff_tail_seconds,
        seed=seed, migration_rates=rates)
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
    parser.add_argument('--seeds', type=int, default=5)
    args = parser.parse_args()
    group = stealth_conf.load_group(state_dir=tempfile.mkdtemp())
    for size in (int(s) for s in args.sizes.split(',')):
        shares = [chaff_share(group, size, seed)
                  for seed in range(args.seeds)]
        print('%6d MiB: chaff %3.0f%% of the migration bytes (%d seeds: '
              '%s)' % (size, 100 * np.mean(shares), args.seeds,
                       ', '.join('%.0f%%' % (100 * s) for s in shares)))


if __name__ == '__main__':
    main()
