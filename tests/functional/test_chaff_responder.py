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
"""The chaff responder, as its own process in a namespace, with real TCP.

The source namespace has 198.18.7.1 inside the responder's peer network
198.18.7.0/28 and 198.18.7.100 outside it.
"""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from nova_stealth.chaff import responder as responder_lib
from nova_stealth.chaff import tls
from tests.functional import chaffnet
from tests.functional import netlab

UNKNOWN = '198.18.7.100'


@pytest.fixture(scope='module')
def credentials(tmp_path_factory):
    return chaffnet.make_credentials(tmp_path_factory.mktemp('x509'))


@pytest.fixture
def lab(link):
    netlab.run('ip', '-n', link.src, 'addr', 'add', UNKNOWN + '/24', 'dev',
               's0')
    return link


def test_serves_known_peers_at_the_rate_asked(lab, credentials):
    responder = chaffnet.Responder(lab, credentials['host'])
    try:
        stream = chaffnet.Stream(lab, credentials['host'], 1 << 20)
        assert stream.sock.version() == 'TLSv1.3'
        time.sleep(0.5)
        start = time.monotonic()
        time.sleep(2.0)
        rate = stream.rate(start, time.monotonic())
        stream.close()
    finally:
        stats = responder.stop()
    assert 0.85 * (1 << 20) <= rate <= 1.15 * (1 << 20)
    assert stats['stats']['streams'] == 1


def test_refuses_peers_outside_the_networks(lab, credentials):
    responder = chaffnet.Responder(lab, credentials['host'])
    try:
        try:
            stranger = chaffnet.connect(lab, UNKNOWN)
            # Reset before any TLS: not even a ServerHello.
            stranger.sendall(os.urandom(300))
            assert chaffnet.refused(stranger)
            stranger.close()
        except ConnectionResetError:
            pass  # reset before connect() returned
    finally:
        stats = responder.stop()
    assert stats['stats'] == {'refused_unknown_peer': 1}
    assert stats['sent'] == {}


def test_a_stream_asking_for_nothing_is_one_way(lab, credentials):
    # What chaff senders ask for: nothing back, as from a migration's
    # destination; the responder closes cleanly once the lifetime is over.
    responder = chaffnet.Responder(lab, credentials['host'])
    try:
        sock = chaffnet.connect_tls(lab, lab.SRC_V4, credentials['host'])
        start = time.monotonic()
        sock.sendall(chaffnet.hello(0, lifetime=1.0))
        received = sock.recv(65536)
        elapsed = time.monotonic() - start
        sock.close()
    finally:
        stats = responder.stop()
    assert received == b''  # close_notify, no data
    assert 1.0 <= elapsed < 1.0 + 2 * responder_lib.CLOSE_GRACE + 1.0
    assert stats['stats'] == {'streams': 1}
    assert stats['sent'] == {}


def test_refuses_certificates_the_ca_did_not_sign(lab, credentials):
    responder = chaffnet.Responder(lab, credentials['host'])
    try:
        # A client that trusts our CA but holds another CA's certificate.
        context = tls.openssl_client_context(credentials['rogue'])
        context.load_verify_locations(
            os.path.join(credentials['ca'], tls.CA))
        for _ in range(3):
            rogue = context.wrap_socket(chaffnet.connect(lab, lab.SRC_V4),
                                        server_hostname=None)
            rogue.sendall(chaffnet.hello(1000))
            assert chaffnet.refused(rogue)
            rogue.close()
        plain = chaffnet.connect(lab, lab.SRC_V4)
        plain.sendall(chaffnet.hello(1000))
        assert chaffnet.refused(plain)
        plain.close()
    finally:
        stats = responder.stop()
    assert stats['stats']['refused_bad_certificate'] == 3
    assert stats['stats']['refused_bad_tls'] == 1
    assert 'streams' not in stats['stats'] and stats['sent'] == {}


