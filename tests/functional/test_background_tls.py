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
"""The testbed's background users speaking TLS, over real TCP.

The testbed's ``--background-tls``: Markov users and their server, as the
testbed runs them, with TLS; the audit, reading the whole packets, sees
TLS with a server name and ALPN on every connection, and no plaintext.
"""

import json
import subprocess
import sys
import time

from nova_stealth.cmd import audit as audit_cmd
from nova_stealth.testbed import traffic
from nova_stealth.testbed import x509
from tests.functional import netlab

USERS = 6
SECONDS = 8


def start(ns, *argv):
    process = subprocess.Popen(
        ['ip', 'netns', 'exec', ns, sys.executable, '-m', traffic.__name__] +
        list(argv), stdout=subprocess.PIPE, text=True)
    assert json.loads(process.stdout.readline()) == {'ready': True}
    return process


def test_background_users_speak_tls(link, tmp_path):
    tls_dir = x509.make_credentials(
        str(tmp_path / 'web'), x509.make_ca(str(tmp_path / 'web-ca'),
                                            'background web CA'))
    path = str(tmp_path / 'background.pcap')
    processes = []
    dump = netlab.Tcpdump(link.src, path, '-i', 's0', '-s', '0', 'tcp')
    try:
        processes.append(start(link.dst, 'server', '--address',
                               link.DST_V4, '--tls-dir', tls_dir))
        users = start(link.src, 'users', '--server', link.DST_V4,
                      '--count', str(USERS), '--seed', '1',
                      '--tls-dir', tls_dir)
        processes.append(users)
        time.sleep(SECONDS)
        users.terminate()
        moved = json.loads(users.communicate(timeout=20)[0].splitlines()[-1])
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(20)
        dump.stop()
    assert sum(moved['bytes'].values()) > 100000, moved
    out = tmp_path / 'out'
    assert audit_cmd.main([path, '--out', str(out), '--min-packets', '1',
                           '--no-plots', '-q']) == 0
    flows = json.loads((out / 'report.json').read_text())['flows']
    seen = [flow['tells'] for flow in flows
            if flow['tells'] and flow['tells']['payload_prefix'] != 'none']
    assert len(seen) >= USERS // 2, flows
    for tells in seen:
        assert tells['payload_prefix'] == 'tls-handshake', tells
        # A server name ('d') and ALPN h2, as a browser's hello has.
        assert tells['tls_client_hello'][3] == 'd', tells
        assert tells['tls_fields']['alpn'] == traffic.ALPN, tells
