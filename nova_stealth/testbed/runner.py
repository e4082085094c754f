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
"""One load level of the experiment: a topology, its traffic, its runs.

A :class:`Site` is the topology of one load level with its background
traffic and chaff responder running; :meth:`Site.migrate` runs one
migration (native or stealthed) with a capture at the left router, and
returns what the run measured. Every process started is written to the
work directory first, so that ``cleanup`` can end it after a crash.
"""

import json
import os
import signal
import subprocess
import sys
import time

from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import truth
from nova_stealth import conf as stealth_conf
from nova_stealth.conf import chaff as chaff_conf
from nova_stealth.engine import destination
from nova_stealth.engine import source
from nova_stealth import procfs
from nova_stealth.testbed import guest
from nova_stealth.testbed import netns
from nova_stealth.testbed import qemu
from nova_stealth.testbed import replay
from nova_stealth.testbed import topology
from nova_stealth.testbed import traffic
from nova_stealth.testbed import x509
from nova_stealth import units

PROCESSES = 'processes.json'
#: The hosts that run a chaff responder: the destination first.
CHAFF_HOSTS = ('dst', 'bgr')
#: Users per background host and direction for each load level: measured
#: loads are reported, these only aim at them (the paper's S < 20%, M 40
#: to 50%, H about 80% of the bottleneck). Seen over 15 s: 2 users 23%,
#: 9 25%, 12 32%, 28 73%, 32 78%; bulk downloads make it vary.
LOADS = {'S': 2, 'M': 16, 'H': 32}
#: Share of the bottleneck each direction's trace-driven users aim at
#: (their number follows from the envelopes' mean rate).
TRACE_LOADS = {'S': 0.15, 'M': 0.45, 'H': 0.8}
#: Mean think time of a trace-driven user between two flows.
TRACE_THINK_S = 2.0
BACKGROUNDS = ('markov', 'trace')
#: How long the traffic runs before the first migration; the load is
#: measured over it.
SETTLE_SECONDS = 15.0
#: Capture this long after the migration and its chaff have ended.
CAPTURE_TAIL = 2.0
#: Debian's kernel boots in well under a minute under TCG here.
GUEST_BOOT_TIMEOUT = 300
#: The destination resumes the VM once the last data has arrived.
DESTINATION_TIMEOUT = 30


#: Bytes of each packet the router's tcpdump keeps: headers only. TLS
#: ClientHellos and payload prefixes for the audit's tells need more (0:
#: whole packets).
SNAPLEN = 96


def _record_process(workdir, process, what):
    path = os.path.join(workdir, PROCESSES)
    known = []
    if os.path.exists(path):
        with open(path) as listing:
            known = json.load(listing)
    known.append({'pid': process.pid, 'what': what,
                  'started': procfs.start_time(process.pid)})
    # Written aside and renamed: a reader (cleanup, the tests) never sees
    # a half-written listing.
    with open(path + '.tmp', 'w') as listing:
        json.dump(known, listing)
    os.replace(path + '.tmp', path)


def recorded_processes(workdir):
    """The processes a run recorded and that still run."""
    path = os.path.join(workdir, PROCESSES)
    if not os.path.exists(path):
        return []
    with open(path) as listing:
        known = json.load(listing)
    return [entry for entry in known if entry['started'] is not None and
            procfs.start_time(entry['pid']) == entry['started']]


def end_recorded_processes(workdir):
    """End the processes a crashed run recorded (only if still the same)."""
    ended = 0
    for entry in recorded_processes(workdir):
        try:
            os.kill(entry['pid'], signal.SIGKILL)
            ended += 1
        except ProcessLookupError:
            pass
    if os.path.exists(os.path.join(workdir, PROCESSES)):
        os.unlink(os.path.join(workdir, PROCESSES))
    return ended


def agent_switchover(agent):
    """A :class:`qemu.Switchover` that talks to the source session agent."""
    ready = json.loads(agent.first_line)

    def tell(line):
        agent.stdin.write(line + '\n')
        agent.stdin.flush()

    def decided():
        tell('switchover')
        said = json.loads(agent.stdout.readline() or 'null')
        if said is None:
            raise RuntimeError('the source session did not answer the '
                               'switch-over')

    return qemu.Switchover(ready['avail_switchover_bandwidth'],
                           lambda remaining: tell('progress %d' % remaining),
                           decided, share=ready['switchover_share'])


