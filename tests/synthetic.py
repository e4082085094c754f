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
"""Crafted flows written into a pcap: headers only, wire lengths kept.

Each packet is an Ethernet + IPv4 + TCP header (54 bytes captured) whose
original length is the packet's wire length, as tcpdump -s 54 would save
it; the reader gets them through the same path as any capture.
"""

import math
import struct

import numpy as np

MSS_WIRE = 1514


def _header(src, dst, sport, dport, length):
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, length - 14, 0, 0x4000, 64,
                     6, 0, bytes(src), bytes(dst))
    tcp = struct.pack('!HHIIBBHHH', sport, dport, 0, 0, 5 << 4, 0x10,
                      65535, 0, 0)
    return b'\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00' + ip + tcp


def constant_with_jitter(rng, rate_bps, seconds, jitter=0.3, tick=0.01,
                         start=0.0):
    """Packet times (ns) and sizes of a flow paced at a jittered rate.

    Every ``tick`` the flow sends rate x J for that tick, J log-normal with
    mean 1 and log-deviation ``jitter``, independent from tick to tick, in
    full-size packets spread over the tick: what a shaper holding a
    constant target with random noise on it emits.
    """
    times = []
    ticks = int(seconds / tick)
    credit = 0.0
    for number in range(ticks):
        credit += rate_bps / 8 * tick * math.exp(
            rng.normal(-jitter * jitter / 2, jitter))
        count = int(credit // MSS_WIRE)
        credit -= count * MSS_WIRE
        offsets = (np.arange(count) + rng.uniform(0, 1, count)) / max(
            count, 1) * tick
        times.append(start + number * tick + offsets)
    times = np.concatenate(times)
    return (np.round(times * 1e9).astype(np.int64),
            np.full(len(times), MSS_WIRE, np.int64))


def qemu_native(rng, rate_bps, seconds, line_bps=100e6, start=0.0):
    """QEMU's limiter: a burst of a tenth of the rate every 100 ms."""
    times = []
    per_burst = int(rate_bps / 8 / 10 // MSS_WIRE)
    gap = MSS_WIRE * 8 / line_bps
    for number in range(int(seconds * 10)):
        begin = start + number * 0.1 + rng.uniform(0, 0.002)
        times.append(begin + np.arange(per_burst) * gap *
                     rng.uniform(0.9, 1.1, per_burst))
    times = np.concatenate(times)
    return (np.round(times * 1e9).astype(np.int64),
            np.full(len(times), MSS_WIRE, np.int64))


def write(path, flows):
    """Write flows [(times_ns, sizes)] into one pcap, each its own port.

    :returns: (src, sport, dst, dport) of each flow
    """
    record = np.dtype([('seconds', '<u4'), ('nanos', '<u4'),
                       ('caplen', '<u4'), ('wirelen', '<u4'),
                       ('data', 'V54')])
    parts, endpoints = [], []
    for number, (times, sizes) in enumerate(flows):
        sport, dport = 40000 + number, 49152 + number
        endpoints.append(('198.18.1.1', sport, '198.18.2.1', dport))
        rows = np.zeros(len(times), record)
        rows['seconds'] = times // 10 ** 9
        rows['nanos'] = times % 10 ** 9
        rows['caplen'] = 54
        rows['wirelen'] = sizes
        # One header per wire length in use: the IP total length differs.
        for size in np.unique(sizes).tolist():
            rows['data'][sizes == size] = np.void(_header(
                [198, 18, 1, 1], [198, 18, 2, 1], sport, dport, size))
        parts.append((times, rows))
    times = np.concatenate([t for t, _ in parts])
    rows = np.concatenate([r for _, r in parts])[np.argsort(times,
                                                            kind='stable')]
    with open(path, 'wb') as out:
        out.write(struct.pack('<IHHiIII', 0xA1B23C4D, 2, 4, 0, 0, 54, 1))
        out.write(rows.tobytes())
    return endpoints
