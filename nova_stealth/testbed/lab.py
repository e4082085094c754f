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
"""The lab: many migration-like flows, fast, on the testbed's topology.

QEMU under stealth is always backlogged, so a greedy TCP sender through
the engine stands in for a stealthed migration, and a sender paced as
QEMU's limiter paces (a tenth of its rate every 100 ms) for a native one
(:mod:`lab_agent`). Each (background, load) pair has one or more
*sites* (``replicas``): the testbed's topology with its background
running, and ``width`` source hosts behind the left router instead of
one. Sites run at once, each on its own bottleneck; a load's flows are
dealt out over its replicas.

How flows are kept from shaping each other: each source host is a
namespace of its own with its own egress, DHTB tree, modulator, privsep
daemon and chaff (the chaff of one migration never sees another's
traffic, as on separate compute nodes); their data ports differ; one
host migrates one flow at a time (the next starts once the last one's
data has drained, while its chaff ramps down, as a compute node's next
migration does), and the hosts' first flows are staggered so that data
phases overlap less. A native run's flows all go from one host, one after
the other: two QEMU-paced flows at 4 and 8 MiB/s would fill the
bottleneck between them. What they still share is the bottleneck, as
migrations from several hosts across one WAN do; each
stealthed flow's ``rate_check`` (the class's bytes against the rate its
modulator set, per 100 ms) measures how often the path held it back, and
the report gives it for flows that overlapped another lab flow and for
flows that did not.

A *run* is one capture at the left router with one mode's flows on every
host and the background; it has a truth file naming every flow, and a
record in ``runs/`` (so that an interrupted lab resumes).
"""

import concurrent.futures
import hashlib
import ipaddress
import itertools
import json
import math
import os
import queue
import random
import sys
import threading
import time

from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import truth
from nova_stealth.testbed import lab_agent
from nova_stealth.testbed import netns
from nova_stealth.testbed import qemu
from nova_stealth.testbed import runner
from nova_stealth.testbed import topology
from nova_stealth.testbed import traffic
from nova_stealth import units

#: Migration sizes: log-normal (median MiB, sigma), truncated to
#: [low, high]. The low end keeps three windows of 3,000 packets.
SIZE_MEDIAN_MIB, SIZE_SIGMA, SIZE_LOW_MIB, SIZE_HIGH_MIB = 20.0, 0.4, 14.0, 48
NATIVE_SPEEDS = (4.0, 8.0)
#: For staggering only: a stealthed flow's expected rate and chaff lead
#: (its tail runs while the host's next flow starts).
EXPECTED_RATE_MIB_S = 5.0
EXPECTED_LEAD_S = 10.0
POLL_S = 0.2
#: The background runs this long before the first run (every user has
#: started: they wait up to 5 s); its load over the runs themselves is
#: measured from the captures.
SETTLE_SECONDS = 8.0
#: A run that takes longer than this is stuck.
RUN_TIMEOUT = 900


class Interrupted(Exception):
    """The lab was asked to stop."""


def _seed(*parts):
    digest = hashlib.sha256('/'.join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], 'big')


def flow_size(rng):
    """A migration's bytes, drawn from the size distribution.

    Truncated, not clipped: a clipped distribution would put many flows at
    exactly its bounds, a tell of its own.
    """
    while True:
        mib = rng.lognormvariate(math.log(SIZE_MEDIAN_MIB), SIZE_SIGMA)
        if SIZE_LOW_MIB <= mib <= SIZE_HIGH_MIB:
            return int(mib * units.MIB)


def plan_site(background, load, modes, flows_per_mode, width, per_run,
              schedule, seed, speeds=NATIVE_SPEEDS, replicas=1, replica=0):
    """The runs of one site, in order: one of each mode in turn.

    A native run's flows go one after the other from one host, so that
    no two QEMU-paced flows share the bottleneck (two at 4 and 8 MiB/s
    would fill it); a stealthed run's are spread over ``width`` hosts.

    :param flows_per_mode: {mode: flows at this load, over its replicas}
    :param speeds: native flows' rates, MiB/s, in turn
    :param replicas: sites of this (background, load), each on its own
        bottleneck; flow *i* of a load goes to replica *i* modulo them
    :param replica: which of them this one is
    :returns: [{'name', 'mode', 'policy', 'schedule', 'hosts': [[flow]]}]
    """
    by_mode = []
    tag = '' if replicas == 1 else '-r%d' % replica
    for mode in modes:
        runs = []
        by_mode.append(runs)
        rng = random.Random(_seed(seed, background, load, mode))
        count = flows_per_mode[mode]
        flows = []
        for index in range(count):
            flow = {'name': '%s-%s-%s-%d' % (background, load, mode, index),
                    'policy': None if mode == 'native' else mode,
                    'schedule': None if mode == 'native' else schedule,
                    'bytes': flow_size(rng),
                    'rate_mib_s': (speeds[index % len(speeds)]
                                   if mode == 'native' else None),
                    'seed': _seed(seed, background, load, mode, index)}
            if index % replicas == replica:
                flows.append(flow)
        per = width * per_run
        hosts = 1 if mode == 'native' else width
        for number, first in enumerate(range(0, len(flows), per)):
            chunk = flows[first:first + per]
            runs.append({
                'name': '%s-%s-%s%s-%03d' % (background, load, mode, tag,
                                             number),
                'mode': 'native' if mode == 'native' else 'stealth',
                'policy': None if mode == 'native' else mode,
                'schedule': None if mode == 'native' else schedule,
                'background': background, 'load': load, 'index': number,
                'replica': replica,
                'hosts': [chunk[h::hosts] for h in range(hosts)
                          if chunk[h::hosts]]})
    # Modes take turns, so that a lab stopped early has some of each.
    return [run for turn in itertools.zip_longest(*by_mode) for run in turn
            if run is not None]