class Site(object):
    """The hosts of one load level, with traffic running.

    :param workdir: this load level's directory
    :param load: ``S``, ``M`` or ``H``
    :param sources: source hosts (the lab's flows run on several)
    :param background: ``markov`` (the users of :mod:`traffic`) or
        ``trace`` (:mod:`replay`'s users of ``envelopes``)
    :param envelopes: the .npz file of :func:`replay.save`, for ``trace``
    :param settle: seconds the traffic runs (and its load is measured)
        before the first run
    :param snaplen: bytes of each packet the captures keep
    :param qemu_binary: the QEMU the VMs run
    :param native_tls: migrate over QEMU's native TLS
    :param background_tls: the background speaks TLS (certificates of a
        CA of its own)
    """

    def __init__(self, workdir, load, seed, sources=1, background='markov',
                 envelopes=None, settle=SETTLE_SECONDS, snaplen=SNAPLEN,
                 qemu_binary=qemu.QEMU, native_tls=False,
                 background_tls=False):
        if background not in BACKGROUNDS:
            raise ValueError('background %r: use %s'
                             % (background, ', '.join(BACKGROUNDS)))
        if background == 'trace' and not envelopes:
            raise ValueError('a trace background needs envelopes')
        self.workdir = workdir
        self.load = load
        self.seed = seed
        self.snaplen = snaplen
        self.qemu_binary = qemu_binary
        self.background = background
        self.envelopes = envelopes
        self.settle = settle
        self.topology = topology.Topology(workdir, sources=sources)
        self.processes = []
        self.measured_load = None
        #: The chaff's credentials, made at __enter__; with native_tls
        #: QEMU migrates over TLS with them too, as libvirt's native TLS.
        self.tls_dir = None
        self.native_tls = native_tls
        #: The background servers' credentials, with background_tls.
        self.background_tls_dir = None
        self.background_tls = background_tls

    def _start(self, ns, argv, what, ready=True):
        process = subprocess.Popen(
            ['ip', 'netns', 'exec', self.topology.ns[ns]] + argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        _record_process(self.workdir, process, what)
        self.processes.append(process)
        if ready:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError('%s did not start' % what)
            process.first_line = line
        return process

    def __enter__(self):
        self.topology.create()
        try:
            self.tls_dir = x509.make_credentials(
                os.path.join(self.workdir, 'x509'),
                x509.make_ca(os.path.join(self.workdir, 'x509-ca')))
            # Every compute node runs a responder; chaff goes to the
            # destination and to another host (bgr), not only to the
            # migration's two ends.
            for host in CHAFF_HOSTS:
                self._start(host, [
                    sys.executable, '-m', 'nova_stealth.cmd.chaff_responder',
                    '--address', self.topology.address(host),
                    '--ports', chaff_conf.DEFAULT_CHAFF_PORTS,
                    '--peer-network', '198.18.0.0/16',
                    '--tls-dir', self.tls_dir], 'chaff responder on ' + host)
            if self.background_tls:
                self.background_tls_dir = x509.make_credentials(
                    os.path.join(self.workdir, 'x509-web'),
                    x509.make_ca(os.path.join(self.workdir, 'x509-web-ca'),
                                 'background web CA'))
            if self.background == 'markov':
                self._markov()
            else:
                self._trace()
            before = self.topology.wan_bytes()
            time.sleep(self.settle)
            after = self.topology.wan_bytes()
            self.measured_load = {
                router: (after[router] - before[router]) * 8 / (
                    self.settle * topology.BOTTLENECK_MBIT * 1e6)
                for router in after}
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _tls(self):
        if self.background_tls_dir is None:
            return []
        return ['--tls-dir', self.background_tls_dir]

    def _markov(self):
        python = [sys.executable, '-m', traffic.__name__]
        for host in ('bgl', 'bgr'):
            self._start(host, python + ['server', '--address',
                                        self.topology.address(host)] +
                        self._tls(), 'traffic server on %s' % host)
        users = LOADS[self.load]
        for host, server in (('bgr', 'bgl'), ('bgl', 'bgr')):
            self._start(host, python + [
                'users', '--server', self.topology.address(server),
                '--count', str(users), '--seed', '%d' % self.seed] +
                self._tls(), 'users on %s' % host)

    def _trace(self):
        python = [sys.executable, '-m', replay.__name__]
        for host in ('bgl', 'bgr'):
            self._start(host, python + ['server', '--address',
                                        self.topology.address(host),
                                        '--envelopes', self.envelopes] +
                        self._tls(), 'replay server on %s' % host)
        rate = replay.mean_rate(replay.load(self.envelopes), TRACE_THINK_S)
        users = max(1, int(round(TRACE_LOADS[self.load] * (
            topology.BOTTLENECK_MBIT * 1e6 / 8) / rate)))
        for host, server in (('bgr', 'bgl'), ('bgl', 'bgr')):
            self._start(host, python + [
                'users', '--server', self.topology.address(server),
                '--envelopes', self.envelopes, '--count', str(users),
                '--seed', '%d' % self.seed, '--think-s',
                str(TRACE_THINK_S)] + self._tls(),
                'replay users on %s' % host)

    def background_kinds(self):
        """{server port: kind} of this site's background flows."""
        if self.background == 'markov':
            return {port: kind for kind, port in traffic.PORTS.items()}
        return {port: 'trace/' + origin for port, origin in replay.ports(
            replay.load(self.envelopes)).items()}

    def __exit__(self, *exc):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        self.topology.destroy()
        if os.path.exists(os.path.join(self.workdir, PROCESSES)):
            os.unlink(os.path.join(self.workdir, PROCESSES))

    def migrate(self, name, vm, policy, schedule, rate_mib_s, seed):
        """Migrate a fresh VM once; return the run's record.

        :param name: the run's name (its files start with it)
        :param vm: {'guest', 'memory_mib', 'image'}
        :param policy: None for a native migration, else a rate policy
        :param schedule: chaff schedule for stealthed runs, or ``none``
        :param rate_mib_s: QEMU's limiter for a native migration
        """
        dst_addr = self.topology.address('dst')
        state_dir = os.path.join(self.workdir, 'state-' + name)
        os.makedirs(state_dir, exist_ok=True)
        group = stealth_conf.load_group(state_dir=state_dir)
        lease = None
        if policy:
            lease = destination.DestinationSession(group, name)
            with netns.in_netns(self.topology.ns['dst']):
                port = lease.prepare()
        else:
            port = qemu.LIBVIRT_PORTS[0]
        capture = os.path.join(self.workdir, name + '.pcap')
        dump = netns.Tcpdump(
            self.topology.ns['rl'], capture, '-i', 'wan0', '-s',
            str(self.snaplen), 'tcp',
            spawned=lambda p: _record_process(self.workdir, p, 'tcpdump'))
        vms, agent = [], None
        try:
            migration_tls = self.tls_dir if self.native_tls else None
            target = qemu.Vm(
                self.topology.ns['dst'], self.workdir, name + '-dst',
                vm['memory_mib'], vm['guest'], vm['image'], incoming=True,
                spawned=lambda p: _record_process(self.workdir, p, 'qemu'),
                binary=self.qemu_binary, tls_dir=migration_tls)
            vms.append(target)
            origin = qemu.Vm(
                self.topology.ns['src'], self.workdir, name + '-src',
                vm['memory_mib'], vm['guest'], vm['image'],
                spawned=lambda p: _record_process(self.workdir, p, 'qemu'),
                binary=self.qemu_binary, tls_dir=migration_tls)
            vms.append(origin)
            if vm['guest'] == 'linux':
                origin.wait_console(guest.READY, GUEST_BOOT_TIMEOUT)
            target.listen(dst_addr, port)
            version, package = origin.version()
            record = {'name': name, 'load': self.load,
                      'mode': 'stealth' if policy else 'native',
                      'policy': policy, 'schedule': schedule if policy
                      else None, 'guest': vm['guest'],
                      'memory_mib': vm['memory_mib'], 'port': port,
                      'rate_mib_s': None if policy else rate_mib_s,
                      'chaff_bytes': 0,
                      'namespaces': sorted(self.topology.ns.values()),
                      'qemu': '%d.%d.%d' % version, 'qemu_package': package}
            if policy:
                agent = self._start('src', [
                    sys.executable, '-m', 'nova_stealth.testbed.agent',
                    '--state-dir', state_dir, '--policy', policy,
                    '--schedule', schedule, '--peer', dst_addr,
                    '--port', str(port), '--tls-dir', self.tls_dir,
                    '--chaff-peer', self.topology.address(CHAFF_HOSTS[1]),
                    '--memory-bytes',
                    str(vm['memory_mib'] * units.MIB), '--seed', str(seed)],
                    'the source session')
                bandwidth = source.hypervisor_max_bandwidth(group) * units.MIB
                switchover = agent_switchover(agent)
            else:
                bandwidth = rate_mib_s * units.MIB
                switchover = None
            record.update(origin.migrate(dst_addr, port, bandwidth,
                                         switchover=switchover))
            target.wait_running(DESTINATION_TIMEOUT)
            if agent:
                agent.stdin.write('end\n')
                agent.stdin.flush()
                said = json.loads(agent.stdout.readline() or 'null')
                if said is None:
                    raise RuntimeError('the source session did not finish')
                agent.wait(30)
                record['chaff_bytes'] = said['chaff_bytes']
                record['agent'] = said
            time.sleep(CAPTURE_TAIL)
        finally:
            for machine in vms:
                machine.stop()
            if agent and agent.poll() is None:
                agent.terminate()
                agent.wait(30)
            dump.stop()
            if lease:
                lease.release()
        record['capture'] = capture
        record['truth'] = self._truth(capture, record)
        return record

    def _truth(self, capture, record):
        """Name the run's flows: migration, chaff, background by kind."""
        src, dst = self.topology.address('src'), self.topology.address('dst')
        # The testbed's agent runs with the default chaff_ports.
        chaff_low, chaff_high = map(
            int, chaff_conf.DEFAULT_CHAFF_PORTS.split('-'))
        kinds = {port: kind for kind, port in traffic.PORTS.items()}
        entries = []
        flows, _ = flow_lib.read_flows(
            [capture], flow_lib.FlowOptions(min_packets=1))
        for flow in flows:
            key = flow.key
            if key.src == src and key.dst == dst and (
                    key.dport == record['port']):
                kind = record['policy'] or 'native-%g' % record['rate_mib_s']
                entries.append((key, 'migration', kind))
            elif key.src == src and chaff_low <= key.dport <= chaff_high:
                entries.append((key, 'chaff', record['schedule']))
            elif key.sport in kinds:
                entries.append((key, 'background', kinds[key.sport]))
            elif key.dport == traffic.PORTS['mail']:
                entries.append((key, 'background', 'mail'))
        path = capture[:-len('.pcap')] + '.truth.json'
        truth.dump(path, entries)
        return path
