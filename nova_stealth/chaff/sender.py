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
"""The chaff sender: dummy TLS streams from a migration's source.

A few streams run at once, each to a random peer and port, each living an
exponentially distributed time before it closes and another opens, so that
chaff looks like ordinary connections coming and going. Each is mutual TLS
1.3 with the migration's own x509 credentials (:mod:`.tls`); the rate it
asks of the responder is the start of its first full record, and it ends
with close_notify and a FIN (a reset only if the peer does not answer
within CLOSE_TIMEOUT). Every 20 ms (so
that it gives way to the migration within a fraction of a 100 ms bin) the
schedule gives the total rate, capped by ``max_rate``; it is shared
among the streams, which pace themselves with a token bucket. Once
``budget`` bytes went out, the chaff stops.
"""

import asyncio
import random
import socket
import ssl
import threading
import time

from oslo_log import log as logging

from nova_stealth.chaff import records
from nova_stealth.chaff import responder
from nova_stealth.chaff import tls as chaff_tls

LOG = logging.getLogger(__name__)
CONTROL_TICK = 0.02
PACE_TICK = 0.01
CONNECT_TIMEOUT = 5.0
#: How long past its lifetime a stream waits for the responder to close.
CLOSE_WAIT = 2.0


class ChaffSender(object):
    """Chaff streams for one migration on its source host.

    :param peers: (address, ports) pairs of responders
    :param tls_dir: directory of the x509 credentials
        (:func:`nova_stealth.chaff.tls.client_context`)
    :param tls_priority: GnuTLS priority string, QEMU's
    :param schedule: a :class:`nova_stealth.chaff.schedules.ChaffSchedule`
    :param max_rate: bytes per second the chaff never exceeds
    :param budget: bytes after which the chaff stops
    :param migration_rate: callable giving the migration's bytes per second
    :param streams: streams at once
    :param switch_mean: mean lifetime of a stream, in seconds
    :param answer_share: the answer rate asked of responders, as a share of
        ``max_rate``; 0 (one-way streams, as a migration is) unless a
        test asks for more
    :param socket_factory: makes the streams' sockets, like socket.socket
        (the testbed makes them inside a host's network namespace)
    """

    def __init__(self, peers, schedule, max_rate, budget, tls_dir,
                 migration_rate=lambda: 0.0, streams=2, switch_mean=5.0,
                 answer_share=0.0, seed=None, clock=time.monotonic,
                 socket_factory=socket.socket,
                 tls_priority=chaff_tls.QEMU_PRIORITY):
        self.peers = [(address, list(ports)) for address, ports in peers]
        self.tls = chaff_tls.client_context(tls_dir, tls_priority)
        self.schedule = schedule
        self.max_rate = max_rate
        self.budget = budget
        self.migration_rate = migration_rate
        self.streams = streams
        self.switch_mean = switch_mean
        self.answer_share = answer_share
        self.rng = random.Random(seed)
        self.clock = clock
        self.socket_factory = socket_factory
        self.source = records.RecordSource(random.Random(seed))
        self.share = 0.0
        self.sent = 0
        self.connections = 0
        self.errors = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name='nova-stealth-chaff-sender')
        self._stopping = None
        self._open = set()

    def start(self):
        """Start the ramp-up; the migration should start after the lead."""
        self.schedule.prepare(self.clock())
        self.thread.start()

    def handover_rate(self):
        """Bytes per second the migration should start at.

        What the chaff sends now less what it keeps sending under the
        migration; 0 once the budget is spent.
        """
        if self.sent >= self.budget:
            return 0.0
        return min(self.max_rate,
                   self.schedule.handover_rate(self.clock()))

    def migration_started(self):
        """Tell the schedule the migration's data flows."""
        self.schedule.migration_started(self.clock())

    def migration_ended(self):
        """Tell the schedule the migration's data stopped."""
        self.schedule.migration_ended(self.clock())

    def stop(self, timeout=15.0):
        """End every stream now and wait for the thread; idempotent."""
        if self.thread.is_alive() and self._stopping is not None:
            try:
                self.loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:
                pass  # the loop closed by itself after the ramp-down
        if self.thread.ident is not None:
            self.thread.join(timeout)

    def wait(self, timeout=None):
        """Wait until the schedule's ramp-down ended the chaff."""
        self.thread.join(timeout)
        return not self.thread.is_alive()

    @property
    def running(self):
        """True while any stream may still send."""
        return self.thread.is_alive()

    def _run(self):
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self):
        self._stopping = asyncio.Event()
        workers = [asyncio.ensure_future(self._stream())
                   for _ in range(self.streams)]
        try:
            while not self._stopping.is_set():
                now = self.clock()
                if self.schedule.done(now):
                    break
                rate = 0.0
                if self.sent < self.budget:
                    rate = min(self.max_rate, self.schedule.rate(
                        now, self.migration_rate()))
                self.share = rate / self.streams
                try:
                    await asyncio.wait_for(self._stopping.wait(),
                                           CONTROL_TICK)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._stopping.set()
            # Streams see the stop within a tick and close cleanly.
            await asyncio.wait(workers, timeout=responder.CLOSE_TIMEOUT +
                               CONNECT_TIMEOUT)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for writer in list(self._open):
                writer.transport.abort()

    async def _close(self, writer):
        """close_notify and FIN; a reset if the peer does not answer."""
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(),
                                   responder.CLOSE_TIMEOUT)
        except (asyncio.TimeoutError, OSError, ssl.SSLError):
            writer.transport.abort()

    async def _stream(self):
        while not self._stopping.is_set():
            if self.sent >= self.budget:
                # Spent: no new stream (its first record would go over).
                await asyncio.sleep(CONTROL_TICK)
                continue
            address, ports = self.rng.choice(self.peers)
            port = self.rng.choice(ports)
            lifetime = self.rng.expovariate(1.0 / self.switch_mean)
            try:
                await self._one_stream(address, port, lifetime)
            except (OSError, ssl.SSLError, asyncio.TimeoutError) as e:
                self.errors += 1
                LOG.debug('chaff stream to [%s]:%d ended: %s', address,
                          port, e)
                await asyncio.sleep(0.2)

    async def _one_stream(self, address, port, lifetime):
        family = socket.AF_INET6 if ':' in address else socket.AF_INET
        sock = self.socket_factory(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock,
                                                        (address, port)),
                CONNECT_TIMEOUT)
            # No server name: QEMU's TLS migration sends none either.
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=self.tls, server_hostname='',
                ssl_handshake_timeout=CONNECT_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        self._open.add(writer)
        self.connections += 1
        answer = int(self.max_rate * self.answer_share / self.streams)
        drain = asyncio.ensure_future(self._discard(reader))
        try:
            # The rate request starts the first full record, so that no
            # short record of its own shows its size.
            first = self.source.chunk(records.FULL_RECORD -
                                      responder.HELLO.size)
            writer.write(responder.HELLO.pack(
                responder.MAGIC, answer, int(lifetime * 1000)) + bytes(first))
            self.sent += records.FULL_RECORD
            ends = self.clock() + lifetime
            tokens = 0.0
            last = self.clock()
            while not self._stopping.is_set() and self.clock() < ends:
                now = self.clock()
                tokens = min(tokens + self.share * (now - last),
                             max(self.share * 0.05, records.FULL_RECORD))
                last = now
                size = min(records.FULL_RECORD,
                           max(1, int(self.share * 0.05)))
                while tokens >= size and self.sent < self.budget:
                    writer.write(self.source.chunk(size))
                    tokens -= size
                    self.sent += size
                await writer.drain()
                await asyncio.sleep(PACE_TICK)
            # The responder closes first, once our data stopped; a stop
            # before then closes from here.
            closes = self.clock() + responder.CLOSE_GRACE + CLOSE_WAIT
            while (not self._stopping.is_set() and not drain.done() and
                   self.clock() < closes):
                await asyncio.wait([drain], timeout=PACE_TICK * 5)
        finally:
            # Read on while closing: data left unread in the kernel's
            # receive queue would make the close a reset.
            self._open.discard(writer)
            await self._close(writer)
            drain.cancel()

    async def _discard(self, reader):
        try:
            while await reader.read(65536):
                pass
        except (OSError, ssl.SSLError):
            pass
