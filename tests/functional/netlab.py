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
"""Test hosts in network namespaces, and real TCP traffic between them.

Every name is unique per run and every address comes from 198.18.0.0/15 or
2001:db8::/32. Whatever is made here is removed by the fixtures' cleanup.
"""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid

from nova_stealth.testbed import netns
from tests import paths

in_netns = netns.in_netns
offloads_off = netns.offloads_off
run = netns.run
Tcpdump = netns.Tcpdump

DIRECT_PACKETS = re.compile(r'direct_packets_stat \d+')


def unique_name(prefix):
    """A name no other test run uses (at most 15 characters)."""
    return '%s-%s' % (prefix, uuid.uuid4().hex[:8])


class Link(object):
    """Two namespaces joined by a veth pair, with IPv4 and IPv6 addresses.

    ``src`` (device ``s0``) is the migration source whose egress is
    shaped; ``dst`` (device ``d0``) receives.
    """

    SRC_V4, DST_V4 = '198.18.7.1', '198.18.7.2'
    SRC_V6, DST_V6 = '2001:db8:7::1', '2001:db8:7::2'

    def __init__(self):
        self.src = unique_name('nsts')
        self.dst = unique_name('nstd')
        self.made = []

    def create(self):
        """Make the namespaces and the link."""
        for name in (self.src, self.dst):
            run('ip', 'netns', 'add', name)
            self.made.append(name)
            run('ip', '-n', name, 'link', 'set', 'lo', 'up')
        run('ip', '-n', self.src, 'link', 'add', 's0', 'type', 'veth',
            'peer', 'name', 'd0', 'netns', self.dst)
        for ns, dev, v4, v6 in ((self.src, 's0', self.SRC_V4, self.SRC_V6),
                                (self.dst, 'd0', self.DST_V4, self.DST_V6)):
            run('ip', '-n', ns, 'addr', 'add', v4 + '/24', 'dev', dev)
            run('ip', '-n', ns, 'addr', 'add', v6 + '/64', 'dev', dev,
                'nodad')
            run('ip', '-n', ns, 'link', 'set', dev, 'up')
        return self

    def destroy(self):
        """Remove the namespaces (and with them the link)."""
        for name in reversed(self.made):
            run('ip', 'netns', 'del', name, check=False)
        self.made = []

    def tc_show(self, ns=None, dev='s0'):
        """Return ``tc qdisc/class/filter show`` of a device.

        HTB's ``direct_packets_stat`` is a counter, not configuration: a
        router solicitation sent while no class matched bumps it, so it is
        masked to let a tree be compared before and after a change.
        """
        ns = ns or self.src
        return {what: DIRECT_PACKETS.sub(
                    'direct_packets_stat -',
                    run('tc', '-n', ns, what, 'show', 'dev', dev))
                for what in ('qdisc', 'class', 'filter')}


def record_received(sock, stopping, samples):
    """Read until EOF, an error or ``stopping``; log (time, bytes)."""
    sock.settimeout(0.2)
    while not stopping.is_set():
        try:
            data = sock.recv(1 << 18)
        except socket.timeout:
            continue
        except OSError:
            return
        if not data:
            return
        samples.append((time.monotonic(), len(data)))


class Sink(object):
    """A TCP server in a namespace that counts what it receives."""

    def __init__(self, ns, address, port):
        family = socket.AF_INET6 if ':' in address else socket.AF_INET
        with in_netns(ns):
            self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((address, port))
        self.listener.listen(8)
        self.samples = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.listener.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                conn, _peer = self.listener.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self._read, args=(conn,),
                             daemon=True).start()

    def _read(self, conn):
        with conn:
            record_received(conn, self.stopping, self.samples)

    def throughput(self, start, stop, window=1.0):
        """Bits per second received in each window from start to stop."""
        bins = [0] * int(round((stop - start) / window))
        for when, size in list(self.samples):
            index = int((when - start) // window)
            if 0 <= index < len(bins):
                bins[index] += size
        return [8 * total / window for total in bins]

    def close(self):
        """Stop serving."""
        self.stopping.set()
        self.thread.join()
        self.listener.close()


class BulkSender(object):
    """A TCP client in a namespace sending as fast as it is let."""

    def __init__(self, ns, address, port):
        family = socket.AF_INET6 if ':' in address else socket.AF_INET
        with in_netns(ns):
            self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.connect((address, port))
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self):
        chunk = os.urandom(1 << 16)
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                self.sock.send(chunk)
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        """Stop sending and close the connection."""
        self.stopping.set()
        self.thread.join()
        self.sock.close()


def iperf3_bits_per_second(link, port, seconds=3):
    """Throughput of an iperf3 TCP test from src to dst over the link."""
    server = subprocess.Popen(
        ['ip', 'netns', 'exec', link.dst, 'iperf3', '-s', '-1', '-B',
         link.DST_V4, '-p', str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if ':%d ' % port in run('ip', 'netns', 'exec', link.dst, 'ss',
                                    '-ltn'):
                break
            time.sleep(0.1)
        report = json.loads(run(
            'ip', 'netns', 'exec', link.src, 'iperf3', '-J', '-c',
            link.DST_V4, '-p', str(port), '-t', str(seconds)))
        return report['end']['sum_received']['bits_per_second']
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


class PacedSender(object):
    """A TCP client that sends like QEMU's rate limiter.

    Every 100 ms it sends the period's budget at full speed, then nothing.
    It is a process of its own in the namespace, as QEMU is: a thread of
    the test process shared the interpreter with every sink and bulk
    sender, and on a loaded machine its bursts came late often enough to
    double the CV of its throughput.
    """

    def __init__(self, ns, address, port, rate_bytes, period=0.1):
        budget = int(rate_bytes * period)
        self.process = subprocess.Popen(
            ['ip', 'netns', 'exec', ns, sys.executable, '-m',
             'tests.functional.paced_sender', address, str(port),
             str(budget), str(period)],
            cwd=str(paths.ROOT), stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if line.strip() != 'connected':
            self.close()
            raise RuntimeError('paced sender to %s:%d did not connect'
                               % (address, port))

    def close(self):
        """Stop sending and close the connection."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


def modulated_bulk(link, shaper, port, policy, kwargs, seed, seconds=3.0):
    """A bulk flow to ``port`` through a class modulated by ``policy``.

    :returns: (report while running, trace, report once stopped)
    """
    sink = Sink(link.dst, link.DST_V4, port)
    session = shaper.install('mig-%d' % port, link.DST_V4, port,
                             kwargs['start_rate'])
    sender = BulkSender(link.src, link.DST_V4, port)
    try:
        time.sleep(0.5)
        modulator_id = shaper.start_modulator(session, policy, kwargs,
                                              tick_s=0.01, seed=seed)
        time.sleep(seconds)
        running = shaper.modulator_report(modulator_id)
        trace = shaper.modulator_trace(modulator_id)
        return running, trace, shaper.stop_modulator(modulator_id)
    finally:
        sender.close()
        sink.close()
