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
"""Flows and their features, computed while the capture streams by.

A flow is the packets of one 5-tuple in one direction. For each flow only
constant state is kept while reading: per packet window (100, 200, 300,
500, 1000, 2000 and 3000 packets) the count, sum and sum of squares of the
throughput of its windows; a count per inter-packet-time category of
1 microsecond (1 millisecond from 10 ms up); and the indices of the packets
that start a burst. With :attr:`FlowOptions.multiscale` (the battery's
boosted and sequence attackers need it), also the multi-scale state of
:mod:`nova_stealth.analysis.multiscale` for the whole flow and for each
segment of :data:`SEGMENT_PACKETS` packets (one feature vector kept per
closed segment, at most :data:`MAX_SEGMENTS` to :data:`MAX_SEGMENTS` x 2 of
them, evenly spread): it costs more than everything else together, so it
is built only once a flow has ``min_packets`` packets (or
:data:`MAX_HELD_PACKETS`, if fewer; see :class:`_FlowState`). Memory grows
with the number of flows, not with the number of packets (bursts excepted:
one 8-byte index per burst), and :class:`FlowTable` keeps short flows small
and forgets those that can no longer qualify.

The window feature is the coefficient of variation of *throughput* per
window of packets, as the paper's text defines it ("the variation
coefficient of the throughput within a specified window of packets"):
a window's bytes over the time from its first packet to the first packet of
the next window, so that consecutive windows tile the flow's time. The
pseudo-code of Algorithm 2 speaks of bytes per window, but a window of N
packets of a bulk flow holds about N full-size packets whatever its timing
(the CV is near 0.01 for every bulk flow in ../shared/traces), which
cannot give the TCP values of 0.4 to 1.2 of the paper's Table II.
"""

import array
import dataclasses
import ipaddress
import math
import sys

import numpy as np

from nova_stealth.analysis import capture
from nova_stealth.analysis import multiscale

WINDOWS = (100, 200, 300, 500, 1000, 2000, 3000)
#: Inter-packet times from here up are counted per whole millisecond: a
#: flow's ten most common 1-microsecond categories lie far below it, while
#: counting rare long gaps per microsecond would grow with the capture.
FINE_IPT_LIMIT_US = 10000
#: A CV of fewer complete windows is noise (two windows of a 2,000-packet
#: flow can agree by chance); such a flow has no CV for that window.
MIN_WINDOWS = 3
#: Packets a flow has before it gets its full running state (see
#: :class:`FlowTable`).
PROMOTE_PACKETS = 64
#: Packets per segment: a flow is also judged segment by segment, so that
#: a long flow cannot hide in its own average.
SEGMENT_PACKETS = 2000
#: Segments kept per flow: beyond twice this, every other one is dropped.
MAX_SEGMENTS = 128
#: Packets a flow's multi-scale state waits for at most (16 bytes each,
#: about the state's own size) when ``min_packets`` is larger.
MAX_HELD_PACKETS = 4096
PROTOCOL_NAMES = {6: 'tcp', 17: 'udp'}
PROTOCOL_NUMBERS = {name: number for number, name in PROTOCOL_NAMES.items()}
_MIX = [np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9,
                               0x94D049BB133111EB, 0xD6E8FEB86659FD93,
                               0xA0761D6478BD642F)]


@dataclasses.dataclass(frozen=True, order=True)
class FlowKey(object):
    """A 5-tuple in the direction its packets travel."""

    proto: str
    src: str
    sport: int
    dst: str
    dport: int

    def reverse(self):
        """The same connection in the other direction."""
        return FlowKey(self.proto, self.dst, self.dport, self.src,
                       self.sport)

    def as_dict(self):
        """The 5-tuple as the truth file and report.json spell it."""
        return dataclasses.asdict(self)

    def __str__(self):
        return '%s [%s]:%d -> [%s]:%d' % (self.proto, self.src, self.sport,
                                          self.dst, self.dport)