def test_malformed_tls_costs_no_memory(lab, credentials):
    responder = chaffnet.Responder(lab, credentials['host'],
                                   '--max-per-peer', '64')
    try:
        stream = chaffnet.Stream(lab, credentials['host'], 1 << 20)
        time.sleep(1.0)
        before = responder.rss_kib()
        start = time.monotonic()
        rss = []
        for wave in range(40):
            # 200 a second, as a careless or hostile peer might.
            time.sleep(0.25)
            socks = []
            for index in range(50):
                sock = chaffnet.connect(lab, lab.SRC_V4, 61501 + index % 3)
                # A TLS record and a client hello's header, then garbage.
                # (Random bytes where the hello's header should be make
                # GnuTLS, as QEMU, wait up to hello_timeout for the rest
                # of a message as long as they say: hello_timeout.)
                sock.sendall(b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc' +
                             os.urandom(508))
                socks.append(sock)
            for sock in socks:
                assert chaffnet.refused(sock)
                sock.close()
            rss.append(responder.rss_kib())
        rate = stream.rate(start, time.monotonic())
        stream.close()
    finally:
        stats = responder.stop()
    print('responder RSS %d KiB before, after each 500 malformed '
          'handshakes: %s' % (before, rss[9::10]))
    assert stats['stats']['refused_bad_tls'] == 2000
    assert rate >= 0.8 * (1 << 20), rate
    # The first few hundred take the allocator to a plateau; the next
    # 1,500 do not grow it.
    assert max(rss) - before < 64 * 1024, (before, rss)
    assert max(rss[10:]) - rss[9] < 16 * 1024, rss


def test_limits_connections_per_peer(lab, credentials):
    responder = chaffnet.Responder(lab, credentials['host'],
                                   '--max-per-peer', '2')
    try:
        streams = [chaffnet.Stream(lab, credentials['host'], 10000,
                                   61500 + i) for i in range(2)]
        time.sleep(0.3)
        try:
            third = chaffnet.connect(lab, lab.SRC_V4, 61502)
        except ConnectionResetError:
            pass  # reset before connect() returned: refused all the same
        else:
            assert chaffnet.refused(third)
            third.close()
        for stream in streams:
            stream.close()
    finally:
        stats = responder.stop()
    assert stats['stats']['refused_peer_limit'] == 1
    assert stats['stats']['streams'] == 2


def test_flood_from_unknown_peer(lab, credentials):
    responder = chaffnet.Responder(lab, credentials['host'])
    try:
        stream = chaffnet.Stream(lab, credentials['host'], 1 << 20)
        time.sleep(1.0)
        before = responder.rss_kib()
        start = time.monotonic()
        flood = []
        for index in range(1000):
            with netlab.in_netns(lab.src):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((UNKNOWN, 0))
            sock.setblocking(False)
            sock.connect_ex((lab.DST_V4, 61500 + index % 4))
            flood.append(sock)
        time.sleep(2.0)
        stop = time.monotonic()
        during = responder.rss_kib()
        rate = stream.rate(start, stop)
        for sock in flood:
            sock.close()
        stream.close()
    finally:
        stats = responder.stop()
    assert stats['stats']['refused_unknown_peer'] >= 990
    assert rate >= 0.8 * (1 << 20), rate
    assert during - before < 16 * 1024, (before, during)


def test_nothing_listens_after_stop(lab, credentials):
    responder = chaffnet.Responder(lab, credentials['host'])
    listening = netlab.run('ip', 'netns', 'exec', lab.dst, 'ss', '-ltn')
    assert ':61500 ' in listening and ':61503 ' in listening
    responder.stop()
    assert responder.process.returncode == 0
    listening = netlab.run('ip', 'netns', 'exec', lab.dst, 'ss', '-ltn')
    assert ':615' not in listening


class Flooder(object):
    """Compute nodes that open streams, ask for a rate and never read.

    Each address opens ``per_address`` connections, then one more every
    ``every`` seconds, and never closes one until the end.
    """

    def __init__(self, lab, addresses, tls_dir, per_address, every=0.25):
        self.lab, self.addresses, self.tls_dir = lab, addresses, tls_dir
        self.per_address, self.every = per_address, every
        self.socks, self.accepted = [], 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        opened = dict.fromkeys(self.addresses, 0)
        while not self.stopping.wait(self.every):
            for address in self.addresses:
                for _ in range(max(1, self.per_address - opened[address])):
                    try:
                        sock = chaffnet.connect_tls(
                            self.lab, address, self.tls_dir,
                            61500 + len(self.socks) % 4)
                        sock.sendall(chaffnet.hello(4 << 20))
                    except OSError:
                        break
                    self.socks.append(sock)
                    self.accepted += 1
                    opened[address] += 1

    def close(self):
        self.stopping.set()
        self.thread.join()
        for sock in self.socks:
            sock.close()


