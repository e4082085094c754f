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
"""nova-stealth-testbed: real QEMU migrations, native against stealthed.

``run`` builds the namespaced hosts for each load level, migrates a QEMU
VM natively at each speed and through the nova_stealth engine with each
rate policy, captures at the router, and scores it all into results.json
and report.md. Runs already in the output directory are kept (resume).
``lab`` runs many migration-like flows through the engine fast (see
:mod:`nova_stealth.testbed.lab`) against a Markov or trace-driven
background. ``cleanup`` removes what a crashed run or lab left.
"""

import argparse
import collections
import glob
import json
import math
import os
import signal
import subprocess
import sys

import tqdm

from nova_stealth.cmd import arguments
from nova_stealth import plugins
from nova_stealth.testbed import guest as guest_lib
from nova_stealth.testbed import lab as lab_lib
from nova_stealth.testbed import lab_report
from nova_stealth.testbed import qemu
from nova_stealth.testbed import replay
from nova_stealth.testbed import report
from nova_stealth.testbed import runner
from nova_stealth.testbed import topology
from nova_stealth import units

PROG = 'nova-stealth-testbed'
GUESTS = ('ram', 'linux')
#: The mode of a native run at a stealthed run's own mean throughput.
MATCHED = 'matched'
QUICK = {'modes': 'native,paper', 'loads': 'S', 'speeds': '4',
         'guest': 'ram', 'memory_mib': 48, 'runs': 3}
LAB_QUICK = {'modes': 'native,paper', 'loads': 'S', 'flows': 3,
             'speeds': '4', 'background': 'both', 'width': 3, 'per_run': 1,
             'parallel': 2}
