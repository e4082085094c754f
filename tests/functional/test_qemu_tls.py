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
"""The testbed's QEMU migrating over native TLS, with real QEMU and TCP.

A plain migration opens with QEMU's stream header ("QEVM") in cleartext;
over TLS (tls-creds-x509 made by the testbed, each end verifying the
other) the observer sees a TLS handshake and encrypted records only. And
chaff's handshake, with the same credentials, is the migration's: the
same client hello and the same records in both directions.
"""

import collections
import socket
import time

import dpkt
import pytest

from nova_stealth.analysis import tls_hello
from nova_stealth.chaff import gnutls
from nova_stealth.chaff import schedules
from nova_stealth.chaff import sender as sender_lib
from nova_stealth.testbed import qemu
from nova_stealth.testbed import x509
from tests.functional import chaffnet
from tests.functional import netlab

MEMORY_MIB = 16
PORT = 61001
CHAFF_PORT = 61500
#: Records of a TLS 1.3 handshake with client certificates, each way: the
#: client's hello, change-cipher spec, certificate, certificate verify and
#: finished; the server's hello, change-cipher spec, encrypted extensions,
#: certificate request, certificate, certificate verify and finished.
CLIENT_RECORDS, SERVER_RECORDS = 5, 7
#: An encrypted TLS 1.3 alert (close_notify): 2 bytes, type, 16 of tag.
ALERT_RECORD = 19


def streams(path, port):
    """{(client port, 'client'|'server'): payload bytes in order}."""
    segments = collections.defaultdict(dict)
    with open(path, 'rb') as capture_file:
        for _, frame in dpkt.pcap.Reader(capture_file):
            segment = dpkt.ethernet.Ethernet(frame).data.data
            if not segment.data:
                continue
            if segment.dport == port:
                key = (segment.sport, 'client')
            else:
                key = (segment.dport, 'server')
            segments[key].setdefault(segment.seq, bytes(segment.data))
    return {key: b''.join(data for _, data in sorted(by_seq.items()))
            for key, by_seq in segments.items()}


def records(data):
    """(content type, length) of each TLS record."""
    found, at = [], 0
    while at + 5 <= len(data):
        length = int.from_bytes(data[at + 3:at + 5], 'big')
        found.append((data[at], length))
        at += 5 + length
    return found


def migrate(link, workdir, tls_dir, binary=qemu.QEMU):
    """Migrate a small RAM guest src -> dst; (figures, payload bytes)."""
    image = qemu.random_image(str(workdir / 'ram.img'), MEMORY_MIB, 1)
    path = str(workdir / ('migration-%s.pcap' % bool(tls_dir)))
    vms = []
    dump = netlab.Tcpdump(link.src, path, '-i', 's0', '-s', '0',
                          'tcp port %d' % PORT)
    try:
        target = qemu.Vm(link.dst, str(workdir), 'dst', MEMORY_MIB, 'ram',
                         image, incoming=True, tls_dir=tls_dir,
                         binary=binary)
        vms.append(target)
        origin = qemu.Vm(link.src, str(workdir), 'src', MEMORY_MIB, 'ram',
                         image, tls_dir=tls_dir, binary=binary)
        vms.append(origin)
        target.listen(link.DST_V4, PORT)
        figures = origin.migrate(link.DST_V4, PORT, 256 << 20, timeout=120)
        target.wait_running(30)
    finally:
        for vm in vms:
            vm.stop()
        dump.stop()
    sent = bytearray()
    with open(path, 'rb') as capture_file:
        for _, frame in dpkt.pcap.Reader(capture_file):
            segment = dpkt.ethernet.Ethernet(frame).data.data
            if segment.dport == PORT:
                sent += segment.data
    return figures, bytes(sent)


def handshake(directions):
    """The first connection's hello, and its records each way."""
    first = min(client for client, _ in directions)
    client, server = directions[first, 'client'], directions[first, 'server']
    return tls_hello.parse_client_hello(client), {
        'client': records(client), 'server': records(server)}


