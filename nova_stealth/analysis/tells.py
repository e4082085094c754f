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
"""What an on-path observer reads besides timing: the tells of a flow.

Per TCP connection, while the capture streams by:

``payload_prefix``
    the first bytes of each direction's first data packet, named when they
    are a known plaintext magic (QEMU's migration stream ``QEVM``, the
    chaff's old ``NSC1`` hello, TLS, SSH, HTTP), else shown in hex;
``tls_client_hello``
    the JA4 fingerprint of the client's ClientHello (see
    :mod:`nova_stealth.analysis.tls_hello`); ``~`` marks one cut short;
``ending``
    ``rst`` if either side sent a reset, else ``fin``, else ``none``;
``server_port`` and ``port_range``
    the port the client connected to (the SYN's destination; without a
    SYN, the lower port) and its class: libvirt's migration ports
    49152-49215, well-known (below 1024), Linux's ephemeral range
    32768-60999, the rest of IANA's dynamic range, or registered;
``co_timing``
    how many other connections between the same two hosts began in the
    :data:`CO_TIMING_S` seconds before this one.

Only connections are tracked, not packets: per batch the packets are
matched to known connections with numpy (one sorted array of connection
digests), and Python runs once per new connection and per handshake, reset
and first-data packet. Connections silent for the idle timeout with fewer
packets than ``min_packets`` are forgotten, as the flow table forgets
their flows. A 64-bit digest collision (crafted) merges two connections'
tells; it cannot crash the audit.
"""

import collections

import numpy as np

from nova_stealth.analysis import capture
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import tls_hello

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
#: Payload bytes kept of each direction's first data packet.
PREFIX_BYTES = 16
#: Bytes of a ClientHello read at most (post-quantum key shares make them
#: about 1.8 KB, two segments).
HELLO_BYTES = 8192
#: Bytes of a prefix shown when it is no known magic.
SHOWN_BYTES = 4
CO_TIMING_S = 30.0
MAGICS = ((b'QEVM', 'qemu-migration (QEVM)'),
          (b'NSC1', 'nova-stealth chaff hello (NSC1)'),
          (b'\x16\x03', 'tls-handshake'), (b'\x17\x03', 'tls-data'),
          (b'SSH-', 'ssh'), (b'GET ', 'http'), (b'POST', 'http'),
          (b'HTTP', 'http'), (b'PUT ', 'http'))
LIBVIRT_PORTS = (49152, 49215)
LINUX_EPHEMERAL = (32768, 60999)
_NOTHING = (None, None)
#: The battery's operating point: at most 2% of background flows flagged.
OPERATING_FPR = 0.02
TELLS = ('payload_prefix', 'tls_client_hello', 'ending', 'port_range',
         'server_port', 'co_timing')
_MIX = [np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9,
                               0x94D049BB133111EB, 0xD6E8FEB86659FD93,
                               0xA0761D6478BD642F)]


def port_range(port):
    """The class of a server port, as an observer would name it."""
    if LIBVIRT_PORTS[0] <= port <= LIBVIRT_PORTS[1]:
        return 'libvirt migration 49152-49215'
    if port < 1024:
        return 'well-known 0-1023'
    if LINUX_EPHEMERAL[0] <= port <= LINUX_EPHEMERAL[1]:
        return 'linux ephemeral 32768-60999'
    if port >= 49152:
        return 'dynamic 49216-65535'
    return 'registered 1024-32767'


def prefix_name(prefix, captured_all):
    """A payload prefix's name: a known magic, or its first bytes in hex."""
    if prefix is None:
        return 'no data'
    for magic, name in MAGICS:
        if prefix.startswith(magic):
            return name
    if not prefix:
        return 'not captured (snap length)'
    return 'hex %s' % prefix[:SHOWN_BYTES].hex() + (
        '' if len(prefix) >= SHOWN_BYTES or captured_all else '~')


def co_timing_bucket(count):
    """Connections in the same host pair just before: 0, 1, 2-3, 4+."""
    if count <= 1:
        return str(count)
    return '2-3' if count <= 3 else '4+'