#: Where the shared traces are, from a work tree.
DEFAULT_TRACES = os.path.join('..', 'shared', 'traces')


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Live-migrate a real QEMU VM between namespaced hosts '
                    'under background traffic, natively and stealthed, '
                    'capture it on-path and score it.')
    arguments.add_version(parser)
    sub = parser.add_subparsers(dest='command', required=True)
    run = sub.add_parser('run', help='run the experiment')
    run.add_argument('--out', default='testbed-results', metavar='DIR')
    modes = ['native'] + plugins.installed(plugins.RATE_POLICIES)
    run.add_argument('--modes', default='native,paper,constant',
                     type=arguments.choices(modes),
                     help='native and rate policy names (default '
                          'native,paper,constant)')
    schedules = ['none'] + plugins.installed(plugins.CHAFF_SCHEDULES)
    run.add_argument('--schedule', default='ramp', choices=schedules,
                     help='chaff schedule of stealthed runs, or none')
    run.add_argument('--loads', default='S,M,H',
                     type=arguments.choices(runner.LOADS),
                     help='background load levels, of S, M, H')
    run.add_argument('--speeds', default='4,8', type=arguments.numbers(0.01),
                     help='native migration speeds in MiB/s')
    run.add_argument('--guest', default='ram',
                     type=arguments.choices(GUESTS),
                     help='ram, linux, or both (comma-separated)')
    run.add_argument('--memory-mib', type=arguments.integer(1), default=64)
    run.add_argument('--dirty-mib-s', type=arguments.number(0.0),
                     default=1.0,
                     help='memory the linux guest dirties per second')
    run.add_argument('--runs', type=arguments.integer(1), default=2,
                     help='runs per cell')
    run.add_argument('--seed', type=arguments.integer(0), default=0)
    run.add_argument('--snaplen', type=arguments.integer(0, 262144),
                     default=runner.SNAPLEN,
                     help='bytes of each packet captured at the router '
                          '(default %d: headers; 0: whole packets, for the '
                          "audit's TLS and payload tells)" % runner.SNAPLEN)
    run.add_argument('--qemu', default=qemu.QEMU, metavar='BINARY',
                     help='the QEMU to run: a path, or a name on PATH '
                          '(default %s; tools/unpack-qemu.sh unpacks '
                          'another release, e.g. QEMU 7.2 beside the '
                          'backports\' 10)' % qemu.QEMU)
    run.add_argument('--native-tls', action='store_true',
                     help='migrate over QEMU\'s native TLS (x509 '
                          'credentials the testbed makes), as libvirt does '
                          'with [libvirt] live_migration_with_native_tls')
    run.add_argument('--background-tls', action='store_true',
                     help='the background speaks TLS (OpenSSL, a server '
                          'name and ALPN, certificates of a CA of its own), '
                          'as most Internet traffic does')
    run.add_argument('--matched', action='store_true',
                     help='after each stealthed run, a native one at its '
                          'mean throughput, the baseline of its time ratio '
                          'and downtime delta')
    run.add_argument('--quick', action='store_true',
                     help='a small experiment for CI: %s' % json.dumps(QUICK))
    run.add_argument('--no-plots', action='store_true')
    lab = sub.add_parser('lab', help='many migration-like flows through '
                         'the engine, fast')
    lab.add_argument('--out', default='lab-results', metavar='DIR')
    lab.add_argument('--modes', default='native,paper,constant',
                     type=arguments.choices(modes),
                     help='native and rate policy names')
    lab.add_argument('--schedule', default='ramp', choices=schedules,
                     help='chaff schedule of stealthed flows, or none')
    lab.add_argument('--loads', default='S,M,H',
                     type=arguments.choices(runner.LOADS))
    lab.add_argument('--flows', type=arguments.integer(1), default=200,
                     help='flows per mode, over all loads (default 200)')
    lab.add_argument('--background', default='markov',
                     choices=('markov', 'trace', 'both'))
    lab.add_argument('--traces', nargs='+', metavar='PATH',
                     help='captures (or directories of them) whose flows the '
                          'trace background replays (default %s)'
                          % DEFAULT_TRACES)
    lab.add_argument('--speeds', default='4,8', type=arguments.numbers(0.01),
                     help='native flows\' rates in MiB/s, in turn')
    lab.add_argument('--width', type=arguments.integer(
        1, topology.MAX_SOURCES + 1), default=4,
        help='source hosts per site: flows at once')
    lab.add_argument('--per-run', type=arguments.integer(1), default=2,
                     help='flows per source host in one run (capture)')
    lab.add_argument('--replicas', type=arguments.argument_type(replicas),
                     default='1', metavar='N|LOAD=N,...',
                     help='sites per (background, load), each on its own '
                          'bottleneck: one number, or per load (S=4,M=2)')
    lab.add_argument('--parallel', type=arguments.integer(1), default=3,
                     help='sites run at once')
    lab.add_argument('--seed', type=arguments.integer(0), default=0)
    lab.add_argument('--quick', action='store_true',
                     help='a small lab for CI: %s' % json.dumps(LAB_QUICK))
    lab.add_argument('--no-plots', action='store_true')
    lab.add_argument('--score-only', action='store_true',
                     help='run nothing: score the runs recorded in --out '
                          '(e.g. of an interrupted lab)')
    clean = sub.add_parser('cleanup', help='remove a crashed run\'s leftovers')
    clean.add_argument('--out', default='testbed-results', metavar='DIR')
    args = parser.parse_args(argv)
    if args.command in ('run', 'lab') and args.quick:
        for name, value in (QUICK if args.command == 'run'
                            else LAB_QUICK).items():
            setattr(args, name, value)
    return args


def replicas(text):
    """``--replicas``: {load: sites}, from ``N`` or ``S=4,M=2,H=1``.

    Loads not named get one site.
    """
    if '=' not in text:
        return collections.defaultdict(lambda: _replica_count(text))
    found = collections.defaultdict(lambda: 1)
    for item in _split(text):
        load, _, count = item.partition('=')
        if load.strip() not in runner.LOADS:
            raise ValueError('%r: no load %r (choose from %s)' % (
                text, load.strip(), ', '.join(sorted(runner.LOADS))))
        found[load.strip()] = _replica_count(count)
    return found


def _replica_count(text):
    try:
        count = int(text)
    except ValueError:
        raise ValueError('%r is not an integer' % text)
    if count < 1:
        raise ValueError('%d: at least one site' % count)
    return count


def _split(text):
    return [item.strip() for item in text.split(',') if item.strip()]


