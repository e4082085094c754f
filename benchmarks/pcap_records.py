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
"""What the audit benchmarks share: pcap records built with numpy.

A benchmark's capture is millions of copies of one Ethernet/IPv4/TCP
snapshot (:func:`tcp_snapshot`) whose addresses and ports the benchmark
then sets per record, after a 16-byte record header each
(:func:`records`), behind the pcap file header (:func:`file_header`).
"""

import numpy as np

#: The original length of every frame: a full-size Ethernet frame.
WIRE_LEN = 1514


def file_header(snap):
    """The pcap file header: microsecond times, little-endian, Ethernet."""
    return np.array([0xA1B2C3D4, 0x00040002, 0, 0, snap, 1],
                    dtype='<u4').tobytes()


def tcp_snapshot(snap, src, dst):
    """The first ``snap`` bytes of a full-size Ethernet/IPv4/TCP frame.

    :param src: the source address's first bytes (the rest are zero)
    :param dst: the destination address, four bytes
    """
    header = np.zeros(snap, dtype=np.uint8)
    header[12:14] = (0x08, 0x00)
    header[14] = 0x45
    header[16:18] = divmod(WIRE_LEN - 14, 256)
    header[22:24] = (64, 6)
    header[26:26 + len(src)] = src
    header[30:34] = dst
    header[36:38] = (0xEE, 0x48)
    header[46] = 0x50
    return header


def records(stamps_us, snapshot):
    """One pcap record per time (microseconds): record header + snapshot.

    :returns: a (len(stamps_us), 16 + len(snapshot)) uint8 array whose
        packet bytes the caller may change before writing it
    """
    stamps_us = np.asarray(stamps_us, np.int64)
    found = np.zeros((len(stamps_us), 16 + len(snapshot)), dtype=np.uint8)
    head = found[:, :16].view('<u4')
    head[:, 0] = stamps_us // 10 ** 6
    head[:, 1] = stamps_us % 10 ** 6
    head[:, 2] = len(snapshot)
    head[:, 3] = WIRE_LEN
    found[:, 16:] = snapshot
    return found


def peak_rss_mib():
    """This process's peak resident memory (VmHWM).

    Not getrusage: ru_maxrss survives execve, so a child would report the
    parent's peak from writing the capture.
    """
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError('no VmHWM in /proc/self/status')
