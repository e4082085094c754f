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

A chaff sender connects to one of the responder's ports, sends a hello
(``NSC1`` and the rate it wants, in bytes per second) and then its own
records; the responder discards what it receives and answers with records
at the rate asked for. It serves only peers in the configured networks, at
most ``max_connections`` in all and ``max_per_peer`` from one address,
and at most ``peer_rate`` bytes per second to one address, shared among
its connections. Others are reset at once, so a flood from an unknown
address costs an accept and a close each and no memory.
"""

import asyncio
import collections
import ipaddress
import logging
import struct
import threading
import time

from nova_stealth.chaff import records

LOG = logging.getLogger(__name__)

HELLO = struct.Struct('!4sI')
MAGIC = b'NSC1'
READ_CHUNK = 65536
WRITE_HIGH_WATER = 65536


class ChaffResponder(object):
    """Serve chaff streams to known peers.

    :param address: address to listen on
    :param ports: ports to listen on
    :param peer_networks: networks (text or ip_network) peers must be in
    :param peer_rate: bytes per second one peer address may receive
    """

    def __init__(self, address, ports, peer_networks, max_connections=128,
                 max_per_peer=16, peer_rate=4 << 20, hello_timeout=5.0):
        self.address = address
        self.ports = list(ports)
        self.networks = [ipaddress.ip_network(n) for n in peer_networks]
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.peer_rate = peer_rate
        self.hello_timeout = hello_timeout
        self.source = records.RecordSource()
        self.connections = collections.Counter()
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

    def _refuse(self, writer, why):
        self.stats[why] += 1
        writer.transport.abort()

    async def _serve(self, reader, writer):
        peer = writer.get_extra_info('peername')[0]
        if not self.known(peer):
            return self._refuse(writer, 'refused_unknown_peer')
        total = sum(self.connections.values())
        if total >= self.max_connections:
            return self._refuse(writer, 'refused_too_many')
        if self.connections[peer] >= self.max_per_peer:
            return self._refuse(writer, 'refused_peer_limit')
        self.connections[peer] += 1
        try:
            await self._stream(peer, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError,
                asyncio.TimeoutError):
            pass
        finally:
            self.connections[peer] -= 1
            if not self.connections[peer]:
                del self.connections[peer]
            writer.transport.abort()

    async def _stream(self, peer, reader, writer):
        hello = await asyncio.wait_for(reader.readexactly(HELLO.size),
                                       self.hello_timeout)
        magic, wanted = HELLO.unpack(hello)
        if magic != MAGIC:
            self.stats['refused_bad_hello'] += 1
            return
        self.stats['streams'] += 1
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        drain = asyncio.ensure_future(self._discard(reader))
        try:
            started = time.monotonic()
            sent = 0
            while not drain.done():
                rate = min(wanted, self.peer_rate /
                           max(1, self.connections[peer]))
                record = self.source.record(
                    min(self.source.size(), max(1, int(rate * 0.05))))
                writer.write(record)
                await writer.drain()
                sent += len(record)
                self.sent[peer] += len(record)
                # Pace against the start so that short sleeps add up right.
                ahead = sent / max(rate, 1) - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.wait([drain], timeout=ahead)
        finally:
            drain.cancel()

    async def _discard(self, reader):
        while await reader.read(READ_CHUNK):
            pass


class ResponderThread(object):
    """A ChaffResponder on an event loop of its own, for a service."""

    def __init__(self, responder):
        self.responder = responder
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever,
                                       daemon=True,
                                       name='nova-stealth-chaff-responder')

    def start(self):
        """Start listening; returns once every port is bound."""
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.responder.start(),
                                         self.loop).result(10)

    def stop(self):
        """Stop listening, end the streams and the loop."""
        asyncio.run_coroutine_threadsafe(self.responder.close(),
                                         self.loop).result(10)
        for task in asyncio.all_tasks(self.loop):
            self.loop.call_soon_threadsafe(task.cancel)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