def expected_seconds(flow):
    """A flow's rough duration, to stagger the hosts' first flows."""
    rate = flow['rate_mib_s'] or EXPECTED_RATE_MIB_S
    chaff = EXPECTED_LEAD_S if flow['policy'] else 0.0
    return flow['bytes'] / (rate * units.MIB) + chaff


class Agent(object):
    """A source host's lab agent: plans in, one JSON line a record out."""

    def __init__(self, process):
        self.process = process
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            if line.strip():
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, flows, delay):
        """Have the agent send ``flows`` after ``delay`` seconds."""
        self.process.stdin.write(json.dumps({'flows': flows,
                                             'delay': delay}) + '\n')
        self.process.stdin.flush()


class LabSite(object):
    """A site's runs: one :class:`runner.Site` with several source hosts."""

    def __init__(self, site, stop):
        self.site = site
        self.stop = stop
        self.kinds = site.background_kinds()
        self.agents = {}

    def run(self, spec):
        """Run one run of the plan; return its record."""
        site, topo = self.site, self.site.topology
        workdir = site.workdir
        capture = os.path.join(workdir, spec['name'] + '.pcap')
        began = time.time()
        dump = netns.Tcpdump(
            topo.ns['rl'], capture, '-i', 'wan0', '-s', str(site.snaplen),
            'tcp',
            spawned=lambda p: runner._record_process(workdir, p, 'tcpdump'))
        try:
            stagger = (sum(expected_seconds(f) for host in spec['hosts']
                           for f in host) / max(1, sum(
                               map(len, spec['hosts']))) / len(spec['hosts']))
            agents = [self.agent(number)
                      for number in range(len(spec['hosts']))]
            for number, (agent, flows) in enumerate(zip(agents,
                                                        spec['hosts'])):
                agent.send(flows, number * stagger)
            flows = self._wait(agents)
            time.sleep(runner.CAPTURE_TAIL)
        finally:
            dump.stop()
        record = {key: spec[key] for key in (
            'name', 'mode', 'policy', 'schedule', 'background', 'load',
            'index', 'replica')}
        record.update(capture=capture, flows=flows, started=began,
                      namespaces=sorted(topo.ns.values()),
                      ended=time.time(),
                      chaff_bytes=sum(f.get('chaff_bytes', 0) for f in flows))
        record['truth'] = self.truth(capture, record)
        return record

    def agent(self, number):
        """The lab agent of source host ``number``, started once a site."""
        if number not in self.agents:
            site, topo = self.site, self.site.topology
            role = topo.sources[number]
            self.agents[number] = Agent(site._start(role, [
                sys.executable, '-m', lab_agent.__name__,
                '--address', topo.address(role),
                '--peer', topo.address('dst'),
                '--dst-ns', topo.ns['dst'],
                '--native-port', str(qemu.LIBVIRT_PORTS[0] + number),
                '--state-dir', os.path.join(site.workdir, 'state-' + role),
                '--lease-dir', os.path.join(site.workdir, 'state-dst'),
                '--tls-dir', site.tls_dir, '--chaff-peer',
                topo.address(runner.CHAFF_HOSTS[1]),
                '--cap-mbit', str(topology.BOTTLENECK_MBIT)],
                'lab agent on %s' % role, ready=False))
        return self.agents[number]

    def start_agents(self, count):
        """Start ``count`` hosts' agents at once; return when all are ready.

        Started before the first capture, so that no run waits on them.
        """
        agents = [self.agent(number) for number in range(count)]
        deadline = time.monotonic() + RUN_TIMEOUT
        for agent in agents:
            while True:
                if self.stop.is_set():
                    raise Interrupted()
                if time.monotonic() > deadline:
                    raise RuntimeError('a lab agent did not start in %d s'
                                       % RUN_TIMEOUT)
                try:
                    said = agent.lines.get(timeout=POLL_S)
                    break
                except queue.Empty:
                    pass
            if not said or not said.get('ready'):
                raise RuntimeError('a lab agent did not start: it said %r'
                                   % said)

    def _wait(self, agents):
        """Every agent's records of the plan it was sent."""
        deadline = time.monotonic() + RUN_TIMEOUT
        flows = []
        for agent in agents:
            while True:
                if self.stop.is_set():
                    raise Interrupted()
                if time.monotonic() > deadline:
                    raise RuntimeError('lab run took over %d s' % RUN_TIMEOUT)
                try:
                    said = agent.lines.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if said is None:
                    raise RuntimeError('lab agent exited with %s after %d '
                                       'flows' % (agent.process.wait(),
                                                  len(flows)))
                if 'done' in said:
                    break
                if 'ready' not in said:
                    flows.append(said)
        return flows

    def truth(self, capture, record):
        """Name the run's flows: lab flows, chaff, background by kind."""
        topo = self.site.topology
        sources = {topo.address(role) for role in topo.sources}
        lab = {}
        for flow in record['flows']:
            key = flow_lib.FlowKey('tcp', flow['src'], flow['sport'],
                                   flow['dst'], flow['dport'])
            lab[key] = flow['policy'] or 'native-%g' % flow['rate_mib_s']
        entries = [(key, 'migration', kind) for key, kind in lab.items()]
        found, _ = flow_lib.read_flows(
            [capture], flow_lib.FlowOptions(min_packets=1))
        left = ipaddress.ip_network(topology.SITE['rl'][0])
        moved = {'rl': 0, 'rr': 0}
        for flow in found:
            key = flow.key
            if key in lab or key.reverse() in lab:
                continue
            if key.src in sources:
                # Anything else a source host sends is its chaff.
                entries.append((key, 'chaff', record['schedule'] or 'none'))
                continue
            if key.sport in self.kinds:
                entries.append((key, 'background', self.kinds[key.sport]))
            elif key.dport == traffic.PORTS['mail']:
                entries.append((key, 'background', 'mail'))
            else:
                continue
            side = 'rl' if ipaddress.ip_address(key.src) in left else 'rr'
            moved[side] += flow.bytes
        if found:
            seconds = (max(f.last_ns for f in found) -
                       min(f.first_ns for f in found)) / 1e9
            record['background_bytes'] = dict(moved, seconds=seconds)
        path = capture[:-len('.pcap')] + '.truth.json'
        truth.dump(path, entries)
        return path