class _Connection(object):
    """What is known of one TCP connection (both directions)."""

    __slots__ = ('ports', 'first_ns', 'client', 'flags', 'prefix',
                 'complete', 'hello', 'preceding')

    def __init__(self, ports, first_ns, preceding):
        #: port of endpoint a << 16 | port of endpoint b
        self.ports = ports
        self.first_ns = first_ns
        #: 0 if endpoint a is the client, 1 if b, None if no SYN was seen
        self.client = None
        self.flags = 0
        # Shared empty pairs until there is something to keep: most
        # connections never need their own (memory per connection).
        #: first data bytes per direction (0: from a, 1: from b)
        self.prefix = _NOTHING
        #: whether each direction's first data packet was captured whole
        self.complete = _NOTHING
        #: a :class:`tls_hello.ClientHello` per direction, if one began it
        self.hello = _NOTHING
        self.preceding = preceding

    def keep(self, what, side, value):
        """Set one direction's ``prefix``, ``complete`` or ``hello``."""
        pair = list(getattr(self, what))
        pair[side] = value
        setattr(self, what, tuple(pair))

    def server_port(self):
        ports = (self.ports >> 16, self.ports & 0xFFFF)
        if self.client is None:
            return min(ports)
        return ports[1 - self.client]

    def tells(self, direction):
        """The tells of the flow from endpoint ``direction`` (0: a)."""
        # The client's hello; without a SYN, whichever side sent one.
        hello = (self.hello[self.client] if self.client is not None
                 else self.hello[0] or self.hello[1])
        ending = ('rst' if self.flags & RST else
                  'fin' if self.flags & FIN else 'none')
        port = self.server_port()
        return {
            'payload_prefix': prefix_name(self.prefix[direction],
                                          self.complete[direction]),
            'tls_client_hello': hello.ja4() if hello else 'none',
            'tls_fields': hello.as_dict() if hello else None,
            'ending': ending, 'server_port': str(port),
            'port_range': port_range(port),
            'co_timing': co_timing_bucket(self.preceding),
            'co_timing_count': self.preceding,
        }


