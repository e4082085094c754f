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
"""Trace-driven background: real flows' rate envelopes replayed over TCP.

:func:`extract` reads captures (any pcap or pcapng the reader takes) and
keeps, for every TCP or UDP flow of at least :data:`MIN_PACKETS` packets
in one direction, its *envelope*: the bytes on the wire per
:data:`BIN_S` from its first packet, up to :data:`MAX_SECONDS`, and when
within each bin its first packet came (its *onset*, to
:data:`ONSET_UNIT_S`). That is all that is kept: packet sizes and the
rest of the timing within a bin, the flow's own RTT, losses and
congestion control are the real path's and stay behind.

A replay server (one port per origin: the directory a capture was in,
``mlab-ndt``, ``requet-youtube``...) answers a request for envelope *i*
(from bin *j*) by writing each bin's bytes at its onset over a real TCP
connection through the testbed's bottleneck. Writing at the bins' starts
would draw a 100 Hz grid no real flow has; writing whatever a bin holds
would end every write with a short segment, where a server streaming a
flow fills its segments: so the replay writes whole segments (TLS
records sized to end on one) and carries the rest to the next bin. Users
on the other host ask for envelopes at random with exponential think
times. Users start in their steady state (:func:`first_request`): a user
is found in the middle of a flow, a long flow more often than a short
one, or thinking, as at any later moment; had they all started at once
with a fresh pick, the rare bulk flows (NDT's, 100 MB in 10 s) would be
running many times as often as later, and the load far above its level.
What the testbed changes: the path (RTT under a millisecond plus the
bottleneck's queue of up to 30 ms, no loss but the queue's drops), TCP's
own dynamics on it, and the bottleneck's 100 Mbit/s cap (a bin's bytes
that cannot leave in time leave later, so a real flow faster than the
cap is stretched).
QUIC/UDP flows are replayed over TCP. Run as ``python -m
nova_stealth.testbed.replay server|users`` inside a namespace.
"""

import argparse
import asyncio
import json
import os
import random
import socket
import struct

import numpy as np

from nova_stealth.analysis import capture
from nova_stealth.testbed import traffic

BIN_S = 0.01
#: The onsets' unit: 10 microseconds (a 10 ms bin's onset fits 16 bits).
ONSET_UNIT_S = 1e-5
MIN_PACKETS = 200
MAX_SECONDS = 180.0
#: The first origin's port; the others follow in sorted order.
PORT_BASE = 18100
#: An envelope's index and the bin to start from.
REQUEST = struct.Struct('!II')
PAYLOAD = os.urandom(1 << 20)
#: TLS's largest record's plaintext (RFC 8446, 5.1).
MAX_RECORD = 1 << 14
#: What a TLS record adds on the wire: 1.3's header, inner content type
#: and AEAD tag (22 bytes); 1.2's header, explicit nonce and GCM tag (29).
RECORD_OVERHEAD = {'TLSv1.3': 22, 'TLSv1.2': 29}


def _origin(path):
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return parent or os.path.splitext(os.path.basename(path))[0]


def _flows_of(path):
    """(keys per packet, times, sizes) of a capture's TCP and UDP packets."""
    columns = {name: [] for name in ('time_ns', 'wire_len', 'proto',
                                     'src_hi', 'src_lo', 'dst_hi', 'dst_lo',
                                     'sport', 'dport')}
    for batch in capture.CaptureReader(path, tolerant=True):
        keep = (batch.version != 0) & np.isin(batch.proto, (6, 17))
        for name, values in columns.items():
            values.append(getattr(batch, name)[keep])
    if not columns['time_ns'] or not sum(map(len, columns['time_ns'])):
        return None
    merged = {name: np.concatenate(values)
              for name, values in columns.items()}
    keys = np.stack([merged[name].astype(np.uint64) for name in (
        'proto', 'src_hi', 'src_lo', 'dst_hi', 'dst_lo', 'sport',
        'dport')], axis=1)
    return keys, merged['time_ns'].astype(np.int64), merged['wire_len']


def _envelope(times, sizes, bin_s, max_seconds):
    """(bytes per bin, onset per bin in ONSET_UNIT_S) of one flow."""
    start = times.min()
    since = times - start
    slot = (since / (bin_s * 1e9)).astype(np.int64)
    inside = slot < int(max_seconds / bin_s)
    slot, since = slot[inside], since[inside]
    envelope = np.bincount(slot, weights=sizes[inside]).astype(np.uint32)
    onsets = np.zeros(len(envelope), np.int64)
    first = np.full(len(envelope), np.iinfo(np.int64).max)
    np.minimum.at(first, slot, since)
    busy = envelope > 0
    onsets[busy] = (first[busy] - np.flatnonzero(busy) * int(bin_s * 1e9)
                    ) // int(ONSET_UNIT_S * 1e9)
    return envelope, onsets.astype(np.uint16)


