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

The source namespace has two addresses: 198.18.7.1 inside the responder's
peer network 198.18.7.0/28 and 198.18.7.100 outside it.
"""

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from nova_stealth.chaff import responder as responder_lib
from tests.functional import netlab

PORTS = '61500-61503'
UNKNOWN = '198.18.7.100'


@pytest.fixture
def lab(link):
    netlab.run('ip', '-n', link.src, 'addr', 'add', UNKNOWN + '/24', 'dev',
               's0')
    return link


class Responder(object):
    def __init__(self, lab, *extra):
        self.process = subprocess.Popen(
            ['ip', 'netns', 'exec', lab.dst, sys.executable, '-m',
             'nova_stealth.cmd.chaff_responder', '--address', lab.DST_V4,
             '--ports', PORTS, '--peer-network', '198.18.7.0/28'] +
            list(extra), stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == 'ready'

    def rss_kib(self):
        with open('/proc/%d/status' % self.process.pid) as status:
            for line in status:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])

    def stop(self):
        self.process.terminate()
        out, _ = self.process.communicate(timeout=20)
        return json.loads(out.strip().splitlines()[-1])


def connect(lab, source, port=61500):
    with netlab.in_netns(lab.src):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect((lab.DST_V4, port))
    return sock


class Stream(object):
    """A known peer's chaff stream, counting what the responder sends."""

    def __init__(self, lab, rate, port=61500):
        self.sock = connect(lab, lab.SRC_V4, port)
        self.sock.sendall(responder_lib.HELLO.pack(responder_lib.MAGIC,
                                                   rate))
        self.samples = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        netlab.record_received(self.sock, self.stopping, self.samples)

    def rate(self, start, stop):
        return sum(n for t, n in self.samples if start <= t < stop) / (
            stop - start)

    def close(self):
        self.stopping.set()
        self.thread.join()
        self.sock.close()


def refused(sock):
    try:
        return sock.recv(1) == b''
    except ConnectionResetError:
        return True


def test_serves_known_peers_at_the_rate_asked(lab):
    responder = Responder(lab)
    try:
        stream = Stream(lab, 1 << 20)
        time.sleep(0.5)
        start = time.monotonic()
        time.sleep(2.0)
        rate = stream.rate(start, time.monotonic())
        stream.close()
    finally:
        stats = responder.stop()
    assert 0.85 * (1 << 20) <= rate <= 1.15 * (1 << 20)
    assert stats['stats']['streams'] == 1


def test_refuses_peers_outside_the_networks(lab):
    responder = Responder(lab)
    try:
        stranger = connect(lab, UNKNOWN)
        stranger.sendall(responder_lib.HELLO.pack(responder_lib.MAGIC, 1000))
        assert refused(stranger)
        stranger.close()
    finally:
        stats = responder.stop()
    assert stats['stats'] == {'refused_unknown_peer': 1}
    assert stats['sent'] == {}


def test_limits_connections_per_peer(lab):
    responder = Responder(lab, '--max-per-peer', '2')
    try:
        streams = [Stream(lab, 10000, 61500 + i) for i in range(2)]
        time.sleep(0.3)
        third = connect(lab, lab.SRC_V4, 61502)
        assert refused(third)
        third.close()
        for stream in streams:
            stream.close()
    finally:
        stats = responder.stop()
    assert stats['stats']['refused_peer_limit'] == 1
    assert stats['stats']['streams'] == 2


def test_flood_from_unknown_peer(lab):
    responder = Responder(lab)
    try:
        stream = Stream(lab, 1 << 20)
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


def test_nothing_listens_after_stop(lab):
    responder = Responder(lab)
    listening = netlab.run('ip', 'netns', 'exec', lab.dst, 'ss', '-ltn')
    assert ':61500 ' in listening and ':61503 ' in listening
    responder.stop()
    assert responder.process.returncode == 0
    listening = netlab.run('ip', 'netns', 'exec', lab.dst, 'ss', '-ltn')
    assert ':615' not in listening
