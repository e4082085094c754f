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

``python -m nova_stealth.testbed.lab_agent --plan FILE`` runs inside a
source host's namespace and sends the plan's flows in order, each to a
listener it opens inside the destination's namespace:

* a stealthed flow stands in for a QEMU migration under stealth, which is
  always backlogged (its limiter is at four times ``max_rate``): the
  destination leases the data port as the driver's does, the engine's
  :class:`~nova_stealth.engine.source.SourceSession` shapes it (DHTB
  class, modulator, chaff, on this host's own egress), and a greedy TCP
  sender writes the flow's bytes as fast as the class lets them go; then
  ``finish`` and ``close`` as the driver does;
* a native flow stands in for QEMU's own limiter: a tenth of its rate
  every 100 ms, then silence until the next period.

It prints one JSON line per flow (its 5-tuple, times and what the
modulator did) and exits; SIGTERM aborts the flow under way, removing its
shaping, chaff and lease.
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
from nova_stealth.testbed import agent as agent_lib
from nova_stealth.testbed import netns

#: QEMU's limiter hands out a tenth of its rate every BUFFER_DELAY.
PERIOD_S = 0.1
CHUNK = 1 << 18
#: Of a stealthed flow's modulator record, 100 ms windows left out at the
#: start (TCP's slow start, the start ramp) and at the end (the drain).
SKIP_START, SKIP_END = 3, 2
#: A window whose class sent less than this share of the rate set was
#: held back by the path (the bottleneck), not by its own class.
HELD_BACK = 0.8


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
    allowed = np.minimum(np.asarray(trace['rates']) * source.MIB,
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


def run_flow(flow, args, src_group, dst_group):
    """Send one flow; return its record."""
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
            _send_paced(sock, flow['bytes'], flow['rate_mib_s'] * source.MIB)
        sock.shutdown(socket.SHUT_WR)
        sink.thread.join(60)
        record['data_end'] = time.time()
        if session:
            # The modulator's last ticks, before finish stops it.
            trace = session.shaper.modulator_trace(session.modulator)
            session.finish()
            session.close(120.0)
            summary = session.report or {}
            record['chaff_bytes'] = session.chaff_bytes
            record['rate_check'] = rate_check(trace, summary,
                                              args.cap_mbit * 1e6 / 8)
            record['modulator_error'] = summary.get('error')
        record['received'] = sink.received
        record['ended'] = time.time()
    finally:
        if sock:
            sock.close()
        if session:
            session.abort()
        if sink:
            sink.close()
        if lease:
            lease.release()
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(prog='nova-stealth-testbed-lab-agent')
    parser.add_argument('--plan', required=True,
                        help='JSON list of flows: name, policy (null: '
                             'native), schedule, bytes, rate_mib_s, seed')
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
    parser.add_argument('--delay', type=float, default=0.0)
    parser.add_argument('--cap-mbit', type=float, required=True,
                        help='the bottleneck\'s rate')
    args = parser.parse_args(argv)
    cfg.CONF.set_override('helper_command',
                          '%s/bin/privsep-helper' % sys.prefix,
                          group=agent_lib.PRIVSEP_GROUP)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with open(args.plan) as plan_file:
        plan = json.load(plan_file)
    dst_group = stealth_conf.load_group(state_dir=args.lease_dir)
    groups = {}
    print(json.dumps({'ready': True}), flush=True)
    time.sleep(args.delay)
    for flow in plan:
        policy = flow['policy']
        key = (policy, flow.get('schedule'))
        if policy and key not in groups:
            groups[key] = agent_lib.options(argparse.Namespace(
                schedule=flow.get('schedule') or 'ramp', config_file=None,
                state_dir=args.state_dir, policy=policy,
                tls_dir=args.tls_dir, chaff_peers=args.chaff_peers))
        print(json.dumps(run_flow(flow, args, groups.get(key), dst_group)),
              flush=True)


if __name__ == '__main__':
    main()
