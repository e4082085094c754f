#!/usr/bin/env python3
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
"""Compare the chaff's TLS ClientHello with GnuTLS's, field by field.

QEMU's TLS migration is a GnuTLS client with the priority ``NORMAL``
unless told otherwise; ``gnutls-cli`` (Debian's gnutls-bin) with the same
priority stands in for it. Both connect to a listener on loopback that
keeps the first record and closes; the chaff's hello comes from
:func:`nova_stealth.chaff.tls.client_context` through asyncio, as the
chaff sender makes it (GnuTLS), or with ``--openssl`` from the OpenSSL
context that stands in where libgnutls is missing. Prints each field of
both hellos, whether they are equal, and a JA4-style summary (version,
cipher count, extension count, sorted cipher and extension lists) for
each. Random values (the client random, the session id, the key shares'
keys) differ from one hello to the next, whoever makes them.

    python benchmarks/client_hello.py [--priority NORMAL] [--qemu-hello F]
        [--openssl]
"""

import argparse
import asyncio
import hashlib
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading

from nova_stealth.chaff import tls
from nova_stealth.testbed import x509

EXTENSIONS = {0: 'server_name', 5: 'status_request', 10: 'supported_groups',
              11: 'ec_point_formats', 13: 'signature_algorithms',
              16: 'alpn', 22: 'encrypt_then_mac',
              23: 'extended_master_secret', 35: 'session_ticket',
              41: 'pre_shared_key', 42: 'early_data',
              43: 'supported_versions', 45: 'psk_key_exchange_modes',
              49: 'post_handshake_auth', 50: 'signature_algorithms_cert',
              51: 'key_share', 65281: 'renegotiation_info', 21: 'padding',
              28: 'record_size_limit'}


