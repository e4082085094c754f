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
"""One lab source host: migration-like flows, one after the other.

``python -m nova_stealth.testbed.lab_agent`` runs inside a source host's
namespace for a whole site: it prints ``{"ready": true}``, then reads one
plan a line on its standard input (``{"flows": [...], "delay": s}``) and
sends the plan's flows in order, each to a listener it opens inside the
destination's namespace, and prints ``{"done": n}`` once they and their
chaff are over:

* a stealthed flow stands in for a QEMU migration under stealth, which is
  always backlogged (its limiter is at four times ``max_rate``): the
  destination leases the data port as the driver's does, the engine's
  :class:`~nova_stealth.engine.source.SourceSession` shapes it (DHTB
  class, modulator, chaff, on this host's own egress), and a greedy TCP
  sender writes the flow's bytes as fast as the class lets them go; then
  ``finish`` and ``close`` as the driver does;
* a native flow stands in for QEMU's own limiter: a tenth of its rate
  every 100 ms, then silence until the next period.

A host migrates one flow at a time, as a compute node with Nova's
``max_concurrent_live_migrations = 1``: the next flow starts once the
last one's data has drained, while that one's chaff ramps down in the
background (the driver's ``finish`` leaves it so too). It prints one JSON
line per flow once its chaff is over (its 5-tuple, times and what the
modulator did); it exits at the end of its input, and SIGTERM aborts
every session under way, removing its shaping, chaff and lease. One
process for all of a site's runs: under a busy CPU, starting Python with
the engine's imports (and a privsep daemon per policy) took most of a
minute.
"""

import argparse
import json
import signal
import socket
import sys
import threading
import time

import numpy as np
from oslo_config import cfg

from nova_stealth import conf as stealth_conf
from nova_stealth.engine import destination
from nova_stealth.engine import source
from nova_stealth import privileged
from nova_stealth.testbed import agent as agent_lib
from nova_stealth.testbed import netns
from nova_stealth import units

#: QEMU's limiter hands out a tenth of its rate every BUFFER_DELAY.
PERIOD_S = 0.1
CHUNK = 1 << 18
#: Of a stealthed flow's modulator record, 100 ms windows left out at the
#: start (TCP's slow start, the start ramp) and at the end (the drain).
SKIP_START, SKIP_END = 3, 2
#: A window whose class sent less than this share of the rate set was
#: held back by the path (the bottleneck), not by its own class.
HELD_BACK = 0.8
#: How long a finished flow's chaff may take to ramp down.
TAIL_TIMEOUT = 120.0


class Sink(object):
    """A listener in the destination's namespace that discards all data."""

    def __init__(self, dst_ns, address, port):
        with netns.in_netns(dst_ns):
            self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((address, port))
        self.socket.listen(4)
        self.received = 0
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        try:
            connection, _ = self.socket.accept()
        except OSError:
            return
        with connection:
            buffer = bytearray(CHUNK)
            while True:
                got = connection.recv_into(buffer)
                if not got:
                    return
                self.received += got

    def close(self):
        self.socket.close()
        self.thread.join(10)


def _send_greedy(sock, size):
    payload = memoryview(bytearray(CHUNK))
    left = size
    while left > 0:
        piece = min(left, CHUNK)
        sock.sendall(payload[:piece])
        left -= piece


def _send_paced(sock, size, rate_bytes):
    payload = memoryview(bytearray(CHUNK))
    share = int(rate_bytes * PERIOD_S)
    start = time.monotonic()
    period, left = 0, size
    while left > 0:
        due = start + period * PERIOD_S
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        burst = min(share, left)
        while burst > 0:
            piece = min(burst, CHUNK)
            sock.sendall(payload[:piece])
            burst -= piece
            left -= piece
        period += 1