def same_shape(ours, theirs):
    """Same record types, and lengths within 2 bytes.

    An ECDSA signature's DER encoding, and so a certificate's, varies by
    that much from one to the next.
    """
    return len(ours) == len(theirs) and all(
        a[0] == b[0] and abs(a[1] - b[1]) <= 2 for a, b in zip(ours, theirs))


def chaff_handshake(link, workdir, tls_dir):
    """One chaff stream's handshake, from a real sender and responder."""
    path = str(workdir / 'chaff.pcap')
    responder = chaffnet.Responder(link, tls_dir)
    dump = netlab.Tcpdump(link.src, path, '-i', 's0', '-s', '0',
                          'tcp port %d' % CHAFF_PORT)

    def in_src(family, kind):
        with netlab.in_netns(link.src):
            return socket.socket(family, kind)
    try:
        schedule = schedules.load('constant', 256 << 10, lead=(0, 0),
                                  tail=(60, 60), seed=3)
        sender = sender_lib.ChaffSender(
            [(link.DST_V4, [CHAFF_PORT])], schedule, max_rate=1 << 20,
            budget=64 << 20, tls_dir=tls_dir, streams=1, switch_mean=60.0,
            seed=3, socket_factory=in_src)
        sender.start()
        time.sleep(1.5)
        sender.stop()
    finally:
        dump.stop()
        responder.stop()
    return handshake(streams(path, CHAFF_PORT))


@pytest.mark.parametrize('binary', [qemu.QEMU, qemu.recent_binary()],
                         ids=['system-qemu', 'recent-qemu'])
def test_chaff_shakes_hands_as_the_migration_does(link, tmp_path, binary):
    assert binary, ('no QEMU >= 8.2 here: tools/setup-host.sh unpacks '
                    'the backports\' one')
    ca = x509.make_ca(str(tmp_path / 'ca'))
    tls_dir = x509.make_credentials(str(tmp_path / 'host'), ca)
    migrate(link, tmp_path, tls_dir, binary)
    qemu_hello, qemu_records = handshake(
        streams(str(tmp_path / 'migration-True.pcap'), PORT))
    chaff_hello, chaff_records = chaff_handshake(link, tmp_path, tls_dir)
    for name, hello, found in (('QEMU', qemu_hello, qemu_records),
                               ('chaff', chaff_hello, chaff_records)):
        print('%-5s %s client %s... server %s' % (
            name, hello.ja4(), found['client'][:CLIENT_RECORDS + 2],
            found['server']))
    print('QEMU %s, GnuTLS %s' % ('.'.join(
        map(str, qemu.binary_version(binary))), gnutls.version()))
    assert qemu_hello.ja4() == chaff_hello.ja4()
    # Every field read, in order: versions, suites, extensions, signature
    # algorithms (and the hello's length, among the records).
    assert vars(qemu_hello) == vars(chaff_hello)
    assert same_shape(qemu_records['client'][:CLIENT_RECORDS],
                      chaff_records['client'][:CLIENT_RECORDS])
    assert same_shape(qemu_records['server'][:SERVER_RECORDS],
                      chaff_records['server'][:SERVER_RECORDS])
    # After the handshake a migration's destination sends no record, and
    # a chaff responder none but its close_notify.
    assert qemu_records['server'][SERVER_RECORDS:] == []
    assert all(length == ALERT_RECORD for _, length in
               chaff_records['server'][SERVER_RECORDS:])


def test_native_tls_hides_the_stream_header(link, tmp_path):
    ca = x509.make_ca(str(tmp_path / 'ca'))
    tls_dir = x509.make_credentials(str(tmp_path / 'host'), ca)
    _, plain = migrate(link, tmp_path, None)
    tls_figures, encrypted = migrate(link, tmp_path, tls_dir)
    assert plain.startswith(b'QEVM')
    assert tls_figures['transferred_bytes'] >= MEMORY_MIB << 19
    # A TLS handshake record opens the stream, and QEMU's header is
    # nowhere in it.
    assert encrypted[:1] == b'\x16' and encrypted[1:3] in (
        b'\x03\x01', b'\x03\x03')
    assert b'QEVM' not in encrypted
    (tmp_path / 'qemu-client-hello.bin').write_bytes(
        encrypted[:5 + int.from_bytes(encrypted[3:5], 'big')])
