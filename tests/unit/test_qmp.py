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
"""The testbed's QMP client, against a peer on a real UNIX socket."""

import json
import socket
import threading
import time

import pytest

from nova_stealth.testbed import qemu

GREETING = {'QMP': {'version': {}, 'capabilities': []}}


class HungQemu(object):
    """A QMP socket whose peer answers ``answered`` commands, then none.

    :param greet: whether it sends QMP's greeting first
    """

    def __init__(self, path, greet=True, answered=('qmp_capabilities',)):
        self.path = str(path)
        self.greet = greet
        self.answered = answered
        self.received = []
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.listener.accept()
        with conn:
            if self.greet:
                conn.sendall(json.dumps(GREETING).encode() + b'\r\n')
            reader = conn.makefile('rb')
            for line in reader:
                command = json.loads(line)['execute']
                self.received.append(command)
                if command in self.answered:
                    # An event first: it does not count as the reply.
                    conn.sendall(b'{"event": "RESUME"}\r\n'
                                 b'{"return": {}}\r\n')
            # The client hung up; keep the socket until the test ends.
            self.done.wait(10)

    def close(self):
        self.done.set()
        self.listener.close()
        self.thread.join(10)


@pytest.fixture
def hung(tmp_path):
    peers = []

    def make(**kwargs):
        peers.append(HungQemu(tmp_path / 'qmp.sock', **kwargs))
        return peers[-1]

    yield make
    for peer in peers:
        peer.close()


def test_a_command_qemu_never_answers_times_out(hung):
    peer = hung()
    client = qemu.Qmp(peer.path, reply_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(qemu.QmpTimeout) as raised:
            client.execute('query-migrate')
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert str(raised.value) == (
        "QEMU sent no reply to command 'query-migrate' on its QMP socket "
        "%s within 0.5 s" % peer.path)
    assert 0.45 <= elapsed < 5
    assert peer.received == ['qmp_capabilities', 'query-migrate']
    # The event that came with qmp_capabilities' reply is kept.
    assert client.events[0]['event'] == 'RESUME'


def test_a_qemu_that_never_greets_times_out(hung):
    peer = hung(greet=False)
    with pytest.raises(qemu.QmpTimeout) as raised:
        qemu.Qmp(peer.path, reply_timeout=0.5)
    assert str(raised.value) == (
        'QEMU sent no greeting on its QMP socket %s within 0.5 s' % peer.path)


def test_an_answering_peer_is_answered(hung):
    peer = hung(answered=('qmp_capabilities', 'cont'))
    client = qemu.Qmp(peer.path, reply_timeout=5.0)
    try:
        assert client.execute('cont') == {}
    finally:
        client.close()
