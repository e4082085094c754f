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
"""A streaming reader for pcap and pcapng captures.

The file is read in chunks of a few MiB. Record boundaries are found with a
short Python loop (a record's length is in its own header), and every field
of every record in the chunk is then taken at once with numpy: timestamps,
the original (wire) length, the link-layer header, IPv4 or IPv6 addresses,
the transport protocol and TCP/UDP ports. Memory depends on the chunk size,
never on the file's.

Supported: pcap (microsecond and nanosecond, either byte order) and pcapng
(any byte order per section, per-interface timestamp resolution); link
types Ethernet (with 802.1Q and 802.1ad tags, two deep), Linux cooked
capture v1 (SLL) and v2 (SLL2), raw IP (101, 12, 14, 228, 229) and BSD
loopback (0). IPv6 extension headers are not walked: such packets keep
their addresses but get no ports.
"""

import dataclasses
import logging
import os
import struct

import numpy as np

from nova_stealth import exception

LOG = logging.getLogger(__name__)

CHUNK_BYTES = 8 << 20
#: Larger records than this are taken for corruption (pcap's own limit for
#: most link types is 256 KiB; GRO super-segments stay below it).
MAX_RECORD = 1 << 18

PCAP_MAGIC = {
    b'\xd4\xc3\xb2\xa1': ('<', 1000), b'\xa1\xb2\xc3\xd4': ('>', 1000),
    b'\x4d\x3c\xb2\xa1': ('<', 1), b'\xa1\xb2\x3c\x4d': ('>', 1),
}
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 1
PCAPNG_SPB = 3
PCAPNG_EPB = 6
PCAPNG_BOM = 0x1A2B3C4D
#: pcapng blocks longer than this are taken for corruption (Wireshark's
#: limit too); a packet's captured length is held to MAX_RECORD.
MAX_BLOCK = 16 << 20
#: The shortest block of each type: its fixed fields and both lengths.
PCAPNG_MIN_LENGTH = {PCAPNG_SHB: 28, PCAPNG_IDB: 20, PCAPNG_SPB: 16,
                     PCAPNG_EPB: 32}
#: The finest if_tsresol exponents that uint64 timestamps can use since
#: 1970 at all (10**19 and 2**63 units a second).
MAX_DECIMAL_TSRESOL = 19
MAX_BINARY_TSRESOL = 63
_PCAPNG_ORDERS = {struct.pack('<I', PCAPNG_BOM): '<',
                  struct.pack('>I', PCAPNG_BOM): '>'}
_PCAPNG_STRUCTS = {order: (struct.Struct(order + 'II'),
                           struct.Struct(order + 'IIII'))
                   for order in '<>'}

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = (101, 12, 14, 228, 229)
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = ((LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL,
                        LINKTYPE_LINUX_SLL2) + LINKTYPE_RAW)
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
IPPROTO_TCP = 6
IPPROTO_UDP = 17
V4_MAPPED = np.uint64(0xFFFF00000000)


@dataclasses.dataclass
class PacketBatch(object):
    """Packets of one chunk, one array per field, all of the same length.

    ``time_ns`` is int64 nanoseconds since the epoch, exact for both
    resolutions. Addresses are two uint64 halves; IPv4 is mapped
    (::ffff:a.b.c.d).
    ``version`` is 0 for a packet that is not IPv4 or IPv6; ports are 0
    where there are none.
    """

    time_ns: np.ndarray
    wire_len: np.ndarray
    version: np.ndarray
    proto: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    #: TCP flags (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); 0 elsewhere
    tcp_flags: np.ndarray = None
    #: transport payload bytes on the wire (from the IP length), and how
    #: many of them were captured, starting at ``payload_offset`` of
    #: ``buffer`` (the chunk's bytes, valid while the batch is)
    payload_len: np.ndarray = None
    payload_captured: np.ndarray = None
    payload_offset: np.ndarray = None
    buffer: np.ndarray = None

    def payload(self, index, limit):
        """Up to ``limit`` captured payload bytes of packet ``index``."""
        start = int(self.payload_offset[index])
        return bytes(self.buffer[start:start + min(
            int(self.payload_captured[index]), limit)])

    def __len__(self):
        return len(self.time_ns)


