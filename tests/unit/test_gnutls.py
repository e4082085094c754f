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
"""Chaff's GnuTLS sessions, end to end in memory, with the real libgnutls.

The network test that chaff's handshake is QEMU's is in
tests/functional/test_qemu_tls.py.
"""

import gc
import logging
import os
import ssl

import pytest

from nova_stealth.chaff import gnutls
from nova_stealth.chaff import tls
from nova_stealth import exception
from nova_stealth.testbed import x509


@pytest.fixture(scope='module')
def credentials(tmp_path_factory):
    root = tmp_path_factory.mktemp('x509')
    ca = x509.make_ca(str(root / 'ca'))
    rogue_ca = x509.make_ca(str(root / 'rogue-ca'), 'someone else')
    return {'host': x509.make_credentials(str(root / 'host'), ca),
            'rogue': x509.make_credentials(str(root / 'rogue'), rogue_ca)}


class Pair(object):
    """A client and a server session joined by four memory BIOs."""

    def __init__(self, client_dir, server_dir):
        self.bios = [ssl.MemoryBIO() for _ in range(4)]
        client_in, client_out, server_in, server_out = self.bios
        self.client = tls.client_context(client_dir).wrap_bio(
            client_in, client_out)
        self.server = tls.server_context(server_dir).wrap_bio(
            server_in, server_out, server_side=True)

    def pump(self):
        """Carry what each side wrote to the other; bytes carried."""
        client_in, client_out, server_in, server_out = self.bios
        carried = 0
        for source, target in ((client_out, server_in),
                               (server_out, client_in)):
            data = source.read()
            carried += len(data)
            target.write(data)
        return carried

    def step(self, action):
        """Run ``action`` on both sides until neither has more to say."""
        for _ in range(10):
            for end in (self.client, self.server):
                try:
                    action(end)
                except ssl.SSLWantReadError:
                    pass
            if not self.pump():
                return


def shake(end):
    end.do_handshake()


def test_sessions_shake_hands_and_carry_data(credentials):
    pair = Pair(credentials['host'], credentials['host'])
    pair.step(shake)
    assert pair.client.version() == 'TLSv1.3'
    name, protocol, bits = pair.client.cipher()
    assert protocol == 'TLSv1.3' and bits >= 128
    data = os.urandom(40000)
    taken = 0
    while taken < len(data):
        taken += pair.client.write(data[taken:])
    pair.pump()
    received = bytearray()
    buffer = bytearray(4096)
    while len(received) < len(data):
        count = pair.server.read(len(buffer), buffer)
        received += buffer[:count]
    assert bytes(received) == data


def test_one_record_at_a_time(credentials):
    pair = Pair(credentials['host'], credentials['host'])
    pair.step(shake)
    # As ssl.SSLObject.write: what one record holds; asyncio sends the
    # rest next.
    assert pair.client.write(bytes(100000)) == 16384


def test_close_notify_reads_as_the_end(credentials):
    pair = Pair(credentials['host'], credentials['host'])
    pair.step(shake)
    with pytest.raises(ssl.SSLWantReadError):
        pair.client.unwrap()
    pair.pump()
    assert pair.server.read(100) == b''
    pair.server.unwrap()  # the close_notify already came: no waiting
    pair.pump()
    pair.client.unwrap()


def test_a_certificate_of_another_ca_is_refused(credentials):
    pair = Pair(credentials['rogue'], credentials['host'])
    failures = []

    def shake_noting(end):
        try:
            end.do_handshake()
        except ssl.SSLWantReadError:
            raise
        except ssl.SSLError as e:
            failures.append(e)
    pair.step(shake_noting)
    assert failures
    assert isinstance(failures[0], ssl.SSLCertVerificationError)
    assert 'GnuTLS' in str(failures[0])


def test_garbage_is_a_tls_error(credentials):
    server_in = ssl.MemoryBIO()
    server = tls.server_context(credentials['host']).wrap_bio(
        server_in, ssl.MemoryBIO(), server_side=True)
    server_in.write(b'\x16\x03\x01\x00\x05\x01\x00\x00\x01\xff')
    with pytest.raises(ssl.SSLError) as caught:
        server.do_handshake()
    assert not isinstance(caught.value, ssl.SSLWantReadError)


def test_sessions_are_freed_without_the_cyclic_collector(credentials):
    before = set(gnutls._bios)
    gc.disable()
    try:
        for _ in range(50):
            Pair(credentials['host'], credentials['host']).step(shake)
        assert set(gnutls._bios) - before == set()
    finally:
        gc.enable()


def test_a_priority_gnutls_cannot_read_names_the_option(credentials):
    with pytest.raises(exception.InvalidOption) as caught:
        tls.client_context(credentials['host'], 'NORMAL:+NO-SUCH-THING')
    assert 'chaff_tls_priority' in str(caught.value)
    assert 'NO-SUCH-THING' in str(caught.value)


def test_unreadable_credentials_name_the_directory(tmp_path):
    with pytest.raises(exception.InvalidOption) as caught:
        tls.server_context(str(tmp_path))
    assert 'chaff_tls_x509_dir' in str(caught.value)


def test_sockets_are_not_quietly_openssl(credentials):
    context = tls.client_context(credentials['host'])
    with pytest.raises(NotImplementedError):
        context.wrap_socket(None)


def test_without_gnutls_openssl_stands_in_loudly(credentials, monkeypatch,
                                                 caplog):
    def unavailable():
        raise gnutls.Unavailable('cannot load GnuTLS (test)')
    monkeypatch.setattr(gnutls, 'library', unavailable)
    with caplog.at_level(logging.ERROR):
        context = tls.client_context(credentials['host'])
    assert not isinstance(context, gnutls.GnutlsContext)
    assert isinstance(context, ssl.SSLContext)
    assert 'OpenSSL' in caplog.text and 'fingerprint' in caplog.text
