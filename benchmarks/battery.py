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
"""Benchmark the attacker battery: features and scoring of 1,000 flows.

Writes a pcap of --flows flows (default 1,000; a quarter QEMU-like bursts
every 100 ms, a quarter paced at a jittered constant rate, half at rates
that vary widely every 50 ms; 3 to 8 s each, headers only with wire
lengths), then measures, with wall and CPU time:

* features: reading the capture into flows with every multi-scale feature
  (per flow and per 2,000-packet segment);
* scoring: the battery without the cnn (pattern, MaxEnt, gbm,
  gbm-segments; each trained on native and on the stealthed mode, 5-fold
  cross-validation grouped by run over --runs runs; bootstrap intervals;
  the two-sample tests);
* the cnn: one fit on every flow at the battery's settings, on the CPU,
  one thread, and its scoring of every flow.

Run it under the shared lock on a shared machine; the last line printed is
one JSON object.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nova_stealth.analysis import battery  # noqa: E402
from nova_stealth.analysis import flows as flow_lib  # noqa: E402
from nova_stealth.analysis import sequence  # noqa: E402
from tests import synthetic  # noqa: E402


def make_flows(count, seed):
    """(times, sizes) of each flow and its (label, mode)."""
    rng = np.random.default_rng(seed)
    made, kinds = [], []
    for number in range(count):
        seconds = rng.uniform(3, 8)
        kind = number % 4
        if kind == 0:
            made.append(synthetic.qemu_native(rng, 32e6 * rng.uniform(
                0.8, 1.2), seconds))
            kinds.append(('migration', 'native'))
        elif kind == 1:
            made.append(synthetic.constant_with_jitter(
                rng, rng.uniform(2e6, 20e6), seconds, jitter=0.8, tick=0.5))
            kinds.append(('migration', 'crafted'))
        else:
            made.append(synthetic.constant_with_jitter(
                rng, rng.uniform(2e6, 20e6), seconds, jitter=1.5,
                tick=0.05))
            kinds.append(('background', None))
    return made, kinds


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--flows', type=int, default=1000)
    parser.add_argument('--runs', type=int, default=50)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    made, kinds = make_flows(args.flows, args.seed)
    packets = sum(len(times) for times, _sizes in made)
    figures = {'flows': args.flows, 'packets': packets}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'battery.pcap')
        synthetic.write(path, made)
        options = flow_lib.FlowOptions(min_packets=1, multiscale=True)
        (flows, _), wall, cpu = timed(
            lambda: flow_lib.read_flows([path], options))
    figures.update(features_wall_s=wall, features_cpu_s=cpu,
                   features_packets_per_cpu_s=packets / cpu)
    print('features: %d flows, %d packets: %.1f s wall, %.1f s CPU '
          '(%.0f packets per CPU second)' % (len(flows), packets, wall, cpu,
                                             packets / cpu))
    by_port = {flow.key.sport - 40000: flow for flow in flows}
    samples = []
    for number, (label, mode) in enumerate(kinds):
        samples.append(battery.Sample(
            by_port[number], label, mode, mode,
            'run-%d' % (number % args.runs), 'SMH'[number % 3]))
    factories = battery.attackers(args.seed, cnn=False)
    found, wall, cpu = timed(lambda: battery.run(samples, seed=args.seed,
                                                 factories=factories))
    figures.update(scoring_wall_s=wall, scoring_cpu_s=cpu,
                   scoring_rows=len(found['results']),
                   two_sample_rows=len(found['two_sample']))
    print('scoring without the cnn (%s; each trained on native and on '
          'crafted, 5 folds over %d runs): %.1f s wall, %.1f s CPU; %d '
          'result rows, %d two-sample tests' % (
              ', '.join(factories), args.runs, wall, cpu,
              len(found['results']), len(found['two_sample'])))
    pooled = [r for r in found['results'] if r['load'] == 'all' and
              r['mode'] == 'crafted' and r['trained_on'] == 'crafted']
    for row in pooled:
        print('  %s on crafted: AUC %.3f [%.3f, %.3f], TPR@1%% %.2f' % (
            row['attacker'], row['auc'], row['auc_ci'][0],
            row['auc_ci'][1], row['tpr_at_0.01']))
    if battery.sequence_available():
        labels = [label == 'migration' for label, _ in kinds]
        model = sequence.SequenceDetector(**dict(battery.CNN_SETTINGS))
        _, wall, cpu = timed(lambda: model.fit(flows_in_order(
            by_port, len(kinds)), labels))
        figures.update(cnn_fit_wall_s=wall, cnn_fit_cpu_s=cpu,
                       cnn_settings=dict(battery.CNN_SETTINGS,
                                         channels=list(battery.CNN_SETTINGS[
                                             'channels'])))
        print('cnn fit on %d flows (%s, one thread): %.1f s wall, %.1f s '
              'CPU' % (len(kinds), battery.CNN_SETTINGS, wall, cpu))
        _, wall, cpu = timed(lambda: model.predict_proba(flows_in_order(
            by_port, len(kinds))))
        figures.update(cnn_score_wall_s=wall)
        print('cnn scoring of %d flows: %.1f s wall' % (len(kinds), wall))
    else:
        print('cnn: PyTorch is not installed (the sequence extra)')
    print(json.dumps(figures, sort_keys=True))


def flows_in_order(by_port, count):
    return [by_port[number] for number in range(count)]


if __name__ == '__main__':
    main()
