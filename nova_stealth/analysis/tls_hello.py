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
"""A TLS ClientHello, parsed from a connection's first bytes, and its JA4.

The parser reads only what is there: every length is checked against the
bytes captured, and a hello cut short (by the snap length, or because it
spans TCP segments) is reported as truncated with the fields read so far.
It never raises on any input.

JA4 (FoxIO's TLS client fingerprint) is ``t13d1516h2_8daaf6152771_
e5627efa2ab1``: transport, highest offered version, SNI present (``d``) or
not (``i``), number of cipher suites and of extensions (GREASE values left
out), the first and last character of the first ALPN value; then the first
12 hex digits of the SHA-256 of the sorted cipher suites, and of the sorted
extensions (less SNI and ALPN) followed by the signature algorithms in
their order.
"""

import dataclasses
import hashlib
import struct

RECORD_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
EXT_SERVER_NAME = 0x0000
EXT_ALPN = 0x0010
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_SUPPORTED_VERSIONS = 0x002B
VERSIONS = {0x0304: '13', 0x0303: '12', 0x0302: '11', 0x0301: '10',
            0x0300: 's3', 0x0002: 's2', 0xFEFF: 'd1', 0xFEFD: 'd2',
            0xFEFC: 'd3'}


def is_grease(value):
    """RFC 8701's reserved values: 0x0a0a, 0x1a1a ... 0xfafa."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


@dataclasses.dataclass
class ClientHello(object):
    """The fields of a ClientHello that a fingerprint is made of."""

    legacy_version: int = 0
    ciphers: list = dataclasses.field(default_factory=list)
    extensions: list = dataclasses.field(default_factory=list)
    versions: list = dataclasses.field(default_factory=list)
    alpn: list = dataclasses.field(default_factory=list)
    signature_algorithms: list = dataclasses.field(default_factory=list)
    server_name: bool = False
    truncated: bool = False

    @property
    def version(self):
        """The highest version offered (supported_versions, else legacy)."""
        offered = [v for v in self.versions if not is_grease(v)]
        return max(offered) if offered else self.legacy_version

    def ja4(self, transport='t'):
        """The JA4 fingerprint, with ``~`` after it when truncated."""
        ciphers = [c for c in self.ciphers if not is_grease(c)]
        extensions = [e for e in self.extensions if not is_grease(e)]
        alpn = self.alpn[0] if self.alpn else ''
        alpn_code = (alpn[0] + alpn[-1]) if alpn else '00'
        if not alpn_code.isascii() or not alpn_code.isalnum():
            alpn_code = '99'
        head = '%s%s%s%02d%02d%s' % (
            transport, VERSIONS.get(self.version, '00'),
            'd' if self.server_name else 'i', min(len(ciphers), 99),
            min(len(extensions), 99), alpn_code)
        cipher_hash = _hash12(','.join('%04x' % c for c in sorted(ciphers)))
        rest = sorted(e for e in extensions
                      if e not in (EXT_SERVER_NAME, EXT_ALPN))
        text = ','.join('%04x' % e for e in rest)
        if self.signature_algorithms:
            text += '_' + ','.join('%04x' % a
                                   for a in self.signature_algorithms)
        fingerprint = '%s_%s_%s' % (head, cipher_hash, _hash12(text))
        return fingerprint + ('~' if self.truncated else '')

    def as_dict(self):
        """The fields, for report.json."""
        return {'version': '0x%04x' % self.version,
                'ciphers': ['0x%04x' % c for c in self.ciphers],
                'extensions': ['0x%04x' % e for e in self.extensions],
                'alpn': list(self.alpn), 'server_name': self.server_name,
                'truncated': self.truncated, 'ja4': self.ja4()}


def _hash12(text):
    if not text:
        return '000000000000'
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Cursor(object):
    """Bounds-checked big-endian reads; past the end, ``short`` is set."""

    def __init__(self, data, start=0, end=None):
        self.data = data
        self.position = start
        self.end = len(data) if end is None else min(end, len(data))
        self.short = False

    def take(self, size):
        if self.position + size > self.end:
            self.short = True
            self.position = self.end
            return None
        piece = self.data[self.position:self.position + size]
        self.position += size
        return piece

    def number(self, size):
        piece = self.take(size)
        return None if piece is None else int.from_bytes(piece, 'big')

    def vector(self, length_size):
        """A length-prefixed vector: (sub-cursor over what is there)."""
        length = self.number(length_size)
        if length is None:
            return None
        start = self.position
        if start + length > self.end:
            self.short = True
        sub = _Cursor(self.data, start, start + length)
        sub.short = self.short
        self.position = min(start + length, self.end)
        return sub

    def remaining(self):
        return self.end - self.position


def parse_client_hello(data):
    """A :class:`ClientHello` from a connection's first bytes, or None.

    None when the bytes are not a TLS handshake record holding a
    ClientHello. A hello cut short has ``truncated`` set.
    """
    if len(data) < 6 or data[0] != RECORD_HANDSHAKE or data[1] != 3 or (
            data[5] != HANDSHAKE_CLIENT_HELLO):
        return None
    record_length = struct.unpack('!H', data[3:5])[0]
    hello = ClientHello()
    cursor = _Cursor(data, 5, 5 + record_length)
    if 5 + record_length > len(data):
        hello.truncated = True
    cursor.take(1)
    body_length = cursor.number(3)
    if body_length is None:
        hello.truncated = True
        return hello
    hello.legacy_version = cursor.number(2) or 0
    cursor.take(32)
    cursor.vector(1)
    ciphers = cursor.vector(2)
    if ciphers is not None:
        while ciphers.remaining() >= 2:
            hello.ciphers.append(ciphers.number(2))
        hello.truncated |= ciphers.short
    cursor.vector(1)
    extensions = cursor.vector(2)
    if extensions is not None:
        _extensions(extensions, hello)
    hello.truncated |= cursor.short
    return hello


def _extensions(cursor, hello):
    while cursor.remaining() >= 4:
        kind = cursor.number(2)
        body = cursor.vector(2)
        hello.extensions.append(kind)
        if body is None:
            break
        if kind == EXT_SERVER_NAME:
            hello.server_name = True
        elif kind == EXT_SUPPORTED_VERSIONS:
            versions = body.vector(1)
            while versions is not None and versions.remaining() >= 2:
                hello.versions.append(versions.number(2))
        elif kind == EXT_SIGNATURE_ALGORITHMS:
            algorithms = body.vector(2)
            while algorithms is not None and algorithms.remaining() >= 2:
                hello.signature_algorithms.append(algorithms.number(2))
        elif kind == EXT_ALPN:
            names = body.vector(2)
            while names is not None and names.remaining() >= 1:
                name = names.vector(1)
                if name is None:
                    break
                value = name.take(name.remaining()) or b''
                hello.alpn.append(value.decode('ascii', 'replace'))
        if body.short:
            hello.truncated = True
    if cursor.short or cursor.remaining():
        hello.truncated = True