def site_name(background, load, replica=0):
    """A site's name: ``markov/S``, or ``markov/S#1`` for its replica 1."""
    return '%s/%s%s' % (background, load, '#%d' % replica if replica else '')


def run_site(out, background, load, runs, width, seed, envelopes, stop,
             progress=None, replica=0):
    """Run a site's runs not yet recorded; return its measured load."""
    runs_dir = os.path.join(out, 'runs')
    todo = [spec for spec in runs if not os.path.exists(
        os.path.join(runs_dir, spec['name'] + '.json'))]
    if not todo:
        return None
    workdir = os.path.join(out, 'load-%s-%s%s' % (
        background, load, '-%d' % replica if replica else ''))
    os.makedirs(workdir, exist_ok=True)
    with runner.Site(workdir, load, seed, sources=width,
                     background=background, envelopes=envelopes,
                     settle=SETTLE_SECONDS) as site:
        lab_site = LabSite(site, stop)
        lab_site.start_agents(max(len(spec['hosts']) for spec in todo))
        for spec in todo:
            if stop.is_set():
                raise Interrupted()
            record = lab_site.run(spec)
            with open(os.path.join(runs_dir, spec['name'] + '.json'),
                      'w') as found:
                json.dump(record, found)
            if progress:
                progress(spec, record)
        return site.measured_load


def run_sites(out, plans, width, seed, envelopes, parallel, progress=None):
    """Run every site, ``parallel`` at a time; Ctrl-C stops them all.

    :param plans: {(background, load) or (background, load, replica):
        [run spec]}
    :returns: {site name: measured load}
    """
    stop = threading.Event()
    loads = {}
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        futures = {pool.submit(run_site, out, site[0], site[1], runs, width,
                               seed, envelopes, stop, progress,
                               *site[2:]): site
                   for site, runs in plans.items()}
        try:
            for future in concurrent.futures.as_completed(futures):
                measured = future.result()
                if measured is not None:
                    loads[site_name(*futures[future])] = measured
        except BaseException:
            # Every site unwinds through its own cleanup before we leave.
            stop.set()
            concurrent.futures.wait(futures)
            raise
    return loads
