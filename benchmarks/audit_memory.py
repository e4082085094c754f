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
"""Benchmark the audit's memory per flow: many short flows, long flows.

Two kinds of capture are written (Ethernet, IPv4, TCP, 64-byte snapshots)
and read by ``flows.read_flows`` with the attacker's default filtering
(TCP, at least 1000 packets), each in a process of its own so that peak
memory is its own:

* ``short``: F flows of 2 packets each, none of which can qualify, at
  --flows-per-second new flows a second (all of them open at once unless
  the idle timeout evicts them), read with the flow table and the tells as
  nova-stealth-audit reads them (``short_no_eviction``: idle timeout 0;
  ``short_flows_only``: the flow table alone);
* ``long``: --long-flows flows whose packets are interleaved all through
  the capture, so that every chunk the reader parses holds packets of
  every flow; the number of chunks grows with the capture.

Peak memory is fitted against the number of flows (``short``, reported as
MiB per million flows, with and without the idle timeout) and against the
number of chunks (``long``, bytes per flow per chunk). The last line
printed is one JSON object.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import pcap_records  # noqa: H306 (a sibling module)

SNAP = 64


def write_capture(path, flow_ids, stamps_us):
    """A pcap with one record per (flow id, time in microseconds)."""
    snapshot = pcap_records.tcp_snapshot(SNAP, (198, 18), (198, 19, 255, 1))
    with open(path, 'wb') as out:
        out.write(pcap_records.file_header(SNAP))
        for start in range(0, len(flow_ids), 1000000):
            ids = np.asarray(flow_ids[start:start + 1000000], np.int64)
            records = pcap_records.records(stamps_us[start:start + 1000000],
                                           snapshot)
            # 198.18.0.0/15 holds 2**17 sources; the source port the rest.
            host = ids & 0x1FFFF
            records[:, 16 + 27] += (host >> 16).astype(np.uint8)
            records[:, 16 + 28] = (host >> 8 & 0xFF).astype(np.uint8)
            records[:, 16 + 29] = (host & 0xFF).astype(np.uint8)
            port = (1024 + (ids >> 17)).astype('>u2').view(np.uint8)
            records[:, 16 + 34:16 + 36] = port.reshape(-1, 2)
            out.write(records.tobytes())


def short_capture(path, flows, per_second):
    """2 packets per flow, 1 s apart, flows starting at per_second."""
    ids = np.repeat(np.arange(flows), 2)
    starts = np.arange(flows) * (10 ** 6 // per_second)
    stamps = starts[ids] + np.tile([0, 10 ** 6], flows)
    order = np.argsort(stamps, kind='stable')
    write_capture(path, ids[order], 1700000000 * 10 ** 6 + stamps[order])


def long_capture(path, flows, packets):
    """``packets`` packets round-robin over ``flows`` flows, 5 us apart."""
    ids = np.arange(packets) % flows
    stamps = 1700000000 * 10 ** 6 + np.arange(packets) * 5
    write_capture(path, ids, stamps)


def child(path, idle_timeout, with_tells, chunk_bytes):
    from nova_stealth.analysis import flows

    options = flows.FlowOptions()
    if idle_timeout is not None:
        options.idle_timeout = idle_timeout
    also = []
    if with_tells:
        from nova_stealth.analysis import tells
        also.append(tells.TellTable(options))
    cpu = time.process_time()
    found, readers = flows.read_flows([path], options, also=also,
                                      chunk_bytes=chunk_bytes)
    print(json.dumps({
        'packets': readers[0].packets, 'qualifying_flows': len(found),
        'chunks': -(-os.path.getsize(path) // chunk_bytes),
        'cpu_s': time.process_time() - cpu,
        'peak_rss_mib': pcap_records.peak_rss_mib()}))


def measure(path, chunk_mib, idle_timeout=None, with_tells=True):
    command = [sys.executable, os.path.abspath(__file__), '--child', path,
               '--chunk-mib', str(chunk_mib)]
    if idle_timeout is not None:
        command += ['--idle-timeout', str(idle_timeout)]
    if not with_tells:
        command.append('--no-tells')
    result = subprocess.run(command, capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def slope(x, y):
    return float(np.polyfit(x, y, 1)[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--flows', type=int, default=400000,
                        help='short flows of the largest capture')
    parser.add_argument('--flows-per-second', type=int, default=500,
                        help='new short flows a second (at 500, 400,000 '
                             'flows span 800 s: several idle timeouts)')
    parser.add_argument('--long-flows', type=int, default=2000)
    parser.add_argument('--long-packets', type=int, default=3200000,
                        help='packets of the largest long-flow capture; '
                             'the smallest (a quarter) must give every '
                             'flow its full state (64 packets)')
    parser.add_argument('--chunk-mib', type=float, default=8.0,
                        help="the reader's chunk (default 8 MiB, the "
                             "audit's); smaller captures need smaller "
                             'chunks for the sweeps between them to show')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--idle-timeout', type=float,
                        help=argparse.SUPPRESS)
    parser.add_argument('--no-tells', action='store_true',
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.idle_timeout, not args.no_tells,
              int(args.chunk_mib * 2 ** 20))
        return
    if args.long_packets // 4 < 100 * args.long_flows:
        parser.error('--long-packets must be at least 400 x --long-flows, '
                     'so that chunks, not promotions, make the growth')
    kinds = ('short', 'short_no_eviction', 'short_flows_only', 'long')
    figures = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, 'capture.pcap')
        for fraction in (4, 2, 1):
            flows = args.flows // fraction
            short_capture(path, flows, args.flows_per_second)
            run = measure(path, args.chunk_mib)
            run['flows'] = flows
            figures['short'].append(run)
            run = measure(path, args.chunk_mib, idle_timeout=0)
            run['flows'] = flows
            figures['short_no_eviction'].append(run)
            run = measure(path, args.chunk_mib, with_tells=False)
            run['flows'] = flows
            figures['short_flows_only'].append(run)
            long_capture(path, args.long_flows, args.long_packets // fraction)
            run = measure(path, args.chunk_mib)
            run['flows'] = args.long_flows
            figures['long'].append(run)
    for name in kinds[:3]:
        runs = figures[name]
        figures[name + '_mib_per_million_flows'] = round(slope(
            [r['flows'] / 1e6 for r in runs],
            [r['peak_rss_mib'] for r in runs]), 1)
    runs = figures['long']
    figures['long_bytes_per_flow_per_chunk'] = round(slope(
        [r['chunks'] for r in runs],
        [r['peak_rss_mib'] * 2 ** 20 / args.long_flows for r in runs]), 1)
    for name in kinds:
        for run in figures[name]:
            print('%-18s %8d flows %9d packets %4d chunks %6.1f s CPU '
                  'peak %7.1f MiB' % (name, run['flows'], run['packets'],
                                      run['chunks'], run['cpu_s'],
                                      run['peak_rss_mib']))
    print(json.dumps(figures, sort_keys=True))


if __name__ == '__main__':
    main()