class TellTable(object):
    """Accumulates packet batches into the connections' tells.

    :param options: :class:`flows.FlowOptions` (idle timeout, minimum
        packets: the same eviction as the flow table's)
    """

    def __init__(self, options):
        self.options = options
        self.digests = np.zeros(0, dtype=np.uint64)
        self.last_ns = np.zeros(0, dtype=np.int64)
        self.packets = np.zeros(0, dtype=np.int64)
        #: digest -> :class:`_Connection`
        self.connections = {}
        #: addresses a and b as one int -> recent connection starts
        self.pairs = {}
        #: (digest, direction) -> the first segments of a ClientHello
        self.assembling = {}
        #: (JA4, ALPN) -> one parsed ClientHello that connections share
        self.hellos = {}
        self.evicted = 0
        self._sweeps = flow_lib.SweepClock(options.idle_timeout)
        self._window_ns = int(CO_TIMING_S * 1e9)

    def add(self, batch):
        """Fold one :class:`capture.PacketBatch` into the connections."""
        if batch.tcp_flags is None:
            raise ValueError('the tells need batches with TCP flags and '
                             'payload offsets (capture.parse_packets)')
        tcp = np.flatnonzero((batch.version > 0) &
                             (batch.proto == capture.IPPROTO_TCP))
        if not len(tcp):
            return
        src = [batch.src_hi[tcp], batch.src_lo[tcp],
               batch.sport[tcp].astype(np.uint64)]
        dst = [batch.dst_hi[tcp], batch.dst_lo[tcp],
               batch.dport[tcp].astype(np.uint64)]
        # Endpoint a is the lower (address, port): a connection's two
        # directions get one digest.
        a_first = (src[0] < dst[0]) | (src[0] == dst[0]) & (
            (src[1] < dst[1]) | (src[1] == dst[1]) & (src[2] <= dst[2]))
        digest = np.zeros(len(tcp), dtype=np.uint64)
        for column, factor in zip(
                [np.where(a_first, s, d) for s, d in zip(src, dst)] +
                [np.where(a_first, d, s) for s, d in zip(src, dst)],
                _MIX + _MIX[:1]):
            digest = (digest ^ column) * factor
            digest ^= digest >> np.uint64(31)
        times = batch.time_ns[tcp]
        unique, first, inverse, counts = np.unique(
            digest, return_index=True, return_inverse=True,
            return_counts=True)
        last = np.zeros(len(unique), dtype=np.int64)
        np.maximum.at(last, inverse, times)
        position = np.searchsorted(self.digests, unique)
        known = position < len(self.digests)
        known[known] = self.digests[position[known]] == unique[known]
        fresh = np.flatnonzero(~known)
        for index in fresh[np.argsort(first[fresh], kind='stable')].tolist():
            packet = int(tcp[first[index]])
            self._start(batch, packet, int(unique[index]),
                        bool(a_first[first[index]]))
        if len(fresh):
            merged = np.concatenate([self.digests, unique[fresh]])
            order = np.argsort(merged, kind='stable')
            self.digests = merged[order]
            self.last_ns = np.concatenate([self.last_ns, last[fresh]])[order]
            self.packets = np.concatenate([self.packets,
                                           counts[fresh]])[order]
            position = np.searchsorted(self.digests, unique)
        if known.any():
            slots = position[known]
            self.last_ns[slots] = np.maximum(self.last_ns[slots],
                                             last[known])
            self.packets[slots] += counts[known]
        self._events(batch, tcp, digest, a_first)
        self._sweep(int(np.median(times)))

    def _start(self, batch, packet, digest, a_first):
        ends = [(int(batch.src_hi[packet]), int(batch.src_lo[packet]),
                 int(batch.sport[packet])),
                (int(batch.dst_hi[packet]), int(batch.dst_lo[packet]),
                 int(batch.dport[packet]))]
        if not a_first:
            ends.reverse()
        now = int(batch.time_ns[packet])
        pair = (ends[0][0] << 192 | ends[0][1] << 128 | ends[1][0] << 64 |
                ends[1][1])
        recent = [start for start in self.pairs.get(pair, ())
                  if now - self._window_ns <= start]
        preceding = sum(1 for start in recent if start < now)
        recent.append(now)
        self.pairs[pair] = recent
        self.connections[digest] = _Connection(
            ends[0][2] << 16 | ends[1][2], now, preceding)

    def _events(self, batch, tcp, digest, a_first):
        """Handshakes, endings and each direction's first data."""
        flags = batch.tcp_flags[tcp]
        direction = (~a_first).astype(np.int64)
        for index in np.flatnonzero(flags & (SYN | FIN | RST)).tolist():
            connection = self.connections.get(int(digest[index]))
            if connection is None:
                continue
            value = int(flags[index])
            connection.flags |= value
            if value & SYN and connection.client is None:
                sender = int(direction[index])
                connection.client = sender if not value & ACK else (
                    1 - sender)
        data = np.flatnonzero(batch.payload_len[tcp] > 0)
        if not len(data):
            return
        # The first data packet of each (connection, direction) here, and
        # those that continue a ClientHello spread over segments.
        keys = digest[data] ^ direction[data].astype(np.uint64)
        _, first = np.unique(keys, return_index=True)
        chosen = data[first]
        if self.assembling:
            waiting = np.fromiter((d for d, _side in self.assembling),
                                  dtype=np.uint64)
            chosen = np.union1d(chosen, data[np.isin(digest[data],
                                                     waiting)])
        before = set(self.assembling)
        self._data(batch, tcp, digest, direction, np.sort(chosen))
        started = set(self.assembling) - before
        if started:
            # Hellos begun in this batch go on in its later packets.
            begun = np.fromiter((d for d, _side in started), dtype=np.uint64)
            later = data[np.isin(digest[data], begun)]
            self._data(batch, tcp, digest, direction,
                       np.setdiff1d(later, chosen))

    def _data(self, batch, tcp, digest, direction, indices):
        for index in indices.tolist():
            connection = self.connections.get(int(digest[index]))
            if connection is None:
                continue
            side = int(direction[index])
            packet = int(tcp[index])
            whole = bool(batch.payload_captured[packet] >=
                         batch.payload_len[packet])
            if connection.prefix[side] is None:
                self._first_data(connection, int(digest[index]), side,
                                 batch.payload(packet, HELLO_BYTES), whole)
            elif (int(digest[index]), side) in self.assembling:
                self._more_data(connection, int(digest[index]), side,
                                batch.payload(packet, HELLO_BYTES), whole)

    def _first_data(self, connection, digest, side, payload, whole):
        connection.keep('prefix', side, payload[:PREFIX_BYTES])
        connection.keep('complete', side, whole)
        if payload[:1] != b'\x16' or len(payload) < 6 or (
                payload[5] != tls_hello.HANDSHAKE_CLIENT_HELLO):
            return
        wanted = 5 + int.from_bytes(payload[3:5], 'big')
        if len(payload) < min(wanted, HELLO_BYTES) and whole:
            self.assembling[(digest, side)] = payload
        else:
            self._hello(connection, side, payload)

    def _more_data(self, connection, digest, side, payload, whole):
        """Add the next segment of a ClientHello.

        In order only: a hello retransmitted or reordered parses as cut.
        """
        held = self.assembling[(digest, side)] + payload
        wanted = 5 + int.from_bytes(held[3:5], 'big')
        if len(held) >= min(wanted, HELLO_BYTES) or not whole:
            del self.assembling[(digest, side)]
            self._hello(connection, side, held[:HELLO_BYTES])
        else:
            self.assembling[(digest, side)] = held

    def _hello(self, connection, side, data):
        """Parse a ClientHello once; connections share equal ones."""
        hello = tls_hello.parse_client_hello(data)
        if hello is None:
            return
        key = (hello.ja4(), tuple(hello.alpn))
        connection.keep('hello', side, self.hellos.setdefault(key, hello))

    def _sweep(self, now):
        """Forget connections that can no longer make a flow qualify."""
        horizon = self._sweeps.due(now)
        if horizon is None:
            return
        stale = (self.last_ns < horizon) & (
            self.packets < self.options.min_packets)
        for digest in self.digests[stale].tolist():
            self.connections.pop(digest, None)
            for side in (0, 1):
                self.assembling.pop((digest, side), None)
        self.evicted += int(stale.sum())
        self.digests = self.digests[~stale]
        self.last_ns = self.last_ns[~stale]
        self.packets = self.packets[~stale]
        recent_ns = now - self._window_ns
        for pair in [p for p, recent in self.pairs.items()
                     if not recent or recent[-1] < recent_ns]:
            del self.pairs[pair]

    def tells_of(self, key):
        """The tells of a :class:`flows.FlowKey`'s flow, or None."""
        if key.proto != 'tcp':
            return None
        src = flow_lib.address_halves(key.src) + (key.sport,)
        dst = flow_lib.address_halves(key.dst) + (key.dport,)
        a_first = src <= dst
        ends = [src, dst] if a_first else [dst, src]
        digest = np.zeros(1, dtype=np.uint64)
        for column, factor in zip(ends[0] + ends[1], _MIX + _MIX[:1]):
            digest = (digest ^ np.uint64(column)) * factor
            digest ^= digest >> np.uint64(31)
        connection = self.connections.get(int(digest[0]))
        if connection is None:
            return None
        for side in (0, 1):
            # A hello whose rest never came: what there is of it.
            held = self.assembling.pop((int(digest[0]), side), None)
            if held:
                self._hello(connection, side, held)
        return connection.tells(0 if a_first else 1)