def capture_hello(connect):
    """The first TLS record a client sends, with ``connect(port)``."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    got = {}

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(5)
        data = b''
        while len(data) < 5 or len(data) < 5 + struct.unpack(
                '!H', data[3:5])[0]:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        got['record'] = data
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        connect(port)
    except (OSError, ssl.SSLError, subprocess.SubprocessError):
        pass
    thread.join(10)
    listener.close()
    return got['record']


def _vector(data, offset, width):
    length = int.from_bytes(data[offset:offset + width], 'big')
    return data[offset + width:offset + width + length], (
        offset + width + length)


def parse_hello(record):
    """The ClientHello's fields, as a dict of comparable values."""
    body = record[5:]
    assert body[0] == 1, 'not a ClientHello'
    hello = body[4:]
    fields = {'record_version': '0x%04x' % struct.unpack('!H', record[1:3]),
              'record_length': struct.unpack('!H', record[3:5])[0],
              'legacy_version': '0x%04x' % struct.unpack('!H', hello[:2])}
    offset = 2 + 32
    session_id, offset = _vector(hello, offset, 1)
    fields['session_id_length'] = len(session_id)
    ciphers, offset = _vector(hello, offset, 2)
    fields['cipher_suites'] = ['0x%04x' % c for c in struct.unpack(
        '!%dH' % (len(ciphers) // 2), ciphers)]
    compression, offset = _vector(hello, offset, 1)
    fields['compression'] = list(compression)
    extensions, offset = _vector(hello, offset, 2)
    order = []
    position = 0
    while position < len(extensions):
        kind, length = struct.unpack('!HH', extensions[position:position + 4])
        data = extensions[position + 4:position + 4 + length]
        position += 4 + length
        name = EXTENSIONS.get(kind, str(kind))
        order.append(name)
        if name in ('supported_groups', 'signature_algorithms'):
            inner = data[2:]
            fields[name] = ['0x%04x' % v for v in struct.unpack(
                '!%dH' % (len(inner) // 2), inner)]
        elif name == 'supported_versions':
            inner = data[1:]
            fields[name] = ['0x%04x' % v for v in struct.unpack(
                '!%dH' % (len(inner) // 2), inner)]
        elif name == 'key_share':
            shares, at = [], 2
            while at < len(data):
                group, size = struct.unpack('!HH', data[at:at + 4])
                shares.append('0x%04x' % group)
                at += 4 + size
            fields[name] = shares
        elif name in ('ec_point_formats', 'psk_key_exchange_modes'):
            fields[name] = list(data[1:])
        elif name == 'padding':
            fields[name] = len(data)
    fields['extensions'] = order
    return fields


def ja4_like(fields):
    """Version, counts, and hashes of sorted ciphers and extensions."""
    versions = fields.get('supported_versions', [fields['legacy_version']])
    ciphers = sorted(c for c in fields['cipher_suites'] if c != '0x00ff')
    extensions = sorted(e for e in fields['extensions']
                        if e not in ('server_name', 'alpn'))
    label = {'0x0304': '13', '0x0303': '12'}.get(versions[0], '00')
    return 't%s%s%02d%02d_%s_%s' % (
        label, 'd' if 'server_name' in fields['extensions']
        else 'i', len(ciphers), len(fields['extensions']),
        hashlib.sha256(','.join(ciphers).encode()).hexdigest()[:12],
        hashlib.sha256(','.join(extensions).encode()).hexdigest()[:12])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--priority', default='NORMAL',
                        help="GnuTLS priority string (QEMU's default)")
    parser.add_argument('--qemu-hello', metavar='FILE',
                        help="compare with QEMU's own ClientHello record "
                             '(tests/functional/test_qemu_tls.py keeps one '
                             'from a migration over native TLS) instead '
                             'of gnutls-cli\'s')
    parser.add_argument('--openssl', action='store_true',
                        help='the OpenSSL stand-in\'s hello, not GnuTLS\'s')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        creds = x509.make_credentials(os.path.join(work, 'host'),
                                      x509.make_ca(os.path.join(work, 'ca')))

        def gnutls(port):
            subprocess.run(
                ['gnutls-cli', '--insecure', '--no-ca-verification',
                 '--priority', args.priority, '--x509certfile',
                 os.path.join(creds, tls.CLIENT_CERT), '--x509keyfile',
                 os.path.join(creds, tls.CLIENT_KEY), '-p', str(port),
                 '127.0.0.1'], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                timeout=10)

        def chaff(port):
            if args.openssl:
                sock = socket.create_connection(('127.0.0.1', port))
                tls.openssl_client_context(creds).wrap_socket(
                    sock, server_hostname=None)
                return
            context = tls.client_context(creds, args.priority)

            async def connect():
                await asyncio.wait_for(asyncio.open_connection(
                    '127.0.0.1', port, ssl=context, server_hostname=''), 10)
            asyncio.run(connect())

        if args.qemu_hello:
            with open(args.qemu_hello, 'rb') as record:
                reference = record.read()
        else:
            reference = capture_hello(gnutls)
        hellos = {'gnutls': parse_hello(reference),
                  'chaff': parse_hello(capture_hello(chaff))}
    names = []
    for fields in hellos.values():
        names += [name for name in fields if name not in names]
    same = 0
    for name in names:
        a, b = hellos['gnutls'].get(name), hellos['chaff'].get(name)
        same += a == b
        print('%-22s %s\n  gnutls %s\n  chaff  %s' % (
            name, 'same' if a == b else 'DIFFERENT', a, b))
    common = set(hellos['gnutls']['cipher_suites']) & set(
        hellos['chaff']['cipher_suites'])
    print('fields equal: %d of %d; cipher suites in common: %d (gnutls %d, '
          'chaff %d)' % (same, len(names), len(common),
                         len(hellos['gnutls']['cipher_suites']),
                         len(hellos['chaff']['cipher_suites'])))
    for who, fields in hellos.items():
        print('JA4-like %-6s %s' % (who, ja4_like(fields)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