def extract(paths, bin_s=BIN_S, min_packets=MIN_PACKETS,
            max_seconds=MAX_SECONDS):
    """The envelopes of every long enough flow of the captures.

    :returns: {'origins': [name], 'flows': [{'origin', 'capture', 'proto',
        'bytes', 'seconds'}], 'bins': [np.ndarray of bytes per bin],
        'onsets': [np.ndarray of each bin's first packet, in
        :data:`ONSET_UNIT_S` from the bin's start], 'bin_s'}
    """
    if bin_s / ONSET_UNIT_S > np.iinfo(np.uint16).max:
        raise ValueError('bins of %g s are too long for 16-bit onsets'
                         % bin_s)
    flows, bins, onsets = [], [], []
    for path in paths:
        found = _flows_of(path)
        if found is None:
            continue
        keys, times, sizes = found
        unique, inverse, counts = np.unique(keys, axis=0, return_inverse=True,
                                            return_counts=True)
        inverse = inverse.reshape(-1)
        for index in np.flatnonzero(counts >= min_packets):
            mine = inverse == index
            envelope, onset = _envelope(times[mine], sizes[mine], bin_s,
                                        max_seconds)
            flows.append({'origin': _origin(path),
                          'capture': os.path.basename(path),
                          'proto': 'tcp' if unique[index][0] == 6 else 'udp',
                          'bytes': int(envelope.sum()),
                          'seconds': len(envelope) * bin_s})
            bins.append(envelope)
            onsets.append(onset)
    if not flows:
        raise ValueError('no flow of at least %d packets in %s'
                         % (min_packets, ', '.join(paths)))
    return {'origins': sorted({flow['origin'] for flow in flows}),
            'flows': flows, 'bins': bins, 'onsets': onsets, 'bin_s': bin_s}


def save(path, envelopes):
    """Write envelopes for the servers and users (one .npz file).

    ``onsets`` may be left out (crafted envelopes): the server then draws
    each bin's onset at random.
    """
    lengths = np.array([len(b) for b in envelopes['bins']], dtype=np.int64)
    arrays = {'bins': np.concatenate(envelopes['bins']), 'lengths': lengths}
    if envelopes.get('onsets') is not None:
        arrays['onsets'] = np.concatenate(envelopes['onsets']).astype(
            np.uint16)
    np.savez(path, meta=np.array(json.dumps({
        'origins': envelopes['origins'], 'flows': envelopes['flows'],
        'bin_s': envelopes['bin_s']})), **arrays)


def load(path):
    """Read what :func:`save` wrote."""
    with np.load(path) as data:
        meta = json.loads(str(data['meta']))
        ends = np.cumsum(data['lengths'])[:-1]
        bins = np.split(data['bins'], ends)
        onsets = (np.split(data['onsets'], ends) if 'onsets' in data
                  else None)
    return dict(meta, bins=bins, onsets=onsets)


def ports(envelopes):
    """{port: origin} of the replay servers."""
    return {PORT_BASE + i: origin
            for i, origin in enumerate(envelopes['origins'])}


def mean_rate(envelopes, think_s):
    """Bytes per second one user moves on average (the bins' own pace)."""
    moved = sum(flow['bytes'] for flow in envelopes['flows'])
    spent = sum(flow['seconds'] + think_s for flow in envelopes['flows'])
    return moved / spent


