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
"""Background traffic: users from a Markov model, over real TCP.

A server on each background host answers four kinds of request on four
ports; users on the other host move between activities along a Markov
chain, each with think times:

* ``web``: a page and a few objects of log-normal sizes on one
  connection, then reading time;
* ``video``: chunks of variable size fetched ON/OFF every 1.5 to 2.5 s,
  as a streaming player fills its buffer;
* ``bulk``: one large FTP-like download;
* ``mail``: a small upload and a short answer.

Requests are 8 bytes: the size wanted (download), or the size to follow
with the top bit set (upload). Run as ``python -m
nova_stealth.testbed.traffic server|users`` inside a namespace; ``users``
prints a JSON line of what it moved when it gets SIGTERM.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import struct

REQUEST = struct.Struct('!Q')
UPLOAD = 1 << 63
PORTS = {'web': 18080, 'video': 18081, 'bulk': 18021, 'mail': 18025}
#: Activity -> (next activity -> probability).
CHAIN = {
    'web': {'web': 0.70, 'video': 0.10, 'bulk': 0.05, 'mail': 0.15},
    'video': {'web': 0.50, 'video': 0.30, 'bulk': 0.05, 'mail': 0.15},
    'bulk': {'web': 0.60, 'video': 0.20, 'bulk': 0.05, 'mail': 0.15},
    'mail': {'web': 0.70, 'video': 0.15, 'bulk': 0.05, 'mail': 0.10},
}
CHUNK = 1 << 16
PAYLOAD = os.urandom(1 << 20)


async def _serve(reader, writer):
    try:
        while True:
            request = REQUEST.unpack(await reader.readexactly(REQUEST.size))
            size = request[0]
            if size & UPLOAD:
                await reader.readexactly(size & ~UPLOAD)
                size = 256
            offset = 0
            while size > 0:
                piece = min(size, CHUNK)
                start = offset % (len(PAYLOAD) - CHUNK)
                writer.write(PAYLOAD[start:start + piece])
                offset += piece
                size -= piece
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(address):
    """Answer requests on every port until cancelled."""
    servers = [await asyncio.start_server(_serve, address, port)
               for port in PORTS.values()]
    print(json.dumps({'ready': True}), flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


class User(object):
    """One user's Markov chain of activities."""

    def __init__(self, server, rng, totals):
        self.server = server
        self.rng = rng
        self.totals = totals

    def _size(self, median, sigma, cap):
        return int(min(cap, self.rng.lognormvariate(0, sigma) * median))

    async def _fetch(self, kind, sizes, gap=lambda: 0.0, upload=0):
        reader, writer = await asyncio.open_connection(self.server,
                                                       PORTS[kind])
        try:
            if upload:
                writer.write(REQUEST.pack(UPLOAD | upload))
                writer.write(PAYLOAD[:upload])
                sizes = [256]
            for index, size in enumerate(sizes):
                if not upload:
                    writer.write(REQUEST.pack(size))
                await reader.readexactly(size)
                self.totals[kind] = self.totals.get(kind, 0) + size
                if index + 1 < len(sizes):
                    await asyncio.sleep(gap())
        finally:
            writer.close()

    async def run(self):
        kind = self.rng.choice(list(CHAIN))
        await asyncio.sleep(self.rng.uniform(0, 5))
        while True:
            try:
                await self._activity(kind)
            except (OSError, asyncio.IncompleteReadError):
                await asyncio.sleep(1.0)
            nxt = CHAIN[kind]
            kind = self.rng.choices(list(nxt), weights=list(nxt.values()))[0]

    async def _activity(self, kind):
        rng = self.rng
        if kind == 'web':
            objects = [self._size(60e3, 1.2, 4e6)] + [
                self._size(20e3, 1.5, 2e6) for _ in range(rng.randint(0, 8))]
            await self._fetch('web', objects, gap=lambda: rng.expovariate(
                1 / 0.05))
            await asyncio.sleep(rng.expovariate(1 / 4.0))
        elif kind == 'video':
            chunks = max(1, int(rng.expovariate(1 / 12.0)))
            bitrate = rng.choice((250e3, 500e3, 1e6))
            # Variable bit rate: every chunk of a different size.
            await self._fetch('video', [self._size(bitrate, 0.3, 4e6)
                                        for _ in range(chunks)],
                              gap=lambda: rng.uniform(1.5, 2.5))
            await asyncio.sleep(rng.expovariate(1 / 2.0))
        elif kind == 'bulk':
            await self._fetch('bulk', [self._size(8e6, 0.8, 60e6)])
            await asyncio.sleep(rng.expovariate(1 / 10.0))
        else:
            await self._fetch('mail', [], upload=self._size(20e3, 1.0, 1e6))
            await asyncio.sleep(rng.expovariate(1 / 8.0))


async def users(server, count, seed):
    """Run ``count`` users against ``server`` until SIGTERM."""
    await run_users(lambda rng, totals: User(server, rng, totals).run(),
                    count, seed)


async def run_users(user, count, seed):
    """Run ``count`` coroutines ``user(rng, totals)`` until SIGTERM.

    Each has a random generator of its own; ``totals`` is shared. Prints a
    JSON line when they run and one of ``totals`` when they are stopped.
    """
    totals = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.ensure_future(
        user(random.Random('%s-%d' % (seed, n)), totals))
        for n in range(count)]
    print(json.dumps({'ready': True}), flush=True)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({'bytes': totals}), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='nova-stealth-testbed-traffic')
    sub = parser.add_subparsers(dest='role', required=True)
    server = sub.add_parser('server')
    server.add_argument('--address', required=True)
    client = sub.add_parser('users')
    client.add_argument('--server', required=True)
    client.add_argument('--count', type=int, required=True)
    client.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.role == 'server':
        asyncio.run(serve(args.address))
    else:
        asyncio.run(users(args.server, args.count, args.seed))


if __name__ == '__main__':
    main()
