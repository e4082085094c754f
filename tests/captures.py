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
"""Re-encode real captures in other formats, for the reader's tests.

Written apart from the reader, from the format specifications: pcap
(tcpdump's savefile format) and pcapng (draft-ietf-opsawg-pcapng).
"""

import struct


def pcap_records(path):
    """Return (byte order, linktype, snaplen, ns per unit, records)."""
    with open(path, 'rb') as capture:
        data = capture.read()
    magic = data[:4]
    order = '<' if magic in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1') else '>'
    nano = magic in (b'\x4d\x3c\xb2\xa1', b'\xa1\xb2\x3c\x4d')
    snaplen, linktype = struct.unpack(order + 'II', data[16:24])
    records = []
    position = 24
    while position + 16 <= len(data):
        seconds, fraction, caplen, wirelen = struct.unpack(
            order + 'IIII', data[position:position + 16])
        records.append((seconds, fraction, wirelen,
                        data[position + 16:position + 16 + caplen]))
        position += 16 + caplen
    return order, linktype, snaplen, 1 if nano else 1000, records


def write_pcap(path, linktype, snaplen, records, order='<', nano=False):
    """Write a pcap file; records are (seconds, fraction, wirelen, data)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    with open(path, 'wb') as out:
        out.write(struct.pack(order + 'IHHiIII', magic, 2, 4, 0, 0, snaplen,
                              linktype))
        for seconds, fraction, wirelen, data in records:
            out.write(struct.pack(order + 'IIII', seconds, fraction,
                                  len(data), wirelen))
            out.write(data)


def _block(order, block_type, body):
    length = 12 + len(body) + (-len(body) % 4)
    return (struct.pack(order + 'II', block_type, length) + body +
            b'\0' * (-len(body) % 4) + struct.pack(order + 'I', length))


def pcap_to_pcapng(source, path, order='<', tsresol=6):
    """Re-encode a pcap as pcapng with the given byte order and resolution.

    tsresol is the exponent of 10 of the timestamp unit (6: microseconds,
    9: nanoseconds), as the if_tsresol option carries it.
    """
    _order, linktype, snaplen, ns_per_unit, records = pcap_records(source)
    units_per_second = 10 ** tsresol
    blocks = [_block(order, 0x0A0D0D0A, struct.pack(
        order + 'IHHq', 0x1A2B3C4D, 1, 0, -1))]
    option = struct.pack(order + 'HHB', 9, 1, tsresol) + b'\0' * 3
    blocks.append(_block(order, 1, struct.pack(order + 'HHI', linktype, 0,
                                               snaplen) + option +
                         struct.pack(order + 'HH', 0, 0)))
    for seconds, fraction, wirelen, data in records:
        nanoseconds = seconds * 10 ** 9 + fraction * ns_per_unit
        units = nanoseconds * units_per_second // 10 ** 9
        blocks.append(_block(order, 6, struct.pack(
            order + 'IIIII', 0, units >> 32, units & 0xFFFFFFFF, len(data),
            wirelen) + data))
    with open(path, 'wb') as out:
        out.write(b''.join(blocks))


def pcap_swap_order(source, path):
    """Re-encode a pcap with the other byte order."""
    order, linktype, snaplen, ns_per_unit, records = pcap_records(source)
    write_pcap(path, linktype, snaplen, records,
               order='>' if order == '<' else '<', nano=ns_per_unit == 1)


def pcapng_block(order, block_type, body, length=None, trailer=None):
    """One pcapng block; ``length``/``trailer`` override the two lengths."""
    padded = body + b'\0' * (-len(body) % 4)
    real = 12 + len(padded)
    return (struct.pack(order + 'II', block_type,
                        real if length is None else length) + padded +
            struct.pack(order + 'I', (real if length is None else length)
                        if trailer is None else trailer))


def pcapng_shb(order='<'):
    """A section header block (version 1.0, section length unknown)."""
    return pcapng_block(order, 0x0A0D0D0A, struct.pack(
        order + 'IHHq', 0x1A2B3C4D, 1, 0, -1))


def pcapng_idb(order='<', linktype=101, tsresol=None, snaplen=0):
    """An interface description block, with if_tsresol if given."""
    options = b''
    if tsresol is not None:
        options = struct.pack(order + 'HHB', 9, 1, tsresol) + b'\0' * 3
        options += struct.pack(order + 'HH', 0, 0)
    return pcapng_block(order, 1, struct.pack(order + 'HHI', linktype, 0,
                                              snaplen) + options)


def pcapng_epb(order, units, data, interface=0, caplen=None, wirelen=None,
               **lengths):
    """An enhanced packet block; ``caplen`` may lie about ``data``."""
    return pcapng_block(order, 6, struct.pack(
        order + 'IIIII', interface, units >> 32, units & 0xFFFFFFFF,
        len(data) if caplen is None else caplen,
        len(data) if wirelen is None else wirelen) + data, **lengths)


def ipv4_tcp(sport=40000, dport=61000, payload=b'', src=(198, 18, 0, 1),
             dst=(198, 18, 0, 2), flags=0x18):
    """A raw IPv4 + TCP packet (no checksums: the reader ignores them)."""
    total = 40 + len(payload)
    ip = struct.pack('!BBHHHBBH4B4B', 0x45, 0, total, 0, 0, 64, 6, 0,
                     *src, *dst)
    tcp = struct.pack('!HHIIBBHHH', sport, dport, 1, 0, 0x50, flags, 65535,
                      0, 0)
    return ip + tcp + payload


def ipv6_tcp(src, dst, sport=40000, dport=61000, payload=b'', flags=0x18):
    """A raw IPv6 + TCP packet; addresses are 16-byte strings."""
    tcp = struct.pack('!HHIIBBHHH', sport, dport, 1, 0, 0x50, flags, 65535,
                      0, 0)
    ip = struct.pack('!IHBB', 0x60000000, 20 + len(payload), 6, 64)
    return ip + src + dst + tcp + payload


def write_raw_pcap(path, packets):
    """A raw-IP (link type 101) pcap of (time in ns, packet) pairs."""
    write_pcap(path, 101, 65535, [
        (ns // 10 ** 9, ns % 10 ** 9, len(data), data)
        for ns, data in packets], nano=True)