def rate_check(trace, summary, cap_bytes):
    """How the class's measured rate kept to the rate set, per 100 ms.

    A rate set above the bottleneck's cap can only be held back: the cap
    stands for it. Each rate holds from its tick to the next one recorded
    (ticks the modulator skipped included).

    :param trace: the modulator's trace (its ticks: times, rates, sent)
    :param summary: the modulator's summary (ticks run and skipped)
    :param cap_bytes: the bottleneck's rate, bytes/s
    :returns: {'windows', 'held_back_share', 'sent_over_set'}: the share of
        windows whose class sent less than HELD_BACK of the rate set
        (something on the path held the flow back), and all bytes sent
        over all bytes allowed, over the windows judged
    """
    if not trace or len(trace.get('rates') or ()) < 2:
        return None
    times = np.asarray(trace['times'])
    allowed = np.minimum(np.asarray(trace['rates']) * units.MIB,
                         cap_bytes)[:-1] * np.diff(times)
    sent = np.asarray(trace['sent'])
    window = (times[:-1] // PERIOD_S).astype(int)
    held, ratios, totals = 0, 0, [0.0, 0.0]
    for number in range(SKIP_START, window[-1] + 1 - SKIP_END):
        mine = np.flatnonzero(window == number)
        if not len(mine) or min(sent[mine[0]], sent[mine[-1] + 1]) < 0:
            continue
        moved = sent[mine[-1] + 1] - sent[mine[0]]
        budget = allowed[mine].sum()
        ratios += 1
        held += moved < HELD_BACK * budget
        totals[0] += moved
        totals[1] += budget
    if not ratios:
        return {'windows': 0, 'held_back_share': None, 'sent_over_set': None,
                'skipped_ticks': int(summary.get('skipped') or 0),
                'ticks': int(summary.get('ticks') or len(times))}
    return {'windows': ratios, 'held_back_share': float(held / ratios),
            'sent_over_set': float(totals[0] / totals[1]),
            'skipped_ticks': int(summary.get('skipped') or 0),
            'ticks': int(summary.get('ticks') or len(times))}


class Tails(object):
    """The chaff ramp-downs of finished flows, and their records.

    A flow's record is printed once its tail is over; :meth:`abort` ends
    every session still ramping down.
    """

    def __init__(self, cap_bytes):
        self.cap_bytes = cap_bytes
        self.threads = []
        self.sessions = []
        self.lock = threading.Lock()

    def emit(self, record):
        with self.lock:
            print(json.dumps(record), flush=True)

    def start(self, session, record, trace):
        """Let ``session`` ramp down; print ``record`` once it has."""
        self.sessions.append(session)
        thread = threading.Thread(target=self._tail,
                                  args=(session, record, trace), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _tail(self, session, record, trace):
        try:
            session.close(TAIL_TIMEOUT)
            summary = session.report or {}
            record['chaff_bytes'] = session.chaff_bytes
            record['rate_check'] = rate_check(trace, summary, self.cap_bytes)
            record['modulator_error'] = summary.get('error')
            record['ended'] = time.time()
        finally:
            session.abort()
        self.emit(record)

    def wait(self):
        """Wait for every tail begun so far; forget them."""
        for thread in self.threads:
            thread.join()
        self.threads, self.sessions = [], []

    def abort(self):
        for session in self.sessions:
            session.abort()


def run_flow(flow, args, src_group, dst_group, tails):
    """Send one flow; its record goes out when its tail is over."""
    record = dict(flow, src=args.address, dst=args.peer, error=None)
    lease = session = sink = sock = None
    try:
        if flow['policy']:
            lease = destination.DestinationSession(dst_group, flow['name'])
            with netns.in_netns(args.dst_ns):
                port = lease.prepare()
        else:
            port = args.native_port
        sink = Sink(args.dst_ns, args.peer, port)
        record['started'] = time.time()
        if flow['policy']:
            session = source.SourceSession(
                src_group, flow['name'], args.peer, port, flow['bytes'],
                seed=flow['seed'])
            session.start()
        sock = socket.create_connection((args.peer, port))
        record['sport'], record['dport'] = sock.getsockname()[1], port
        record['data_start'] = time.time()
        if flow['policy']:
            _send_greedy(sock, flow['bytes'])
        else:
            _send_paced(sock, flow['bytes'], flow['rate_mib_s'] * units.MIB)
        sock.shutdown(socket.SHUT_WR)
        sink.thread.join(60)
        record['data_end'] = time.time()
        record['received'] = sink.received
        if session:
            # The modulator's last ticks, before finish stops it.
            trace = session.shaper.modulator_trace(session.modulator)
            session.finish()
            tails.start(session, record, trace)
            session = None
        else:
            record['ended'] = time.time()
            tails.emit(record)
    finally:
        if sock:
            sock.close()
        if session:
            session.abort()
        if sink:
            sink.close()
        if lease:
            lease.release()


def main(argv=None):
    parser = argparse.ArgumentParser(prog='nova-stealth-testbed-lab-agent')
    parser.add_argument('--address', required=True, help='this host')
    parser.add_argument('--peer', required=True)
    parser.add_argument('--dst-ns', required=True)
    parser.add_argument('--native-port', type=int, required=True)
    parser.add_argument('--state-dir', required=True)
    parser.add_argument('--lease-dir', required=True)
    parser.add_argument('--tls-dir', required=True,
                        help='the chaff\'s TLS credentials')
    parser.add_argument('--chaff-peer', action='append', default=[],
                        dest='chaff_peers', metavar='ADDRESS',
                        help='another host chaff may go to (repeat)')
    parser.add_argument('--cap-mbit', type=float, required=True,
                        help='the bottleneck\'s rate')
    args = parser.parse_args(argv)
    cfg.CONF.set_override('helper_command',
                          '%s/bin/privsep-helper' % sys.prefix,
                          group=privileged.CONFIG_SECTION)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    dst_group = stealth_conf.load_group(state_dir=args.lease_dir)
    groups = {}
    tails = Tails(args.cap_mbit * 1e6 / 8)
    print(json.dumps({'ready': True}), flush=True)
    try:
        # Each line a plan: {'flows': [{name, policy (null: native),
        # schedule, bytes, rate_mib_s, seed}], 'delay': seconds}.
        for line in sys.stdin:
            order = json.loads(line)
            time.sleep(order.get('delay', 0.0))
            for flow in order['flows']:
                policy = flow['policy']
                key = (policy, flow.get('schedule'))
                if policy and key not in groups:
                    groups[key] = agent_lib.options(argparse.Namespace(
                        schedule=flow.get('schedule') or 'ramp',
                        config_file=None, state_dir=args.state_dir,
                        policy=policy, tls_dir=args.tls_dir,
                        chaff_peers=args.chaff_peers))
                run_flow(flow, args, groups.get(key), dst_group, tails)
            tails.wait()
            tails.emit({'done': len(order['flows'])})
    finally:
        tails.abort()


if __name__ == '__main__':
    main()