def read_tells(paths, options, tolerant=False):
    """A :class:`TellTable` of captures (a pass of its own)."""
    table = TellTable(options)
    for path in paths:
        for batch in capture.CaptureReader(path, tolerant=tolerant):
            table.add(batch)
    return table


def summarize(flows, labels, table):
    """report.json's ``tells``: per tell, flows per value and label.

    :param labels: (label, kind) per flow, or None without a truth file
    :returns: (summary, per-flow tells in the order of ``flows``)
    """
    per_flow = [table.tells_of(flow.key) for flow in flows]
    names = [(labels[i][0] if labels else 'all flows')
             for i in range(len(flows))]
    return tally(per_flow, names), per_flow


def tally(per_flow, names):
    """Per tell, flows per value and label, and the operating points.

    :param per_flow: each flow's tells (None where none were seen)
    :param names: each flow's label (``migration``, ``chaff``,
        ``background``...)
    """
    summary = {}
    for tell in TELLS:
        counts = collections.OrderedDict()
        for name, tells in zip(names, per_flow):
            value = tells[tell] if tells else 'not seen'
            counts.setdefault(value, collections.Counter())[name] += 1
        rows = [{'value': value, 'flows': dict(sorted(by_label.items()))}
                for value, by_label in sorted(
                    counts.items(), key=lambda item: -sum(
                        item[1].values()))]
        background = sum(row['flows'].get('background', 0) for row in rows)
        rarity = []
        for row in rows:
            migrations = row['flows'].get('migration', 0)
            if not migrations:
                continue
            shared = row['flows'].get('background', 0)
            rarity.append({
                'value': row['value'], 'migrations': migrations,
                'chaff': row['flows'].get('chaff', 0),
                'background': shared,
                'background_share': (shared / background
                                     if background else None)})
        summary[tell] = {'rows': rows, 'migration_values': rarity,
                         'operating_point': operating_point(rows)}
    return summary