def _gather(buf, offsets, width, valid):
    """Big-endian unsigned integers of ``width`` bytes at each offset."""
    safe = np.where(valid, offsets, 0)
    value = np.zeros(len(offsets), dtype=np.uint64)
    for byte in range(width):
        value = (value << np.uint64(8)) | buf[safe + byte].astype(np.uint64)
    return np.where(valid, value, np.uint64(0))


def _network_offsets(buf, data, caplen, linktype, order):
    """Return (network header offset, ethertype) of each packet."""
    n = len(data)
    ethertype = np.zeros(n, dtype=np.uint64)
    l3 = data.copy()
    if linktype == LINKTYPE_ETHERNET:
        l3 = data + 14
        ethertype = _gather(buf, data + 12, 2, caplen >= 14)
        for _depth in range(2):
            tagged = np.isin(ethertype, VLAN_TPIDS) & (caplen >= l3 - data + 4)
            ethertype = np.where(tagged, _gather(buf, l3 + 2, 2, tagged),
                                 ethertype)
            l3 = np.where(tagged, l3 + 4, l3)
    elif linktype == LINKTYPE_LINUX_SLL:
        l3 = data + 16
        ethertype = _gather(buf, data + 14, 2, caplen >= 16)
    elif linktype == LINKTYPE_LINUX_SLL2:
        l3 = data + 20
        ethertype = _gather(buf, data, 2, caplen >= 20)
    elif linktype == LINKTYPE_NULL:
        # The address family is in the capturing host's byte order.
        l3 = data + 4
        family = _gather(buf, data, 4, caplen >= 4)
        swapped = ((family & np.uint64(0xFF)) << np.uint64(24) |
                   (family >> np.uint64(8) & np.uint64(0xFF)) << np.uint64(16)
                   | (family >> np.uint64(16) & np.uint64(0xFF)) <<
                   np.uint64(8) | family >> np.uint64(24))
        v6 = np.isin(family, (24, 28, 30)) | np.isin(swapped, (24, 28, 30))
        v4 = (family == 2) | (swapped == 2)
        ethertype = np.where(v4, ETH_P_IP, np.where(v6, ETH_P_IPV6, 0))
    else:
        nibble = _gather(buf, data, 1, caplen >= 1) >> np.uint64(4)
        ethertype = np.where(nibble == 4, ETH_P_IP,
                             np.where(nibble == 6, ETH_P_IPV6, 0))
    return l3, ethertype.astype(np.uint64)


def parse_packets(buf, data, caplen, wire_len, time_ns, linktype, order):
    """Parse the packets starting at ``data`` offsets of ``buf``."""
    l3, ethertype = _network_offsets(buf, data, caplen, linktype, order)
    end = data + caplen
    first = _gather(buf, l3, 1, l3 < end)
    v4 = (ethertype == ETH_P_IP) & (first >> np.uint64(4) == 4) & (
        l3 + 20 <= end)
    v6 = (ethertype == ETH_P_IPV6) & (first >> np.uint64(4) == 6) & (
        l3 + 40 <= end)
    ihl = (first & np.uint64(0xF)).astype(np.int64) * 4
    frag = _gather(buf, l3 + 6, 2, v4) & np.uint64(0x1FFF)
    proto = np.where(v4, _gather(buf, l3 + 9, 1, v4),
                     _gather(buf, l3 + 6, 1, v6))
    l4 = np.where(v4, l3 + ihl, l3 + 40)
    has_ports = ((v4 & (frag == 0) & (ihl >= 20)) | v6) & np.isin(
        proto, (IPPROTO_TCP, IPPROTO_UDP)) & (l4 + 4 <= end)
    src_hi = _gather(buf, l3 + 8, 8, v6)
    src_lo = np.where(v4, _gather(buf, l3 + 12, 4, v4) | V4_MAPPED,
                      _gather(buf, l3 + 16, 8, v6))
    dst_hi = _gather(buf, l3 + 24, 8, v6)
    dst_lo = np.where(v4, _gather(buf, l3 + 16, 4, v4) | V4_MAPPED,
                      _gather(buf, l3 + 32, 8, v6))
    version = np.where(v4, 4, np.where(v6, 6, 0)).astype(np.uint8)
    # The transport payload: its length from the IP header (v4: total
    # length less the header; v6: the payload length, extension headers
    # not walked), after the TCP header (data offset) or UDP's 8 bytes.
    tcp = has_ports & (proto == IPPROTO_TCP) & (l4 + 14 <= end)
    udp = has_ports & (proto == IPPROTO_UDP)
    ip_length = _gather(buf, np.where(v4, l3 + 2, l3 + 4), 2,
                        has_ports).astype(np.int64)
    ip_payload = np.where(v4, ip_length - ihl, ip_length)
    tcp_word = _gather(buf, l4 + 12, 2, tcp)
    header = np.where(tcp, (tcp_word >> np.uint64(12)).astype(np.int64) * 4,
                      8)
    payload_len = np.where(tcp | udp, np.maximum(ip_payload - header, 0), 0)
    payload_offset = l4 + header
    payload_captured = np.clip(end - payload_offset, 0, payload_len)
    return PacketBatch(
        time_ns=time_ns, wire_len=wire_len.astype(np.int64),
        version=version,
        proto=np.where(version > 0, proto, 0).astype(np.uint8),
        src_hi=src_hi, src_lo=src_lo, dst_hi=dst_hi, dst_lo=dst_lo,
        sport=_gather(buf, l4, 2, has_ports).astype(np.uint16),
        dport=_gather(buf, l4 + 2, 2, has_ports).astype(np.uint16),
        tcp_flags=(tcp_word & np.uint64(0xFF)).astype(np.uint8),
        payload_len=payload_len, payload_captured=payload_captured,
        payload_offset=payload_offset, buffer=buf)


