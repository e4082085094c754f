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
"""Benchmark the modulator against calling the tc binary once per tick.

Run as root. It makes a namespace pair joined by veth (198.18.9.0/24),
installs the DHTB on the source side with one migration class, keeps a
bulk TCP flow (iperf3) running through that class, and measures, for
nova_stealth's netlink path and for ``tc class change`` run once per tick:

* class-change latency p50/p99 (microseconds);
* tick jitter p50/p99 at a 10 ms tick (how late each tick woke), and how
  late after its deadline each new rate was in force;
* CPU share of one core over --seconds (default 60).

Targets: change p99 <= 200 us, jitter p99 <= 1 ms, CPU <= 3% of a core.
The last line printed is one JSON object with every figure.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np

SRC_V4, DST_V4, PORT = '198.18.9.1', '198.18.9.2', 61001
TARGETS = {'change_p99_us': 200.0, 'jitter_p99_us': 1000.0,
           'cpu_share': 0.03}


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


def percentiles(values_s):
    values = np.asarray(values_s) * 1e6
    return {'p50': round(float(np.percentile(values, 50)), 1),
            'p99': round(float(np.percentile(values, 99)), 1)}


def cpu_seconds(children=False):
    times = os.times()
    total = times.user + times.system
    if children:
        total += times.children_user + times.children_system
    return total


def inner(args):
    """Runs inside the source namespace; prints the figures as JSON."""
    from nova_stealth import backends
    from nova_stealth.policy import paper
    from nova_stealth import privileged
    from nova_stealth import rtnl
    from nova_stealth.shaping import modulator
    from nova_stealth.shaping import tc_lib
    from nova_stealth.shaping import tree
    from nova_stealth import units

    # Already root in the namespace: run the entrypoints in this process,
    # as the privsep daemon would, instead of starting one.
    privileged.net_admin.set_client_mode(False)
    shaper = tc_lib.Shaper(args.state_dir, backends.load('pyroute2'))
    session = shaper.install('bench', DST_V4, PORT, 4.0, ifname='s0')
    ifindex, classid = session['ifindex'], session['classid']
    parent = tree.handle(tree.PARENT_MINOR)
    rates = [tree.mib_to_bytes(r) for r in (2.0, 4.0, 8.0, 16.0)]
    socket = rtnl.RtnlSocket()

    def netlink_change(rate):
        return socket.change_htb_class(
            ifindex, classid, parent,
            rtnl.htb_class_options(**tree.htb_shape(rate, session['mtu'])))

    def tc_change(rate):
        shape = tree.htb_shape(rate, session['mtu'])
        subprocess.run(
            ['tc', 'class', 'change', 'dev', 's0', 'parent',
             tree.handle_text(parent), 'classid',
             tree.handle_text(classid), 'htb', 'rate', '%dbit' % (rate * 8),
             'ceil', '%dbit' % (rate * 8), 'burst', str(shape['burst']),
             'cburst', str(shape['cburst']), 'quantum',
             str(shape['quantum'])], check=True)

    def latencies(change, count):
        spent = []
        for index in range(count):
            started = time.perf_counter()
            change(rates[index % len(rates)])
            spent.append(time.perf_counter() - started)
        return spent

    def policy():
        return paper.PaperRatePolicy(1.0, 16.0, 4.0, seed=1)

    def run_loop(apply_rate, children):
        loop = modulator.Modulator(policy(), apply_rate, 0.01)
        cpu_before, wall_before = cpu_seconds(children), time.monotonic()
        loop.start()
        time.sleep(args.seconds)
        loop.stop()
        cpu = cpu_seconds(children) - cpu_before
        wall = time.monotonic() - wall_before
        report = dict(loop.report(), **loop.trace())
        if report['error']:
            raise RuntimeError(report['error'])
        return report, cpu / wall

    try:
        figures = {
            'netlink_change_us': percentiles(latencies(netlink_change,
                                                       5000)),
            'tc_change_us': percentiles(latencies(tc_change, 500)),
        }
        report, share = run_loop(netlink_change, children=False)
        figures['jitter_us'] = percentiles(report['lateness'])
        figures['applied_us'] = percentiles(report['applied'])
        figures['cpu_share'] = round(share, 4)
        figures['ticks'] = len(report['rates'])
        figures['skipped_ticks'] = report['skipped']
        sent = np.diff(report['sent'])
        figures['class_mib_s_mean'] = round(
            float(sent.sum() / (len(sent) * 0.01) / units.MIB), 2)
        report, share = run_loop(tc_change, children=True)
        figures['tc_jitter_us'] = percentiles(report['lateness'])
        figures['tc_applied_us'] = percentiles(report['applied'])
        figures['tc_cpu_share'] = round(share, 4)
        figures['tc_skipped_ticks'] = report['skipped']
    finally:
        socket.close()
        shaper.remove('bench')
    print(json.dumps(figures))


def outer(args):
    """Make the namespaces and the load, run the inner part, report."""
    suffix = uuid.uuid4().hex[:8]
    src, dst = 'nsbs-' + suffix, 'nsbd-' + suffix
    made, server = [], None
    try:
        for name in (src, dst):
            sh('ip', 'netns', 'add', name)
            made.append(name)
        sh('ip', '-n', src, 'link', 'add', 's0', 'type', 'veth', 'peer',
           'name', 'd0', 'netns', dst)
        for ns, dev, address in ((src, 's0', SRC_V4), (dst, 'd0', DST_V4)):
            sh('ip', '-n', ns, 'addr', 'add', address + '/24', 'dev', dev)
            sh('ip', '-n', ns, 'link', 'set', dev, 'up')
        server = subprocess.Popen(
            ['ip', 'netns', 'exec', dst, 'iperf3', '-s', '-B', DST_V4, '-p',
             str(PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        client = subprocess.Popen(
            ['ip', 'netns', 'exec', src, 'iperf3', '-c', DST_V4, '-p',
             str(PORT), '-t', str(int(2 * args.seconds + 120))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with tempfile.TemporaryDirectory() as state_dir:
            result = subprocess.run(
                ['ip', 'netns', 'exec', src, sys.executable,
                 os.path.abspath(__file__), '--inner', '--state-dir',
                 state_dir, '--seconds', str(args.seconds)],
                capture_output=True, text=True)
        if result.returncode:
            sys.exit('benchmark failed:\n' + result.stderr)
        client.terminate()
        client.wait()
    finally:
        if server:
            server.terminate()
            server.wait()
        for name in reversed(made):
            subprocess.run(['ip', 'netns', 'del', name])
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures['seconds'] = args.seconds
    figures['targets'] = TARGETS
    figures['ratios_tc_over_netlink'] = {
        'change_p99': round(figures['tc_change_us']['p99'] /
                            figures['netlink_change_us']['p99'], 1),
        'jitter_p99': round(figures['tc_jitter_us']['p99'] /
                            figures['jitter_us']['p99'], 1),
        'applied_p99': round(figures['tc_applied_us']['p99'] /
                             figures['applied_us']['p99'], 1),
        'cpu_share': round(figures['tc_cpu_share'] /
                           max(figures['cpu_share'], 1e-9), 1),
    }
    figures['met'] = {
        'change_p99_us': (figures['netlink_change_us']['p99'] <=
                          TARGETS['change_p99_us']),
        'jitter_p99_us': (figures['jitter_us']['p99'] <=
                          TARGETS['jitter_p99_us']),
        'cpu_share': figures['cpu_share'] <= TARGETS['cpu_share'],
    }
    rows = [
        ('class change p50/p99 (us)', figures['netlink_change_us'],
         figures['tc_change_us']),
        ('tick jitter p50/p99 (us)', figures['jitter_us'],
         figures['tc_jitter_us']),
        ('rate in force p50/p99 (us)', figures['applied_us'],
         figures['tc_applied_us']),
    ]
    print('%-28s %18s %18s' % ('', 'nova_stealth', 'tc per tick'))
    for label, ours, theirs in rows:
        print('%-28s %18s %18s' % (
            label, '%s / %s' % (ours['p50'], ours['p99']),
            '%s / %s' % (theirs['p50'], theirs['p99'])))
    print('%-28s %18.2f%% %17.2f%%' % (
        'CPU share of one core', 100 * figures['cpu_share'],
        100 * figures['tc_cpu_share']))
    print(json.dumps(figures, sort_keys=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=60.0,
                        help='length of each loop run (default 60)')
    parser.add_argument('--inner', action='store_true',
                        help=argparse.SUPPRESS)
    parser.add_argument('--state-dir', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error('run as root: it makes namespaces and tc trees')
    (inner if args.inner else outer)(args)


if __name__ == '__main__':
    main()