def record_sizes(size, mss, overhead):
    """Plaintext writes that fill whole segments: (sizes, bytes left).

    Each write is one record (TLS's ``overhead`` bytes more on the wire;
    0 for plain TCP) of whole ``mss`` segments, at most
    :data:`MAX_RECORD`; what does not fill a segment is left for later.
    """
    per_record = (MAX_RECORD + overhead) // mss
    segments = size // mss
    sizes = [per_record * mss - overhead] * (segments // per_record)
    if segments % per_record:
        sizes.append(segments % per_record * mss - overhead)
    return sizes, size - segments * mss


def _segment_shape(writer):
    """(MSS, TLS record overhead) of a connection."""
    sock = writer.get_extra_info('socket')
    mss = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    tls = writer.get_extra_info('ssl_object')
    overhead = RECORD_OVERHEAD.get(tls.version(), 29) if tls else 0
    return mss, overhead


async def _replay(writer, bins, onsets, bin_s, rng):
    """Write ``bins`` bytes, each bin's at its onset, in whole segments.

    :param onsets: each bin's onset in :data:`ONSET_UNIT_S`, or None to
        draw them uniformly within the bin
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    mss, overhead = _segment_shape(writer)
    offset, carry = 0, 0
    slots = np.flatnonzero(bins)
    for number, slot in enumerate(slots):
        onset = (rng.random() * bin_s if onsets is None
                 else float(onsets[slot]) * ONSET_UNIT_S)
        delay = start + slot * bin_s + onset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        carry += int(bins[slot])
        if number == len(slots) - 1:
            # The flow's last bytes: a short segment ends it, as any.
            sizes, carry = [max(carry - overhead, 1)], 0
        else:
            sizes, carry = record_sizes(carry, mss, overhead)
        for size in sizes:
            if offset + size > len(PAYLOAD):
                offset = 0
            writer.write(PAYLOAD[offset:offset + size])
            offset += size
        # Bytes the bottleneck holds back leave late: the cap stretches
        # the envelope, nothing is dropped.
        await writer.drain()


async def serve(address, path, tls=None):
    """Replay envelopes to whoever asks, until cancelled.

    :param tls: the servers' SSLContext (:func:`traffic.server_tls`)
    """
    envelopes = load(path)

    async def answer(reader, writer):
        try:
            index, first = REQUEST.unpack(
                await reader.readexactly(REQUEST.size))
            if index < len(envelopes['bins']):
                onsets = envelopes['onsets']
                await _replay(writer, envelopes['bins'][index][first:],
                              None if onsets is None
                              else onsets[index][first:],
                              envelopes['bin_s'], random.Random(
                                  (index << 32) | first))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(answer, address, port, ssl=tls)
               for port in ports(envelopes)]
    print(json.dumps({'ready': True}), flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def first_request(envelopes, rng, think_s):
    """Where a user stands at a random moment of its steady state.

    A user alternates flows (each picked at random, lasting its envelope's
    seconds) and think times (exponential, mean ``think_s``). At a random
    moment it is inside a flow with probability the flows' share of its
    time, that flow picked in proportion to its length and the moment
    uniform within it; otherwise it is thinking, for an exponential time
    again (it has no memory).

    :returns: (envelope index, first bin), or None when thinking
    """
    seconds = np.array([flow['seconds'] for flow in envelopes['flows']])
    busy = seconds.sum()
    if rng.random() * (busy + len(seconds) * think_s) >= busy:
        return None
    index = int(np.searchsorted(np.cumsum(seconds), rng.random() * busy,
                                side='right'))
    index = min(index, len(seconds) - 1)
    return index, int(rng.random() * len(envelopes['bins'][index]))


async def _fetch(server, port, index, first, size, totals, origin, tls):
    """Ask for envelope ``index`` from bin ``first``; count what comes."""
    reader, writer = await asyncio.open_connection(
        server, port, **traffic.tls_arguments(tls))
    try:
        writer.write(REQUEST.pack(index, first))
        left = size
        while left > 0:
            got = await reader.read(min(left, 1 << 16))
            if not got:
                break
            left -= len(got)
            totals[origin] = totals.get(origin, 0) + len(got)
    finally:
        writer.close()


async def _user(server, envelopes, rng, think_s, totals, tls):
    port_of = {origin: port for port, origin in ports(envelopes).items()}
    request = first_request(envelopes, rng, think_s)
    if request is None:
        await asyncio.sleep(rng.expovariate(1.0 / think_s))
    while True:
        if request is None:
            request = (rng.randrange(len(envelopes['flows'])), 0)
        index, first = request
        request = None
        origin = envelopes['flows'][index]['origin']
        try:
            await _fetch(server, port_of[origin], index, first,
                         int(envelopes['bins'][index][first:].sum()),
                         totals, origin, tls)
        except OSError:
            await asyncio.sleep(1.0)
        await asyncio.sleep(rng.expovariate(1.0 / think_s))


async def users(server, path, count, seed, think_s, tls=None):
    """Run ``count`` replaying users against ``server`` until SIGTERM.

    :param tls: the users' SSLContext (:func:`traffic.client_tls`)
    """
    envelopes = load(path)
    await traffic.run_users(lambda rng, totals: _user(
        server, envelopes, rng, think_s, totals, tls), count, seed)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='nova-stealth-testbed-replay')
    sub = parser.add_subparsers(dest='role', required=True)
    server = sub.add_parser('server')
    server.add_argument('--address', required=True)
    server.add_argument('--envelopes', required=True)
    client = sub.add_parser('users')
    client.add_argument('--server', required=True)
    client.add_argument('--envelopes', required=True)
    client.add_argument('--count', type=int, required=True)
    client.add_argument('--seed', type=int, default=0)
    client.add_argument('--think-s', type=float, default=2.0)
    for role in (server, client):
        role.add_argument('--tls-dir', help='speak TLS, with these x509 '
                          'credentials (QEMU\'s layout)')
    args = parser.parse_args(argv)
    if args.role == 'server':
        asyncio.run(serve(args.address, args.envelopes,
                          traffic.server_tls(args.tls_dir)))
    else:
        asyncio.run(users(args.server, args.envelopes, args.count,
                          args.seed, args.think_s,
                          traffic.client_tls(args.tls_dir)))


if __name__ == '__main__':
    main()
