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
"""The audit's tells on real TCP between namespaces, captured by tcpdump.

A TLS connection made with Python's ssl (OpenSSL) and closed normally, and
a plaintext connection that starts like QEMU's migration stream and is
closed with a reset (SO_LINGER 0, as ``transport.abort()`` does).
"""

import json
import os
import socket
import ssl
import struct
import threading
import time

import pytest

from nova_stealth.cmd import audit as audit_cmd
from tests.functional import netlab

TLS_PORT, PLAIN_PORT = 49160, 61500
RECORDS = 400


def _certificate(directory):
    key, cert = directory / 'key.pem', directory / 'cert.pem'
    netlab.run('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
               '-keyout', str(key), '-out', str(cert), '-days', '1',
               '-subj', '/CN=migration.example')
    return str(cert), str(key)


def _drain(conn):
    with conn:
        while conn.recv(1 << 16):
            pass


@pytest.fixture(scope='module')
def audited(tmp_path_factory):
    work = tmp_path_factory.mktemp('tells')
    cert, key = _certificate(work)
    lab = netlab.Link().create()
    try:
        # Wire-sized packets: with segmentation offloads on, a busy sender
        # corks its records into 64 KiB segments, and the TLS flow once
        # fell under the audit's 100 packets.
        for ns, dev in ((lab.src, 's0'), (lab.dst, 'd0')):
            netlab.offloads_off(ns, dev)
        # Immediate mode: libpcap would otherwise hold the last packets
        # (the reset among them) for up to its buffer timeout. It gives
        # each packet a frame of the snap length, so the snap length is
        # what a ClientHello needs (not 256 KiB) and the buffer is large.
        dump = netlab.Tcpdump(lab.dst, str(work / 'link.pcap'), '-i', 'd0',
                              '-s', '4096', '-B', '65536',
                              '--immediate-mode', 'tcp')
        try:
            server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_context.load_cert_chain(cert, key)
            listeners = []
            for port in (TLS_PORT, PLAIN_PORT):
                with netlab.in_netns(lab.dst):
                    listener = socket.socket()
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,
                                    1)
                listener.bind((lab.DST_V4, port))
                listener.listen(4)
                listeners.append(listener)
            done = [threading.Event(), threading.Event()]
            threading.Thread(target=_serve_one, daemon=True, args=(
                listeners[0], server_context, True, done[0])).start()
            threading.Thread(target=_serve_one, daemon=True, args=(
                listeners[1], None, False, done[1])).start()
            client_context = ssl.create_default_context()
            client_context.check_hostname = False
            client_context.verify_mode = ssl.CERT_NONE
            # Named suites: Debian's python3 lists PSK suites by default
            # that OpenSSL leaves out of a hello without a PSK callback.
            client_context.set_ciphers(
                'ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM')
            client_context.set_alpn_protocols(['h2', 'http/1.1'])
            with netlab.in_netns(lab.src):
                plain = socket.create_connection((lab.DST_V4, TLS_PORT))
            tls = client_context.wrap_socket(
                plain, server_hostname='migration.example')
            for _ in range(RECORDS):
                tls.sendall(b't' * 1400)
            # Half-close and read to the end (the session tickets), so
            # that the kernel ends with FIN, not RST for unread data.
            tls.shutdown(socket.SHUT_WR)
            while tls.recv(1 << 16):
                pass
            tls.close()
            with netlab.in_netns(lab.src):
                reset = socket.create_connection((lab.DST_V4, PLAIN_PORT))
            reset.sendall(b'QEVM\x00\x00\x00\x03' + b'm' * 1400)
            for _ in range(RECORDS):
                reset.sendall(b'm' * 1400)
            reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack('ii', 1, 0))
            reset.close()
            for event in done:
                assert event.wait(20)
            for listener in listeners:
                listener.close()
            _settled(work / 'link.pcap')
        finally:
            dump.stop()
    finally:
        lab.destroy()
    out = work / 'out'
    assert audit_cmd.main([str(work / 'link.pcap'), '--out', str(out),
                           '--min-packets', '100', '--no-plots', '-q']) == 0
    report = json.loads((out / 'report.json').read_text())
    return {f['dport']: f for f in report['flows']}, client_context


def _settled(path, quiet_s=0.5, limit_s=15):
    """Wait for tcpdump to write what the kernel still holds for it."""
    size, since = -1, time.monotonic()
    deadline = since + limit_s
    while time.monotonic() < deadline:
        now = os.path.getsize(path)
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.05)


def _serve_one(listener, context, wrap, done):
    try:
        conn, _peer = listener.accept()
        if wrap:
            conn = context.wrap_socket(conn, server_side=True)
        try:
            _drain(conn)
        except (ssl.SSLError, ConnectionResetError):
            pass
    finally:
        done.set()


def test_real_tls_connection_gives_its_client_hello(audited):
    flows, client_context = audited
    tells = flows[TLS_PORT]['tells']
    assert tells['payload_prefix'] == 'tls-handshake'
    fields = tells['tls_fields']
    assert fields['alpn'] == ['h2', 'http/1.1']
    assert fields['server_name'] is True
    assert fields['version'] == '0x0304'
    assert not fields['truncated']
    offered = {cipher['id'] & 0xFFFF
               for cipher in client_context.get_ciphers()} | {0x00FF}
    assert {int(c, 16) for c in fields['ciphers']} == offered
    assert tells['tls_client_hello'].startswith('t13d%02d' % len(offered))
    assert tells['tls_client_hello'][6:10] == '%02dh2' % len(
        fields['extensions'])
    assert tells['ending'] == 'fin'
    assert tells['port_range'] == 'libvirt migration 49152-49215'


def test_connection_closed_with_a_reset(audited):
    flows, _client_context = audited
    tells = flows[PLAIN_PORT]['tells']
    assert tells['ending'] == 'rst'
    assert tells['payload_prefix'] == 'qemu-migration (QEVM)'
    assert tells['tls_client_hello'] == 'none'
    assert tells['server_port'] == str(PLAIN_PORT)
    # The TLS connection began just before, between the same two hosts.
    assert tells['co_timing_count'] == 1