def _u32(buf, offsets, order):
    raw = buf[offsets[:, None] + np.arange(4)]
    value = raw.astype(np.uint32)
    if order == '<':
        return (value[:, 0] | value[:, 1] << 8 | value[:, 2] << 16 |
                value[:, 3] << 24).astype(np.int64)
    return (value[:, 3] | value[:, 2] << 8 | value[:, 1] << 16 |
            value[:, 0] << 24).astype(np.int64)


class CaptureReader(object):
    """Read a pcap or pcapng file as a stream of :class:`PacketBatch`.

    :param path: the capture file
    :param tolerant: on a corrupt or truncated record, log a warning and
        end the stream with what was read, instead of raising
    :param chunk_bytes: how much of the file is parsed at a time
    :raises nova_stealth.exception.CaptureError: naming the file and the
        byte offset of the first record that cannot be read
    """

    def __init__(self, path, tolerant=False, chunk_bytes=CHUNK_BYTES):
        self.path = path
        self.tolerant = tolerant
        self.chunk_bytes = chunk_bytes
        self.size = os.path.getsize(path)
        self.bytes_read = 0
        self.packets = 0
        self.skipped = 0
        self.error = None

    def _fail(self, offset, reason):
        error = exception.CaptureError(path=self.path, offset=offset,
                                       reason=reason)
        if not self.tolerant:
            raise error
        LOG.warning('%s; keeping the %d packets read before it', error,
                    self.packets)
        self.error = str(error)

    def __iter__(self):
        with open(self.path, 'rb') as capture:
            head = capture.read(4)
            capture.seek(0)
            if head in PCAP_MAGIC:
                yield from self._pcap(capture)
            elif len(head) == 4 and struct.unpack('<I', head)[0] == (
                    PCAPNG_SHB):
                yield from self._pcapng(capture)
            else:
                self._fail(0, 'not a pcap or pcapng file (magic %s)'
                           % head.hex())

    def _chunks(self, capture, start):
        """Yield (file offset of buffer start, buffer) with carry-over."""
        carry = b''
        base = start
        capture.seek(start)
        while True:
            data = capture.read(self.chunk_bytes)
            if not data:
                if carry:
                    yield base, carry, True
                return
            buffer = carry + data
            consumed = yield base, buffer, False
            carry = buffer[consumed:]
            base += consumed
            self.bytes_read = base

    def _walk(self, capture, start, scan, unit):
        """Run ``scan`` over the file's chunks and yield its batches.

        ``scan(buffer, base)`` returns (batches, end of the last whole
        record, (offset, reason) of a bad record or None); the bytes after
        the last whole record are carried into the next chunk.
        """
        chunks = self._chunks(capture, start)
        step = next(chunks, None)
        while step is not None:
            base, buffer, last = step
            batches, position, bad = scan(buffer, base)
            yield from batches
            if bad:
                self._fail(*bad)
                return
            if last:
                if position < len(buffer):
                    self._fail(base + position, 'truncated ' + unit)
                return
            try:
                step = chunks.send(position)
            except StopIteration:
                return

    def _pcap(self, capture):
        header = capture.read(24)
        if len(header) < 24:
            self._fail(0, 'truncated pcap file header')
            return
        order, ns_per_unit = PCAP_MAGIC[header[:4]]
        snaplen, network = struct.unpack(order + 'II', header[16:24])
        linktype = network & 0xFFFF
        if linktype not in SUPPORTED_LINKTYPES:
            self._fail(20, 'unsupported link type %d' % linktype)
            return
        record = struct.Struct(order + 'II')

        def scan(buffer, base):
            offsets = []
            position, end = 0, len(buffer)
            bad = None
            while position + 16 <= end:
                caplen, wirelen = record.unpack_from(buffer, position + 8)
                if caplen > MAX_RECORD or wirelen < caplen:
                    bad = (base + position,
                           'corrupt record header (captured %d, original %d)'
                           % (caplen, wirelen))
                    break
                if position + 16 + caplen > end:
                    break
                offsets.append(position)
                position += 16 + caplen
            batches = ([self._pcap_batch(buffer, offsets, order, ns_per_unit,
                                         linktype)] if offsets else [])
            return batches, position, bad

        yield from self._walk(capture, 24, scan, 'record')

    def _pcap_batch(self, buffer, offsets, order, ns_per_unit, linktype):
        buf = np.frombuffer(buffer, dtype=np.uint8)
        starts = np.asarray(offsets, dtype=np.int64)
        seconds = _u32(buf, starts, order)
        fraction = _u32(buf, starts + 4, order)
        caplen = _u32(buf, starts + 8, order)
        wirelen = _u32(buf, starts + 12, order)
        time_ns = seconds * 1000000000 + fraction * ns_per_unit
        self.packets += len(starts)
        return parse_packets(buf, starts + 16, caplen, wirelen, time_ns,
                             linktype, order)

    def _pcapng(self, capture):
        section = {'order': '<', 'interfaces': []}

        def scan(buffer, base):
            order = section['order']
            interfaces = section['interfaces']
            head, fields = _PCAPNG_STRUCTS[order]
            position, end = 0, len(buffer)
            packets, batches = [], []
            bad = None
            while position + 12 <= end:
                block_type, length = head.unpack_from(buffer, position)
                if block_type == PCAPNG_SHB:
                    # The type reads the same in either order; the length
                    # is in the order of the section it opens.
                    block_order = _PCAPNG_ORDERS.get(
                        bytes(buffer[position + 8:position + 12]))
                    if block_order is None:
                        bad = (base + position, 'bad byte-order magic')
                        break
                    length = struct.unpack_from(block_order + 'I', buffer,
                                                position + 4)[0]
                else:
                    block_order = order
                reason = _block_length_error(block_type, length)
                if reason:
                    bad = (base + position, reason)
                    break
                if position + length > end:
                    break
                trailer = struct.unpack_from(block_order + 'I', buffer,
                                             position + length - 4)[0]
                if trailer != length:
                    bad = (base + position, 'trailing block length %d does '
                           'not match the leading %d' % (trailer, length))
                    break
                if block_type == PCAPNG_EPB:
                    interface, _high, _low, caplen = fields.unpack_from(
                        buffer, position + 8)
                    if interface >= len(interfaces):
                        bad = (base + position,
                               'packet of an undescribed interface')
                        break
                    if caplen > length - 32 or caplen > MAX_RECORD:
                        bad = (base + position, 'captured length %d overruns '
                               'its block of %d bytes' % (caplen, length))
                        break
                    packets.append(position)
                elif block_type == PCAPNG_SHB:
                    # A new section: its interfaces and byte order apply
                    # only to the packets after it.
                    if packets:
                        batches += self._pcapng_batches(buffer, packets,
                                                        order, interfaces)
                        packets = []
                    order, interfaces = block_order, []
                    head, fields = _PCAPNG_STRUCTS[order]
                elif block_type == PCAPNG_IDB:
                    interface, reason = _interface(buffer, position, length,
                                                   order)
                    if reason:
                        bad = (base + position, reason)
                        break
                    interfaces = interfaces + [interface]
                elif block_type == PCAPNG_SPB:
                    self.skipped += 1
                position += length
            section['order'], section['interfaces'] = order, interfaces
            if packets:
                batches += self._pcapng_batches(buffer, packets, order,
                                                interfaces)
            return batches, position, bad

        yield from self._walk(capture, 0, scan, 'block')

    def _pcapng_batches(self, buffer, packets, order, interfaces):
        buf = np.frombuffer(buffer, dtype=np.uint8)
        starts = np.asarray(packets, dtype=np.int64)
        interface = _u32(buf, starts + 8, order)
        high = _u32(buf, starts + 12, order).astype(np.uint64)
        low = _u32(buf, starts + 16, order).astype(np.uint64)
        caplen = _u32(buf, starts + 20, order)
        wirelen = _u32(buf, starts + 24, order)
        units = (high << np.uint64(32)) | low
        batches = []
        for index, (linktype, units_per_second) in enumerate(interfaces):
            mine = interface == index
            if not mine.any():
                continue
            if linktype not in SUPPORTED_LINKTYPES:
                self.skipped += int(mine.sum())
                continue
            self.packets += int(mine.sum())
            batches.append(parse_packets(
                buf, starts[mine] + 28, caplen[mine], wirelen[mine],
                units_to_ns(units[mine], units_per_second), linktype,
                order))
        return batches