def cells(args):
    """(load, guest, index, mode, speed) of every run, in running order."""
    for load in _split(args.loads):
        for guest in _split(args.guest):
            for index in range(args.runs):
                for mode in _split(args.modes):
                    speeds = _split(args.speeds) if mode == 'native' else [
                        None]
                    for speed in speeds:
                        yield load, guest, index, mode, speed
                    if mode != 'native' and getattr(args, 'matched', False):
                        yield load, guest, index, MATCHED, mode


def run_name(load, guest, index, mode, speed):
    if mode == MATCHED:
        what = 'native-matched-%s' % speed
    else:
        what = 'native%s' % speed if mode == 'native' else mode
    return '%s-%s-%s-%d' % (load, guest, what, index)


def matched_rate(runs_dir, load, guest, index, policy):
    """MiB/s the stealthed run a matched native run follows averaged."""
    name = run_name(load, guest, index, policy, None)
    with open(os.path.join(runs_dir, name + '.json')) as found:
        stealthed = json.load(found)
    return name, stealthed['transferred_bytes'] / stealthed[
        'total_time_s'] / units.MIB


def images(args, guests):
    """The VM images each guest mode needs, made once per output dir."""
    made = {}
    if 'ram' in guests:
        made['ram'] = qemu.random_image(
            os.path.join(args.out, 'ram-%d.img' % args.memory_mib),
            args.memory_mib, args.seed)
    if 'linux' in guests:
        if args.memory_mib < guest_lib.MIN_MEMORY_MIB:
            raise SystemExit('--memory-mib %d: the linux guest needs at '
                             'least %d' % (args.memory_mib,
                                           guest_lib.MIN_MEMORY_MIB))
        made['linux'] = guest_lib.build(os.path.join(args.out, 'guest'),
                                        args.dirty_mib_s)
    return made


