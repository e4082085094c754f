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
"""The chaff responder: the far end of chaff streams, on every node.

A chaff sender connects to one of the responder's ports and opens mutual
TLS 1.3 (:mod:`nova_stealth.chaff.tls`); inside it, it asks for a rate
(``NSC1``, bytes per second and the stream's lifetime in milliseconds,
the first bytes of its first record) and sends its own data. The
responder discards what it receives and answers with data at the rate
asked for (none at 0, which chaff senders ask for: a migration's
destination sends nothing back); the sender stops writing when the
lifetime is over, and the responder closes soon after, with TLS's
close_notify and a FIN; the sender answers in kind.

What one host can take is bounded:

- peers must be in the configured networks (checked before any TLS) and
  hold a certificate signed by the CA;
- at most ``max_connections`` connections in all, handshakes included,
  and ``max_per_peer`` from one address;
- at most ``peer_rate`` bytes per second to one address, shared among its
  connections, and ``total_rate`` in all, shared among the peers;
- a connection with data waiting that drained less than a quarter of its
  rate for ``stall_timeout`` (a peer that stopped reading) is dropped and
  its address refused for
  ``stall_penalty`` seconds; each connection's kernel send buffer is
  ``SEND_BUFFER``, so a stalled peer pins little memory while it lasts;
- a handshake or a rate request that does not come in ``hello_timeout``
  ends the connection, as does malformed TLS.

Refused connections are reset at once, so a flood costs an accept and a
close each and no memory.
"""

import asyncio
import collections
import ipaddress
import socket
import ssl
import struct
import time

from oslo_log import log as logging

from nova_stealth.chaff import records

LOG = logging.getLogger(__name__)

HELLO = struct.Struct('!4sII')
MAGIC = b'NSC1'
READ_CHUNK = 65536
WRITE_HIGH_WATER = 65536
#: SO_SNDBUF of each served connection (the kernel doubles it): enough for
#: a peer's share at a WAN's round trip, little when a peer stops reading.
SEND_BUFFER = 128 << 10
#: How long a graceful close may wait for the peer's close_notify.
CLOSE_TIMEOUT = 2.0
#: The responder closes this long after the lifetime the sender asked
#: for, by when the sender has stopped writing: data arriving while a TLS
#: close is under way would turn it into a reset.
CLOSE_GRACE = 0.25
#: SO_LINGER on, zero seconds: close() resets.
LINGER_RESET = struct.pack('ii', 1, 0)


