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
other) the observer sees a TLS handshake and encrypted records only.
"""

import dpkt

from nova_stealth.testbed import qemu
from nova_stealth.testbed import x509
from tests.functional import netlab

MEMORY_MIB = 16
PORT = 61001


def migrate(link, workdir, tls_dir):
    """Migrate a small RAM guest src -> dst; (figures, payload bytes)."""
    image = qemu.random_image(str(workdir / 'ram.img'), MEMORY_MIB, 1)
    path = str(workdir / ('migration-%s.pcap' % bool(tls_dir)))
    vms = []
    dump = netlab.Tcpdump(link.src, path, '-i', 's0', '-s', '0',
                          'tcp port %d' % PORT)
    try:
        target = qemu.Vm(link.dst, str(workdir), 'dst', MEMORY_MIB, 'ram',
                         image, incoming=True, tls_dir=tls_dir)
        vms.append(target)
        origin = qemu.Vm(link.src, str(workdir), 'src', MEMORY_MIB, 'ram',
                         image, tls_dir=tls_dir)
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