@dataclasses.dataclass
class FlowOptions(object):
    """The filtering an attacker applies, and feature settings.

    :param tcp_only: keep TCP flows only (migrations are TCP)
    :param min_packets: drop flows with fewer packets: too short to be a
        migration
    :param burst_gap: seconds of silence after which a packet starts a
        burst
    :param idle_timeout: seconds of silence after which a flow of fewer
        than ``min_packets`` packets is forgotten (a later packet of its
        5-tuple starts a new flow); 0 keeps every flow to the end
    :param multiscale: also compute :data:`multiscale.FEATURE_NAMES` per
        flow and per segment, and the 10 ms series (the battery's ``gbm``,
        ``gbm-segments`` and ``cnn`` attackers); off, those fields of
        :class:`FlowFeatures` are None
    """

    tcp_only: bool = True
    min_packets: int = 1000
    burst_gap: float = 0.02
    idle_timeout: float = 120.0
    multiscale: bool = False


@dataclasses.dataclass
class FlowFeatures(object):
    """What the detectors and tests know of one flow."""

    key: FlowKey
    packets: int
    bytes: int
    first_ns: int
    last_ns: int
    window_cvs: dict
    ipt_counts: dict
    burst_starts: np.ndarray
    #: :data:`multiscale.FEATURE_NAMES` of the whole flow (None unless
    #: read with :attr:`FlowOptions.multiscale`, as the next two)
    multiscale: np.ndarray = None
    #: the same, one row per segment of :data:`SEGMENT_PACKETS` packets
    segments: np.ndarray = None
    #: bytes per 10 ms bin over the flow's first 82 s
    series_10ms: np.ndarray = None

    @property
    def duration(self):
        """Seconds from the first packet to the last."""
        return (self.last_ns - self.first_ns) / 1e9


def address_halves(address):
    """(high, low) uint64 halves of an address as the reader packs it.

    The inverse of the text a flow key holds: IPv4 is mapped, ::ffff:a.b.c.d.
    """
    value = int(ipaddress.ip_address(address))
    if '.' in address:
        value |= 0xFFFF00000000
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def _address(high, low):
    value = (int(high) << 64) | int(low)
    if high == 0 and low >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(low & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address(value))


def _proto_name(number):
    return PROTOCOL_NAMES.get(number, str(number))


class _WindowMoments(object):
    """Count, sum and sum of squares of throughput per packet window."""

    def __init__(self):
        # Per window size: [start time, packets, bytes] of the open window.
        self.open = {w: None for w in WINDOWS}
        self.moments = {w: [0, 0.0, 0.0] for w in WINDOWS}

    def update(self, times, before):
        """Close the windows that packets of this batch start anew.

        ``before[i]`` is the bytes of this batch's packets before packet i.
        """
        for window in WINDOWS:
            self._windows(window, times, before)

    def _windows(self, window, times, before):
        total = len(times)
        opened = self.open[window]
        first = 0 if opened is None else (window - opened[1]) % window
        starts = np.arange(first, total, window)
        if len(starts) == 0:
            opened[1] += total
            opened[2] += int(before[-1])
            return
        span_start = times[starts[:-1]]
        span_end = times[starts[1:]]
        byte_counts = before[starts[1:]] - before[starts[:-1]]
        if opened is not None:
            span_start = np.concatenate(([opened[0]], span_start))
            span_end = times[starts]
            byte_counts = np.concatenate(
                ([opened[2] + before[starts[0]]], byte_counts))
        spans = np.maximum(span_end - span_start, 1000) / 1e9
        throughput = byte_counts / spans
        moments = self.moments[window]
        moments[0] += len(throughput)
        moments[1] += float(throughput.sum())
        moments[2] += float(np.dot(throughput, throughput))
        last = int(starts[-1])
        self.open[window] = [int(times[last]), total - last,
                             int(before[-1] - before[last])]

    def window_cv(self, window):
        count, total, squares = self.moments[window]
        if count < MIN_WINDOWS or total <= 0:
            return float('nan')
        mean = total / count
        return math.sqrt(max(squares / count - mean * mean, 0.0)) / mean

    def cvs(self):
        return [self.window_cv(w) for w in WINDOWS]


class _Segment(object):
    """The multi-scale state of one segment of a flow."""

    def __init__(self, first_ns):
        self.windows = _WindowMoments()
        self.scales = multiscale.ScaleState(first_ns)

    def update(self, times, sizes):
        self.windows.update(times, np.concatenate(([0], np.cumsum(sizes))))
        self.scales.update(times, sizes)

    def vector(self):
        return self.scales.vector(self.windows.cvs())


