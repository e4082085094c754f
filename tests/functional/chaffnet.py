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
"""The chaff responder as its own process in a namespace, and its peers.

Credentials are made by :mod:`nova_stealth.testbed.x509` in QEMU's layout;
peers talk mutual TLS 1.3 to it over real TCP.
"""

import json
import socket
import ssl
import subprocess
import sys
import threading
import time

from nova_stealth.chaff import responder as responder_lib
from nova_stealth.chaff import tls
from nova_stealth.testbed import x509
from tests.functional import netlab

PORTS = '61500-61503'


def make_credentials(root):
    """{'ca', 'host', 'rogue'}: directories of credentials under root.

    ``host`` is signed by ``ca``; ``rogue`` by a CA of its own.
    """
    ca = x509.make_ca(str(root / 'ca'))
    rogue_ca = x509.make_ca(str(root / 'rogue-ca'), 'someone else')
    return {'ca': ca,
            'host': x509.make_credentials(str(root / 'host'), ca),
            'rogue': x509.make_credentials(str(root / 'rogue'), rogue_ca)}


class Responder(object):
    """nova-stealth-chaff-responder in the link's destination namespace."""

    def __init__(self, lab, tls_dir, *extra, network='198.18.7.0/28'):
        argv = ['ip', 'netns', 'exec', lab.dst, sys.executable, '-m',
                'nova_stealth.cmd.chaff_responder']
        if not any(a == '--config-file' for a in extra):
            argv += ['--address', lab.DST_V4, '--ports', PORTS,
                     '--peer-network', network, '--tls-dir', tls_dir]
        self.process = subprocess.Popen(argv + list(extra),
                                        stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != 'ready':
            self.process.kill()
            self.process.wait()
            raise RuntimeError('the chaff responder did not start')

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
    """A TCP socket from ``source`` in the source namespace."""
    with netlab.in_netns(lab.src):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect((lab.DST_V4, port))
    return sock


def connect_tls(lab, source, tls_dir, port=61500):
    """A mutual TLS connection as a chaff sender opens it."""
    return tls.openssl_client_context(tls_dir).wrap_socket(
        connect(lab, source, port), server_hostname=None)


def hello(rate, lifetime=3600.0):
    """The rate request and the rest of a first full record."""
    return responder_lib.HELLO.pack(responder_lib.MAGIC, rate,
                                    int(lifetime * 1000)) + bytes(
        16384 - responder_lib.HELLO.size)


class Stream(object):
    """A known peer's chaff stream, counting what the responder sends."""

    def __init__(self, lab, tls_dir, rate, port=61500, source=None):
        self.sock = connect_tls(lab, source or lab.SRC_V4, tls_dir, port)
        self.sock.sendall(hello(rate))
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
    """True if the responder closed or reset ``sock`` without data."""
    try:
        return sock.recv(1) == b''
    except (ConnectionResetError, ssl.SSLError):
        return True


def send_queue_bytes(ns):
    """Bytes queued for sending by every TCP socket of ``ns`` (skmem w)."""
    shown = netlab.run('ip', 'netns', 'exec', ns, 'ss', '-tmnH')
    total = 0
    for field in shown.replace('(', ',').replace(')', ',').split(','):
        if field.startswith('w') and field[1:].isdigit():
            total += int(field[1:])
    return total


def wait_for(condition, timeout, step=0.1):
    """Poll ``condition`` until true or ``timeout``; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)