def run(args):
    try:
        version = qemu.binary_version(args.qemu)
    except (OSError, subprocess.CalledProcessError, ValueError) as e:
        raise SystemExit('--qemu %s: cannot run it: %s' % (args.qemu, e))
    print('QEMU %s: %s' % ('.'.join(map(str, version)), args.qemu),
          file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    runs_dir = os.path.join(args.out, 'runs')
    os.makedirs(runs_dir, exist_ok=True)
    plan = list(cells(args))
    guests = {cell[1] for cell in plan}
    vm_images = images(args, guests)
    loads_path = os.path.join(args.out, 'loads.json')
    loads = {}
    if os.path.exists(loads_path):
        with open(loads_path) as found:
            loads = json.load(found)
    records = []
    progress = tqdm.tqdm(total=len(plan), unit='run', file=sys.stderr)
    for load in _split(args.loads):
        todo = [c for c in plan if c[0] == load and not os.path.exists(
            os.path.join(runs_dir, run_name(*c) + '.json'))]
        if todo:
            workdir = os.path.join(args.out, 'load-%s' % load)
            os.makedirs(workdir, exist_ok=True)
            with runner.Site(workdir, load, args.seed,
                             snaplen=args.snaplen,
                             qemu_binary=args.qemu,
                             native_tls=args.native_tls,
                             background_tls=args.background_tls) as site:
                loads[load] = site.measured_load
                with open(loads_path, 'w') as out:
                    json.dump(loads, out)
                for load_, guest, index, mode, speed in todo:
                    name = run_name(load_, guest, index, mode, speed)
                    progress.set_description(name)
                    vm = {'guest': guest, 'memory_mib': args.memory_mib,
                          'image': vm_images[guest]}
                    matched_for = None
                    if mode == MATCHED:
                        matched_for, rate = matched_rate(
                            runs_dir, load_, guest, index, speed)
                        mode, speed = 'native', rate
                    record = site.migrate(
                        name, vm, None if mode == 'native' else mode,
                        args.schedule, float(speed) if speed else None,
                        seed=args.seed * 1000 + index)
                    record['index'] = index
                    record['matched_for'] = matched_for
                    with open(os.path.join(runs_dir, name + '.json'),
                              'w') as out:
                        json.dump(record, out)
                    progress.update()
        for cell in plan:
            if cell[0] != load:
                continue
            with open(os.path.join(runs_dir, run_name(*cell) +
                                   '.json')) as found:
                records.append(json.load(found))
    progress.close()
    results = report.write(args.out, records, loads, args.seed,
                           with_plots=not args.no_plots)
    print(report.side_by_side(results['summary']))
    print('\nreport: %s' % os.path.join(args.out, 'report.md'))
    return results


def trace_paths(given):
    """Capture files of --traces (directories are searched for them)."""
    paths = []
    for path in given or [DEFAULT_TRACES]:
        if os.path.isdir(path):
            paths += sorted(p for p in glob.glob(
                os.path.join(path, '**', '*'), recursive=True)
                if p.endswith(('.pcap', '.pcapng', '.cap')))
        elif os.path.isfile(path):
            paths.append(path)
        else:
            raise SystemExit('--traces: %s: no such file or directory'
                             % path)
    if not paths:
        raise SystemExit('--traces: no capture in %s' % ', '.join(
            given or [DEFAULT_TRACES]))
    return paths


def lab(args):
    modes, loads = _split(args.modes), _split(args.loads)
    speeds = [float(speed) for speed in _split(args.speeds)]
    backgrounds = (['markov', 'trace'] if args.background == 'both'
                   else [args.background])
    envelopes = None
    if 'trace' in backgrounds:
        envelopes = os.path.abspath(os.path.join(args.out, 'envelopes.npz'))
        if not os.path.exists(envelopes):
            try:
                found = replay.extract(trace_paths(args.traces))
            except ValueError as e:
                raise SystemExit('--traces: %s' % e)
            os.makedirs(args.out, exist_ok=True)
            replay.save(envelopes, found)
    os.makedirs(os.path.join(args.out, 'runs'), exist_ok=True)
    per_site = {mode: int(math.ceil(args.flows / len(loads)))
                for mode in modes}
    plans = {}
    for background in backgrounds:
        for load in loads:
            count = args.replicas[load]
            for replica in range(count):
                site = (background, load) + ((replica,) if replica else ())
                plans[site] = lab_lib.plan_site(
                    background, load, modes, per_site, args.width,
                    args.per_run, args.schedule, args.seed, speeds,
                    replicas=count, replica=replica)
    loads_path = os.path.join(args.out, 'loads.json')
    measured = {}
    if os.path.exists(loads_path):
        with open(loads_path) as found:
            measured = json.load(found)
    if not args.score_only:
        progress = tqdm.tqdm(total=sum(len(runs) for runs in plans.values()),
                             unit='run', file=sys.stderr)
        try:
            measured.update(lab_lib.run_sites(
                args.out, plans, args.width, args.seed, envelopes,
                args.parallel, lambda spec, record: progress.update()))
        finally:
            progress.close()
            with open(loads_path, 'w') as out:
                json.dump(measured, out)
    records = []
    for runs in plans.values():
        for spec in runs:
            path = os.path.join(args.out, 'runs', spec['name'] + '.json')
            if os.path.exists(path) or not args.score_only:
                with open(path) as found:
                    records.append(json.load(found))
    if not records:
        raise SystemExit('no lab run recorded in %s' % args.out)
    results = lab_report.write(args.out, records, measured, args.seed,
                               with_plots=not args.no_plots)
    print(lab_report.headline(results))
    print('\nreport: %s' % os.path.join(args.out, 'report.md'))
    return results


def cleanup(args):
    ended, removed = 0, []
    if os.path.isdir(args.out):
        for entry in sorted(os.listdir(args.out)):
            workdir = os.path.join(args.out, entry)
            if entry.startswith('load-') and os.path.isdir(workdir):
                ended += runner.end_recorded_processes(workdir)
                removed += topology.cleanup(workdir)
    print('ended %d processes, removed %d namespaces' % (ended, len(removed)))


def main(argv=None):
    args = parse_args(argv)
    # Ctrl-C and SIGTERM unwind through every cleanup on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.command == 'run':
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as e:
            return arguments.fail(PROG, e)
    if args.command == 'cleanup':
        cleanup(args)
    elif args.command == 'lab':
        lab(args)
    else:
        run(args)


if __name__ == '__main__':
    sys.exit(main())