class _ScaleTrack(object):
    """The multi-scale state of a flow: the whole flow and its segments."""

    def __init__(self, first_ns):
        self.scales = multiscale.ScaleState(first_ns)
        self.segment = None
        self.segments = []
        self.closed = 0
        self.stride = 1

    def update(self, times, sizes):
        self.scales.update(times, sizes)
        done = 0
        while done < len(times):
            if self.segment is None:
                self.segment = _Segment(int(times[done]))
            room = SEGMENT_PACKETS - self.segment.scales.packets
            part = slice(done, done + room)
            self.segment.update(times[part], sizes[part])
            done += room
            if self.segment.scales.packets == SEGMENT_PACKETS:
                self._close_segment()

    def _close_segment(self):
        if self.closed % self.stride == 0:
            self.segments.append(self.segment.vector().astype(np.float32))
        self.closed += 1
        self.segment = None
        if len(self.segments) == 2 * MAX_SEGMENTS:
            # Keep every other one, and from now on every other one of the
            # new: evenly spread over the flow, and bounded.
            self.segments = self.segments[::2]
            self.stride *= 2

    def nbytes(self):
        """Bytes of the series and the segments' vectors."""
        open_segment = self.segment.scales.nbytes() if self.segment else 0
        return (self.scales.nbytes() + open_segment +
                sum(vector.nbytes for vector in self.segments))

    def segment_vectors(self):
        """Closed segments' vectors, and the open one if half full."""
        vectors = list(self.segments)
        if self.segment is not None and (
                not vectors or
                self.segment.scales.packets >= SEGMENT_PACKETS // 2):
            vectors.append(self.segment.vector())
        return np.array(vectors, dtype=float).reshape(
            -1, len(multiscale.FEATURE_NAMES))


class _FlowState(object):
    """Bounded running state of one flow.

    :param multiscale_at: packets after which the flow gets its
        :class:`_ScaleTrack` (None: never). Until then its packets are held
        as they came (16 bytes each), with the length of every update, and
        then replayed update by update: the features are those of a track
        kept from the first packet, to the bit, and a flow that never
        qualifies costs none of it.
    """

    def __init__(self, first_ns, multiscale_at=None):
        self.packets = 0
        self.bytes = 0
        self.first_ns = first_ns
        self.last_ns = first_ns
        self.windows = _WindowMoments()
        self.track = None
        self.multiscale_at = multiscale_at
        #: (time ns, wire length) int64 pairs, and the length of each update
        self.held = None
        self.held_lengths = None
        if multiscale_at is not None and multiscale_at <= 1:
            self.track = _ScaleTrack(first_ns)
        elif multiscale_at is not None:
            self.held = bytearray()
            self.held_lengths = array.array('q')
        self.ipt_counts = {}
        # 8 bytes a burst, without an array object per batch.
        self.burst_starts = array.array('q')

    def update(self, times, sizes, burst_gap_ns):
        gaps = np.diff(times, prepend=times[:1] if not self.packets
                       else np.int64(self.last_ns))
        micros = np.maximum(gaps, 0) // 1000
        micros = np.where(micros < FINE_IPT_LIMIT_US, micros,
                          micros // 1000 * 1000)
        categories, counts = np.unique(micros, return_counts=True)
        if not self.packets:
            counts[0] -= 1
        for category, count in zip(categories.tolist(), counts.tolist()):
            if count:
                self.ipt_counts[category] = (
                    self.ipt_counts.get(category, 0) + count)
        starts = np.flatnonzero(gaps >= burst_gap_ns)
        if not self.packets:
            starts = np.union1d([0], starts)
        if len(starts):
            self.burst_starts.frombytes(
                (starts + self.packets).astype(np.int64).tobytes())
        before = np.concatenate(([0], np.cumsum(sizes)))
        self.windows.update(times, before)
        self.packets += len(sizes)
        self.bytes += int(before[-1])
        self.last_ns = int(times[-1])
        if self.track is not None:
            self.track.update(times, sizes)
        elif self.held is not None:
            self._hold(times, sizes)

    def _hold(self, times, sizes):
        """Hold an update's packets; replay them all when there are enough."""
        self.held += np.stack((times, sizes), axis=1).astype(
            np.int64).tobytes()
        self.held_lengths.append(len(times))
        if self.packets < self.multiscale_at:
            return
        self.track = _ScaleTrack(self.first_ns)
        pairs = np.frombuffer(self.held, dtype=np.int64).reshape(-1, 2)
        done = 0
        for length in self.held_lengths:
            part = pairs[done:done + length]
            self.track.update(part[:, 0].copy(), part[:, 1].copy())
            done += length
        self.held = self.held_lengths = None

    def series_bytes(self):
        """Bytes of the bounded multi-scale state, or of what it waits on."""
        if self.track is not None:
            return self.track.nbytes()
        if self.held is not None:
            return len(self.held) + 8 * len(self.held_lengths)
        return 0

    def window_cv(self, window):
        return self.windows.window_cv(window)


class SweepClock(object):
    """When the flows idle for ``idle_timeout`` seconds are to be forgotten.

    Every quarter of the timeout of capture time: a sweep looks at every
    flow, so it must not run at every batch.
    """

    def __init__(self, idle_timeout):
        self.idle_ns = int((idle_timeout or 0) * 1e9)
        self.next_ns = None

    def due(self, now):
        """The horizon (flows silent since before it go), or None."""
        if not self.idle_ns:
            return None
        if self.next_ns is None:
            self.next_ns = now + self.idle_ns // 4
        if now < self.next_ns:
            return None
        self.next_ns = now + self.idle_ns // 4
        return now - self.idle_ns


class FlowTable(object):
    """Accumulates packet batches into flows.

    A flow's packets are kept as they came, 16 bytes each, until it has
    :data:`PROMOTE_PACKETS` of them; only then are they replayed into the
    full running state (kilobytes), which gives the same features as if it
    had been kept from the first packet. Flows of fewer than
    ``min_packets`` packets that have been silent for ``idle_timeout``
    seconds (of capture time) are forgotten: they can no longer qualify.
    Memory thus follows the flows open at once, not all the capture's.
    """

    def __init__(self, options=None):
        self.options = options or FlowOptions()
        self.states = {}
        #: 5-tuple -> bytearray of (time ns, wire length) int64 pairs
        self.pending = {}
        self.evicted = 0
        self._burst_gap_ns = int(self.options.burst_gap * 1e9)
        self._multiscale_at = (
            min(self.options.min_packets, MAX_HELD_PACKETS)
            if self.options.multiscale else None)
        self._sweeps = SweepClock(self.options.idle_timeout)

    def add(self, batch):
        """Fold one :class:`capture.PacketBatch` into the flows."""
        keep = batch.version > 0
        if self.options.tcp_only:
            keep &= batch.proto == capture.IPPROTO_TCP
        if not keep.any():
            return
        columns = [batch.proto[keep].astype(np.uint64) << np.uint64(32) |
                   batch.sport[keep].astype(np.uint64) << np.uint64(16) |
                   batch.dport[keep].astype(np.uint64),
                   batch.src_hi[keep], batch.src_lo[keep],
                   batch.dst_hi[keep], batch.dst_lo[keep]]
        digest = np.zeros(len(columns[0]), dtype=np.uint64)
        for column, factor in zip(columns, _MIX):
            digest = (digest ^ column) * factor
            digest ^= digest >> np.uint64(31)
        unique, first, inverse = np.unique(digest, return_index=True,
                                           return_inverse=True)
        if not all(np.array_equal(column, column[first][inverse])
                   for column in columns):
            # Two 5-tuples of this batch share a digest (crafted, or one
            # chance in 2**64): group this batch by the exact 5-tuples.
            unique, first, inverse = np.unique(
                np.stack(columns, axis=1), axis=0, return_index=True,
                return_inverse=True)
            inverse = inverse.reshape(-1)
        times = batch.time_ns[keep]
        sizes = batch.wire_len[keep]
        order = np.argsort(inverse, kind='stable')
        bounds = np.searchsorted(inverse[order], np.arange(len(unique) + 1))
        pairs = np.stack((times, sizes.astype(np.int64)), axis=1)[order]
        for flow, start in enumerate(first.tolist()):
            key = tuple(int(column[start]) for column in columns)
            low, high = int(bounds[flow]), int(bounds[flow + 1])
            state = self.states.get(key)
            if state is None:
                held = self.pending.get(key)
                count = high - low + (len(held) // 16 if held else 0)
                if count < PROMOTE_PACKETS:
                    if held is None:
                        self.pending[key] = bytearray(pairs[low:high])
                    else:
                        held += pairs[low:high].tobytes()
                    continue
                state = self.states[key] = self._promote(
                    key, int(times[order[low]]))
            members = order[low:high]
            state.update(times[members], sizes[members], self._burst_gap_ns)
        # The median, so that one absurd timestamp evicts nothing.
        self._sweep(int(np.median(times)))

    def _promote(self, key, first_ns=None):
        """The full state of a flow, from the packets held for it."""
        held = self.pending.pop(key, None)
        if not held:
            return _FlowState(first_ns, self._multiscale_at)
        pairs = np.frombuffer(held, dtype=np.int64).reshape(-1, 2)
        state = _FlowState(int(pairs[0, 0]), self._multiscale_at)
        state.update(pairs[:, 0].copy(), pairs[:, 1].copy(),
                     self._burst_gap_ns)
        return state

    def _sweep(self, now):
        """Forget the flows that can no longer qualify."""
        horizon = self._sweeps.due(now)
        if horizon is None:
            return
        minimum = self.options.min_packets
        stale = [key for key, held in self.pending.items()
                 if len(held) // 16 < minimum and
                 int.from_bytes(held[-16:-8], sys.byteorder,
                                signed=True) < horizon]
        for key in stale:
            del self.pending[key]
        idle = [key for key, state in self.states.items()
                if state.packets < minimum and state.last_ns < horizon]
        for key in idle:
            del self.states[key]
        self.evicted += len(stale) + len(idle)

    def flows(self):
        """Return :class:`FlowFeatures` of every flow long enough."""
        for key in [key for key, held in self.pending.items()
                    if len(held) // 16 >= self.options.min_packets]:
            self.states[key] = self._promote(key)
        result = []
        for key, state in self.states.items():
            if state.packets < self.options.min_packets:
                continue
            ports, src_hi, src_lo, dst_hi, dst_lo = key
            starts = np.frombuffer(state.burst_starts, dtype=np.int64).copy()
            result.append(FlowFeatures(
                key=FlowKey(_proto_name(ports >> 32),
                            _address(src_hi, src_lo),
                            (ports >> 16) & 0xFFFF,
                            _address(dst_hi, dst_lo), ports & 0xFFFF),
                packets=state.packets, bytes=state.bytes,
                first_ns=state.first_ns, last_ns=state.last_ns,
                window_cvs={w: state.window_cv(w) for w in WINDOWS},
                ipt_counts=dict(state.ipt_counts),
                burst_starts=starts, **self._multiscale(state)))
        return sorted(result, key=lambda f: f.key)

    @staticmethod
    def _multiscale(state):
        """The multi-scale fields of a flow's :class:`FlowFeatures`."""
        track = state.track
        if track is None:
            return {}
        return {'multiscale': track.scales.vector(state.windows.cvs()),
                'segments': track.segment_vectors(),
                'series_10ms': track.scales.complete(1)}


def read_flows(paths, options=None, tolerant=False, progress=None,
               chunk_bytes=capture.CHUNK_BYTES, also=()):
    """Read captures and return their flows' features.

    :param paths: capture files, read in order into one flow table
    :param progress: called with (bytes read, total bytes) as reading goes
    :param chunk_bytes: how much of a file the reader parses at a time
    :param also: other tables (with an ``add(batch)``) fed the same
        batches in the same pass, e.g. :class:`tells.TellTable`
    :returns: (flows, readers) - readers say what each file held
    """
    table = FlowTable(options)
    readers = [capture.CaptureReader(path, tolerant=tolerant,
                                     chunk_bytes=chunk_bytes)
               for path in paths]
    total = sum(reader.size for reader in readers)
    done = 0
    for reader in readers:
        for batch in reader:
            table.add(batch)
            for other in also:
                other.add(batch)
            if progress:
                progress(done + reader.bytes_read, total)
        done += reader.size
    if progress:
        progress(total, total)
    return table.flows(), readers