class ChaffResponder(object):
    """Serve chaff streams to known, authenticated peers.

    :param address: address to listen on
    :param ports: ports to listen on
    :param peer_networks: networks (text or ip_network) peers must be in
    :param tls: the server's :class:`ssl.SSLContext`
        (:func:`nova_stealth.chaff.tls.server_context`)
    :param peer_rate: bytes per second one peer address may receive
    :param total_rate: bytes per second all peers together may receive
    :param stall_timeout: seconds a write may wait to drain
    :param stall_penalty: seconds a stalled peer's address is refused
    """

    def __init__(self, address, ports, peer_networks, tls,
                 max_connections=128, max_per_peer=16, peer_rate=4 << 20,
                 total_rate=32 << 20, hello_timeout=5.0, stall_timeout=5.0,
                 stall_penalty=60.0):
        self.address = address
        self.ports = list(ports)
        self.networks = [ipaddress.ip_network(n) for n in peer_networks]
        self.tls = tls
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.peer_rate = peer_rate
        self.total_rate = total_rate
        self.hello_timeout = hello_timeout
        self.stall_timeout = stall_timeout
        self.stall_penalty = stall_penalty
        self.source = records.RecordSource()
        self.connections = collections.Counter()
        self.serving = collections.Counter()
        self.penalised = {}
        self.stats = collections.Counter()
        self.sent = collections.Counter()
        self.servers = []

    def known(self, peer):
        """True when ``peer`` is in one of the peer networks."""
        address = ipaddress.ip_address(peer)
        if address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    async def start(self):
        """Listen on every port."""
        for port in self.ports:
            self.servers.append(await asyncio.start_server(
                self._serve, self.address, port, reuse_address=True,
                backlog=1024, limit=READ_CHUNK))

    async def close(self):
        """Stop listening and end every stream."""
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()
        self.servers = []

    def peer_share(self, peer):
        """Bytes per second one stream of ``peer`` may receive now.

        Streams share their peer's rate, and peers the total; connections
        still in their handshake take no share.
        """
        share = min(self.peer_rate,
                    self.total_rate / max(1, len(self.serving)))
        return share / max(1, self.serving[peer])

    def _refusal(self, peer):
        if not self.known(peer):
            return 'refused_unknown_peer'
        if self.penalised.get(peer, 0.0) > time.monotonic():
            return 'refused_stalled_peer'
        self.penalised.pop(peer, None)
        if sum(self.connections.values()) >= self.max_connections:
            return 'refused_too_many'
        if self.connections[peer] >= self.max_per_peer:
            return 'refused_peer_limit'
        return None

    async def _serve(self, reader, writer):
        peer = writer.get_extra_info('peername')[0]
        why = self._refusal(peer)
        if why:
            self.stats[why] += 1
            _reset(writer)
            return
        self.connections[peer] += 1
        graceful = False
        try:
            writer.get_extra_info('socket').setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            await writer.start_tls(self.tls,
                                   ssl_handshake_timeout=self.hello_timeout)
            graceful = await self._stream(peer, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError,
                asyncio.TimeoutError, OSError) as exc:
            self.stats[_failure(exc)] += 1
            _drop_traceback(exc)
        except asyncio.CancelledError:
            # The service stops. Ending here rather than re-raising spares
            # the log asyncio's error for a cancelled connection handler.
            pass
        finally:
            self.connections[peer] -= 1
            if not self.connections[peer]:
                del self.connections[peer]
            await _close(writer, graceful)

    async def _stream(self, peer, reader, writer):
        """Serve one stream; True when it ended in a clean close."""
        hello = await asyncio.wait_for(reader.readexactly(HELLO.size),
                                       self.hello_timeout)
        magic, wanted, lifetime_ms = HELLO.unpack(hello)
        ends = time.monotonic() + lifetime_ms / 1000.0 + CLOSE_GRACE
        if magic != MAGIC:
            self.stats['refused_bad_hello'] += 1
            return False
        self.stats['streams'] += 1
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        drain = asyncio.ensure_future(self._discard(reader))
        if not wanted:
            # One-way, as a migration is: nothing but ACKs goes back.
            try:
                await asyncio.wait([drain], timeout=max(
                    0.0, ends - time.monotonic()))
                return not drain.done() or drain.exception() is None
            finally:
                drain.cancel()
        self.serving[peer] += 1
        try:
            started = window = time.monotonic()
            due = written = at_window = 0
            while not drain.done() and time.monotonic() < ends:
                rate = max(1.0, min(wanted, self.peer_share(peer)))
                record = self.source.chunk(
                    min(self.source.size(), max(1, int(rate * 0.05))))
                writer.write(record)
                written += len(record)
                try:
                    await asyncio.wait_for(writer.drain(),
                                           self.stall_timeout)
                except asyncio.TimeoutError:
                    pass
                self.sent[peer] += len(record)
                # Progress is what left our buffers; a trickle of window
                # that the kernel reopens now and then is not reading.
                now = time.monotonic()
                waiting = writer.transport.get_write_buffer_size()
                if not waiting or (written - waiting - at_window >=
                                   rate * self.stall_timeout / 4):
                    window, at_window = now, written - waiting
                elif now - window > self.stall_timeout:
                    self._stalled(peer)
                    return False
                # Pace against the start so that short sleeps add up right.
                due += len(record) / rate
                ahead = due - (now - started)
                if ahead > 0:
                    await asyncio.wait([drain], timeout=min(
                        ahead, max(0.0, ends - now)))
            return not drain.done() or drain.exception() is None
        finally:
            drain.cancel()
            self.serving[peer] -= 1
            if not self.serving[peer]:
                del self.serving[peer]

    def _stalled(self, peer):
        self.stats['dropped_stalled'] += 1
        self.penalised[peer] = time.monotonic() + self.stall_penalty
        LOG.warning('Chaff peer %s stopped reading; refusing it for %.0f s',
                    peer, self.stall_penalty)

    async def _discard(self, reader):
        while await reader.read(READ_CHUNK):
            pass


def _failure(exc):
    """The stats counter of a connection that ended on ``exc``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return 'refused_bad_certificate'
    if isinstance(exc, ssl.SSLError):
        return 'refused_bad_tls'
    return 'ended_by_error'


def _drop_traceback(exc):
    """Free a failed connection now rather than at the next collection.

    asyncio keeps a failed handshake's exception in its waiter future, and
    the exception's traceback holds the frames that hold the future, the
    SSL protocol and OpenSSL's objects: a cycle that only the cyclic
    collector frees, which does not count OpenSSL's memory and so runs too
    seldom (a flood of malformed TLS grew the process by about 100 KiB a
    connection). Cutting the tracebacks lets reference counting free it.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


def _reset(writer):
    """Reset the connection: its send queue goes at once.

    A plain close would leave the kernel an orphan socket that holds what
    a peer that stopped reading never took, for minutes.
    """
    sock = writer.get_extra_info('socket')
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            LINGER_RESET)
        except OSError:
            pass  # already closed
    writer.transport.abort()


async def _close(writer, graceful):
    """Close with close_notify and FIN, or reset a failed connection.

    A clean close waits at most CLOSE_TIMEOUT for the peer's side.
    """
    if not graceful:
        _reset(writer)
        return
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
    except (asyncio.TimeoutError, OSError, ssl.SSLError):
        _reset(writer)