def test_flood_of_peers_that_never_read(lab, credentials):
    # Issue 12: 8 addresses x 16 connections that ask for data and never
    # read held every slot of the responder and hundreds of MiB of send
    # queue, and every other peer was refused.
    flooders = ['198.18.7.%d' % n for n in range(3, 11)]
    for address in flooders:
        netlab.run('ip', '-n', lab.src, 'addr', 'add', address + '/24',
                   'dev', 's0')
    responder = chaffnet.Responder(
        lab, credentials['host'], '--max-connections', '128',
        '--max-per-peer', '16', '--peer-rate-mib', '8',
        '--stall-seconds', '1', '--stall-penalty-seconds', '60')
    flood = stream = None
    queued, rss = [], []
    try:
        before = responder.rss_kib()
        flood = Flooder(lab, flooders, credentials['host'], 16)
        time.sleep(1.0)
        # Every slot is taken now; the honest peer keeps trying.
        deadline = time.monotonic() + 15.0
        while stream is None and time.monotonic() < deadline:
            # Served means data came: the stream's own reader says so.  A
            # second reader on the same TLS socket would race it for
            # records and can leave its reader dead (0 B/s, seen once).
            try:
                stream = chaffnet.Stream(lab, credentials['host'], 1 << 20)
            except OSError:
                stream = None
            if stream is not None and not chaffnet.wait_for(
                    lambda: stream.samples, 1.0):
                stream.close()
                stream = None
            if stream is None:
                queued.append(chaffnet.send_queue_bytes(lab.dst))
                rss.append(responder.rss_kib())
                time.sleep(0.5)
        assert stream is not None, 'the honest peer was never served'
        time.sleep(0.5)
        start = time.monotonic()
        for _ in range(6):
            time.sleep(0.5)
            queued.append(chaffnet.send_queue_bytes(lab.dst))
            rss.append(responder.rss_kib())
        rate = stream.rate(start, time.monotonic())
        # Every stalled stream goes, and the memory it pinned with it.
        drained = chaffnet.wait_for(
            lambda: chaffnet.send_queue_bytes(lab.dst) < 2 ** 20, 15.0)
        final_queue = chaffnet.send_queue_bytes(lab.dst)
    finally:
        for closing in (stream, flood):
            if closing:
                closing.close()
        stats = responder.stop()
    print('flood: %d streams accepted; send queue at most %.1f MiB, %.2f '
          'MiB at the end; RSS %d KiB before, at most %d; honest peer '
          '%.2f MiB/s; %s' % (flood.accepted, max(queued) / 2 ** 20,
                              final_queue / 2 ** 20, before, max(rss),
                              rate / 2 ** 20, stats['stats']))
    # Every flood stream the responder took is dropped (one or two may
    # end on an error of their own first).
    assert flood.accepted >= 64
    assert stats['stats']['dropped_stalled'] >= flood.accepted - 2
    assert stats['stats']['refused_stalled_peer'] > 0
    assert rate >= 0.8 * (1 << 20), rate
    assert max(queued) < 48 * 2 ** 20, queued
    assert drained, 'the stalled streams were not dropped'
    assert max(rss) - before < 64 * 1024, (before, rss)


def test_reads_its_options_from_nova_conf(lab, credentials, tmp_path):
    # Issue 16: the responder took flags only, and [stealth]
    # chaff_peer_networks was read by nothing.
    nova_conf = tmp_path / 'nova.conf'
    nova_conf.write_text(
        '[DEFAULT]\ndebug = true\n\n[stealth]\n'
        'chaff_ports = 61510-61511\nchaff_peer_networks = 198.18.7.0/28\n'
        'chaff_responder_address = %s\nchaff_tls_x509_dir = %s\n'
        'chaff_responder_max_per_peer = 1\n'
        % (lab.DST_V4, credentials['host']))
    responder = chaffnet.Responder(lab, None, '--config-file',
                                   str(nova_conf))
    try:
        listening = netlab.run('ip', 'netns', 'exec', lab.dst, 'ss', '-ltn')
        assert ':61510 ' in listening and ':61511 ' in listening
        assert ':61500 ' not in listening
        stream = chaffnet.Stream(lab, credentials['host'], 1 << 16, 61511)
        second = chaffnet.connect(lab, lab.SRC_V4, 61510)
        assert chaffnet.refused(second)
        second.close()
        stream.close()
    finally:
        stats = responder.stop()
    assert stats['stats']['streams'] == 1
    assert stats['stats']['refused_peer_limit'] == 1


def test_bad_options_stop_it_naming_the_option(lab, tmp_path):
    nova_conf = tmp_path / 'nova.conf'
    nova_conf.write_text('[stealth]\nchaff_peer_networks = 198.18.7.0/28\n'
                         'chaff_tls_x509_dir = %s\n' % (tmp_path / 'none'))
    done = subprocess.run(
        [sys.executable, '-m', 'nova_stealth.cmd.chaff_responder',
         '--config-file', str(nova_conf)], capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 2
    assert 'chaff_tls_x509_dir' in done.stderr.strip().splitlines()[-1]
