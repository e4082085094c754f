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
"""Benchmark the audit's reader + flows + features against dpkt.

Writes a pcap of --packets packets (default 5,000,000: Ethernet, IPv4, TCP,
40 flows, 64-byte snapshots of 1514-byte frames, times 8 us apart on
average with 30 ms gaps every few hundred packets), then times, each in a
process of its own so that CPU time and peak memory are its own:

* nova_stealth: CaptureReader -> FlowTable -> features of every flow, as
  the plain audit computes them;
* nova_stealth with the multi-scale features too (``FlowOptions``'
  ``multiscale``: what the audit adds when the battery runs, reported
  apart, no target);
* dpkt: a straightforward loop (dpkt.pcap.Reader, Ethernet/IP/TCP parse,
  per-flow lists of times and sizes) followed by the same features
  computed per flow with numpy.

Both also run on captures of a fifth of the size (and nova_stealth on one
of half), and the growth of peak memory per million packets is fitted
across sizes. Targets: >= 1 million packets per second of CPU time, >= 5 x
the dpkt loop, and memory flat in the capture's size: at most 5 MiB more
per million packets (what remains is 8 bytes per burst start, plus the
allocator's noise of a few MiB). The last line printed is one JSON object.
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

FLOWS = 40
SNAP = 64


def write_capture(path, packets, seed=0):
    """A pcap of TCP flows written with numpy, a million records at a time."""
    rng = np.random.default_rng(seed)
    snapshot = pcap_records.tcp_snapshot(SNAP, (198, 18, 1, 1),
                                         (198, 18, 2, 1))
    with open(path, 'wb') as out:
        out.write(pcap_records.file_header(SNAP))
        now = 1700000000 * 10 ** 6
        done = 0
        while done < packets:
            count = min(1000000, packets - done)
            gaps = rng.exponential(8.0, count)
            gaps[rng.random(count) < 0.003] += 30000
            stamps = now + np.cumsum(gaps).astype(np.int64)
            now = int(stamps[-1])
            flow = rng.integers(0, FLOWS, count)
            records = pcap_records.records(stamps, snapshot)
            records[:, 16 + 33] = flow
            port = (40000 + flow).astype('>u2').view(np.uint8).reshape(-1, 2)
            records[:, 16 + 34:16 + 36] = port
            out.write(records.tobytes())
            done += count


def ours(path, multiscale=False):
    from nova_stealth.analysis import flows
    found, readers = flows.read_flows(
        [path], flows.FlowOptions(min_packets=1, multiscale=multiscale))
    return readers[0].packets, len(found)


def ours_multiscale(path):
    return ours(path, multiscale=True)


def dpkt_loop(path):
    import dpkt

    from nova_stealth.analysis import flows as flow_lib

    times, sizes = {}, {}
    packets = 0
    with open(path, 'rb') as capture:
        for stamp, frame in dpkt.pcap.Reader(capture):
            packets += 1
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP) or ip.p != 6:
                continue
            tcp = ip.data
            sport, dport = (tcp.sport, tcp.dport) if isinstance(
                tcp, dpkt.tcp.TCP) else (0, 0)
            key = (ip.src, sport, ip.dst, dport)
            times.setdefault(key, []).append(stamp)
            sizes.setdefault(key, []).append(ip.len + 14)
    for key in times:
        t = np.asarray(times[key]) * 1e9
        s = np.asarray(sizes[key])
        gaps = np.diff(t)
        np.unique(gaps // 1000, return_counts=True)
        np.flatnonzero(gaps >= 0.02e9)
        for window in flow_lib.WINDOWS:
            starts = np.arange(0, len(t), window)
            spans = np.maximum(np.diff(t[starts]), 1000) / 1e9
            sums = np.add.reduceat(s, starts)[:-1]
            values = sums / spans
            if len(values) >= flow_lib.MIN_WINDOWS:
                values.std() / values.mean()
    return packets, len(times)


def child(kind, path):
    work = {'ours': ours, 'ours_multiscale': ours_multiscale,
            'dpkt': dpkt_loop}[kind]
    cpu = time.process_time()
    wall = time.perf_counter()
    packets, flows = work(path)
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    print(json.dumps({'packets': packets, 'flows': flows, 'cpu_s': cpu,
                      'wall_s': wall,
                      'peak_rss_mib': pcap_records.peak_rss_mib(),
                      'packets_per_cpu_s': packets / cpu}))


def measure(kind, path):
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), '--child', kind, path],
        capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--packets', type=int, default=5000000)
    parser.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sizes = {'fifth': args.packets // 5, 'half': args.packets // 2,
             'full': args.packets}
    with tempfile.TemporaryDirectory() as work:
        paths = {}
        for index, (name, packets) in enumerate(sizes.items()):
            paths[name] = os.path.join(work, name + '.pcap')
            write_capture(paths[name], packets, seed=index)
        figures = {
            'capture_packets': args.packets,
            'capture_mib': os.path.getsize(paths['full']) / 2 ** 20,
            'ours': measure('ours', paths['full']),
            'ours_half': measure('ours', paths['half']),
            'ours_fifth': measure('ours', paths['fifth']),
            'ours_multiscale': measure('ours_multiscale', paths['full']),
            'dpkt': measure('dpkt', paths['full']),
            'dpkt_fifth': measure('dpkt', paths['fifth']),
        }
    ours_pps = figures['ours']['packets_per_cpu_s']
    figures['speedup_over_dpkt'] = round(
        ours_pps / figures['dpkt']['packets_per_cpu_s'], 1)
    figures['multiscale_cost'] = round(
        ours_pps / figures['ours_multiscale']['packets_per_cpu_s'], 2)
    for kind, runs in (('ours', ('ours_fifth', 'ours_half', 'ours')),
                       ('dpkt', ('dpkt_fifth', 'dpkt'))):
        x = [figures[r]['packets'] / 1e6 for r in runs]
        y = [figures[r]['peak_rss_mib'] for r in runs]
        figures[kind + '_mib_per_million_packets'] = round(
            float(np.polyfit(x, y, 1)[0]), 2)
    figures['targets'] = {'packets_per_cpu_s': 1e6, 'speedup_over_dpkt': 5,
                          'ours_mib_per_million_packets': 5}
    figures['met'] = {
        'packets_per_cpu_s': ours_pps >= 1e6,
        'speedup_over_dpkt': figures['speedup_over_dpkt'] >= 5,
        'memory_flat': figures['ours_mib_per_million_packets'] <= 5,
    }
    for name in ('ours', 'ours_half', 'ours_fifth', 'ours_multiscale',
                 'dpkt', 'dpkt_fifth'):
        run = figures[name]
        print('%-15s %9d packets  %6.2f s CPU  %10.0f packets/s  '
              'peak %7.1f MiB' % (name, run['packets'], run['cpu_s'],
                                  run['packets_per_cpu_s'],
                                  run['peak_rss_mib']))
    print(json.dumps(figures, sort_keys=True))


if __name__ == '__main__':
    main()
