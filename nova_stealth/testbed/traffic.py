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
with the top bit set (upload). With ``--tls-dir`` every connection is TLS,
as most Internet traffic is: the server holds a certificate of its own CA
(not the compute nodes'), users speak OpenSSL, as Python's ssl and most
clients on Linux do, with a server name and ALPN, as browsers do. Run as
``python -m nova_stealth.testbed.traffic server|users`` inside a
namespace; ``users`` prints a JSON line of what it moved when it gets
SIGTERM.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import ssl
import struct

from nova_stealth.chaff import tls as chaff_tls

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
#: The server name background users ask for (RFC 2606's reserved domain).
SERVER_NAME = 'www.example.net'
ALPN = ['h2', 'http/1.1']


def server_tls(tls_dir):
    """The background servers' TLS context, or None for plain TCP.

    :param tls_dir: x509 credentials in QEMU's layout
        (:func:`nova_stealth.testbed.x509.make_credentials`), or None
    """
    if tls_dir is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(tls_dir, chaff_tls.SERVER_CERT),
                            os.path.join(tls_dir, chaff_tls.SERVER_KEY))
    context.set_alpn_protocols(ALPN)
    return context


def client_tls(tls_dir):
    """The background users' TLS context, or None for plain TCP."""
    if tls_dir is None:
        return None
    context = ssl.create_default_context(
        cafile=os.path.join(tls_dir, chaff_tls.CA))
    # The certificate names the testbed's host, not SERVER_NAME.
    context.check_hostname = False
    context.set_alpn_protocols(ALPN)
    return context


def tls_arguments(context):
    """open_connection's keywords for ``context`` (none for plain TCP)."""
    if context is None:
        return {}
    return {'ssl': context, 'server_hostname': SERVER_NAME}


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


async def serve(address, tls=None):
    """Answer requests on every port until cancelled.

    :param tls: the servers' SSLContext (:func:`server_tls`), or None
    """
    servers = [await asyncio.start_server(_serve, address, port, ssl=tls)
               for port in PORTS.values()]
    print(json.dumps({'ready': True}), flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


class User(object):
    """One user's Markov chain of activities."""

    def __init__(self, server, rng, totals, tls=None):
        self.server = server
        self.rng = rng
        self.totals = totals
        self.tls = tls_arguments(tls)

    def _size(self, median, sigma, cap):
        return int(min(cap, self.rng.lognormvariate(0, sigma) * median))

    async def _fetch(self, kind, sizes, gap=lambda: 0.0, upload=0):
        reader, writer = await asyncio.open_connection(
            self.server, PORTS[kind], **self.tls)
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


async def users(server, count, seed, tls=None):
    """Run ``count`` users against ``server`` until SIGTERM.

    :param tls: the users' SSLContext (:func:`client_tls`), or None
    """
    await run_users(lambda rng, totals: User(server, rng, totals,
                                             tls).run(), count, seed)


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
    for role in (server, client):
        role.add_argument('--tls-dir', help='speak TLS, with these x509 '
                          'credentials (QEMU\'s layout)')
    args = parser.parse_args(argv)
    if args.role == 'server':
        asyncio.run(serve(args.address, server_tls(args.tls_dir)))
    else:
        asyncio.run(users(args.server, args.count, args.seed,
                          client_tls(args.tls_dir)))


if __name__ == '__main__':
    main()