def units_to_ns(units, units_per_second):
    """Nanoseconds (int64) of uint64 timestamps in 1/units_per_second s.

    Exact for decimal resolutions; binary ones finer than 2**-34 s are
    first rounded down to 2**-34 s, so that no product leaves 64 bits.
    """
    units = np.asarray(units, dtype=np.uint64)
    billion = 10 ** 9
    if billion % units_per_second == 0:
        ns = units * np.uint64(billion // units_per_second)
    elif units_per_second % billion == 0:
        ns = units // np.uint64(units_per_second // billion)
    else:
        shift = max(units_per_second.bit_length() - 35, 0)
        units = units >> np.uint64(shift)
        per_second = np.uint64(units_per_second >> shift)
        ns = (units // per_second * np.uint64(billion) +
              units % per_second * np.uint64(billion) // per_second)
    return ns.astype(np.int64)


def _block_length_error(block_type, length):
    """Why a pcapng block's leading length cannot be right, or None."""
    if length % 4 or length < PCAPNG_MIN_LENGTH.get(block_type, 12):
        return 'corrupt block length %d' % length
    if length > MAX_BLOCK:
        return 'block length %d is over the %d bytes allowed' % (
            length, MAX_BLOCK)
    return None


def _interface(buffer, position, length, order):
    """((linktype, units per second), None) of an IDB, or (None, reason)."""
    linktype = struct.unpack_from(order + 'H', buffer, position + 8)[0]
    units_per_second = 1000000
    option, options_end = position + 16, position + length - 4
    while option + 4 <= options_end:
        code, size = struct.unpack_from(order + 'HH', buffer, option)
        if code == 0:
            break
        if option + 4 + size > options_end:
            return None, 'interface option %d overruns its block' % code
        if code == 9 and size >= 1:
            resolution = buffer[option + 4]
            exponent = resolution & 0x7F
            binary = bool(resolution & 0x80)
            if exponent > (MAX_BINARY_TSRESOL if binary
                           else MAX_DECIMAL_TSRESOL):
                return None, ('timestamp resolution %d^-%d (if_tsresol '
                              '0x%02x) is finer than 64-bit timestamps can '
                              'count since 1970' % (2 if binary else 10,
                                                    exponent, resolution))
            units_per_second = (2 if binary else 10) ** exponent
        option += 4 + ((size + 3) & ~3)
    return (linktype, units_per_second), None