def operating_point(rows, fpr=OPERATING_FPR):
    """How well one tell alone picks out migrations and chaff.

    The observer's best rule on one categorical tell flags the values
    in order of how much more often migrations (or chaff) show them than
    the background does, while the flagged values hold at most ``fpr`` of
    the background's flows: the battery's operating point. Learned and
    judged on the same flows, so it is the observer's best case.

    :param rows: a tell's ``rows`` from :func:`summarize`
    :returns: {'migration'|'chaff': {'tpr', 'fpr', 'values'}}, only for
        labels present, or {} without background flows
    """
    background = sum(row['flows'].get('background', 0) for row in rows)
    if not background:
        return {}
    found = {}
    for label in ('migration', 'chaff'):
        positives = sum(row['flows'].get(label, 0) for row in rows)
        if not positives:
            continue
        # Most telling first: positives' share over background's.
        ranked = sorted(rows, key=lambda row: -(
            row['flows'].get(label, 0) / positives) / (
            (row['flows'].get('background', 0) + 0.5) / background))
        caught = flagged = 0
        values = []
        for row in ranked:
            hits = row['flows'].get(label, 0)
            shared = row['flows'].get('background', 0)
            if not hits or (flagged + shared) / background > fpr:
                continue
            caught += hits
            flagged += shared
            values.append(row['value'])
        found[label] = {'tpr': caught / positives,
                        'fpr': flagged / background, 'values': values}
    return found


def caught(point):
    """Two report cells: the share of migrations and of chaff caught.

    '-' for a label without flows.
    """
    return tuple('%.0f%%' % (100 * point[label]['tpr']) if label in point
                 else '-' for label in ('migration', 'chaff'))


def markdown(summary):
    """report.md's lines for the tells (empty without them)."""
    if not summary:
        return []
    lines = ['', '## What an observer reads besides timing', '',
             'Per tell, the flows of each label that share each value; '
             '"background share" is the part of the background flows '
             'showing a value the migrations show (rare = telling).']
    lines += ['', 'Each tell alone, as the observer\'s best rule on it (the '
              'values most telling first, while they hold at most %d%% of '
              'the background; learned on these same flows):' % (
                  100 * OPERATING_FPR), '',
              '| tell | migrations caught | chaff caught | background '
              'flagged |', '|---|---|---|---|']
    for tell, table in summary.items():
        point = table.get('operating_point') or {}
        flagged = ' / '.join('%.1f%%' % (100 * point[label]['fpr'])
                             for label in ('migration', 'chaff')
                             if label in point) or '-'
        lines.append('| %s | %s | %s | %s |' % (tell, *caught(point),
                                                flagged))
    for tell, table in summary.items():
        labels = sorted({label for row in table['rows']
                         for label in row['flows']})
        lines += ['', '### %s' % tell, '',
                  '| value | ' + ' | '.join(labels) + ' |',
                  '|---|' + '---|' * len(labels)]
        for row in table['rows'][:20]:
            lines.append('| %s | %s |' % (
                row['value'].replace('|', '/'), ' | '.join(
                    str(row['flows'].get(label, 0)) for label in labels)))
        for row in table['migration_values']:
            share = row['background_share']
            lines.append('')
            lines.append('Migrations show `%s` (%d; chaff %d): %s of the '
                         'background.' % (
                             row['value'], row['migrations'], row['chaff'],
                             '-' if share is None else '%.1f%%' % (
                                 100 * share)))
    return lines
