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
"""Migration port leases with real sockets, in a namespace of their own."""

import json
import socket
import subprocess
import sys

import pytest

from nova_stealth import exception
from nova_stealth.ports import leases as leases_lib
from tests.functional import netlab

#: Both sides of libvirt's 49152-49215, so that "never inside it" is tested.
AROUND_LIBVIRT = [range(49100, 49152), range(49216, 49260)]

ALLOCATE = '''
import json, sys
from nova_stealth.ports import leases
ranges = [range(49100, 49152), range(49216, 49260)]
pool = leases.PortLeases(sys.argv[1], ranges)
print(json.dumps(pool.allocate('migration-%s' % sys.argv[2])))
'''


@pytest.fixture
def netns():
    name = netlab.unique_name('nsport')
    netlab.run('ip', 'netns', 'add', name)
    netlab.run('ip', '-n', name, 'link', 'set', 'lo', 'up')
    yield name
    netlab.run('ip', 'netns', 'del', name, check=False)


def test_concurrent_processes_get_distinct_ports(netns, tmp_path):
    processes = [subprocess.Popen(
        ['ip', 'netns', 'exec', netns, sys.executable, '-c', ALLOCATE,
         str(tmp_path), str(index)], stdout=subprocess.PIPE, text=True)
        for index in range(32)]
    ports = []
    for process in processes:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        ports.append(json.loads(out))
    assert len(set(ports)) == 32
    assert not set(ports) & set(range(49152, 49216))
    assert all(port in AROUND_LIBVIRT[0] or port in AROUND_LIBVIRT[1]
               for port in ports)
    pool = leases_lib.PortLeases(str(tmp_path), AROUND_LIBVIRT)
    assert sorted(pool.leases().values()) == sorted(ports)


def test_draws_are_spread_over_the_ranges(netns, tmp_path):
    pool = leases_lib.PortLeases(str(tmp_path), [range(61000, 62000)])
    with netlab.in_netns(netns):
        ports = [pool.allocate('m%d' % i) for i in range(50)]
    assert len(set(ports)) == 50
    assert max(ports) - min(ports) > 500


def test_bound_ports_are_skipped(netns, tmp_path):
    pool = leases_lib.PortLeases(str(tmp_path), [range(61000, 61003)])
    listeners = []
    with netlab.in_netns(netns):
        for port, family, address in ((61000, socket.AF_INET, '127.0.0.1'),
                                      (61001, socket.AF_INET6, '::1')):
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.bind((address, port))
            listener.listen(1)
            listeners.append(listener)
        try:
            assert pool.allocate('first') == 61002
            with pytest.raises(exception.PortsExhausted) as raised:
                pool.allocate('second')
        finally:
            for listener in listeners:
                listener.close()
        assert pool.allocate('second') in (61000, 61001)
    message = str(raised.value)
    assert '61000-61002' in message and '1 leased, 2 bound' in message


def test_lease_survives_a_restart_and_expires(netns, tmp_path):
    now = [1000.0]
    pool = leases_lib.PortLeases(str(tmp_path), [range(61000, 61001)],
                                 lease_seconds=60, clock=lambda: now[0])
    with netlab.in_netns(netns):
        port = pool.allocate('m1')
        restarted = leases_lib.PortLeases(str(tmp_path), [range(61000, 61001)],
                                          lease_seconds=60,
                                          clock=lambda: now[0])
        assert restarted.leases() == {'m1': port}
        assert restarted.allocate('m1') == port
        with pytest.raises(exception.PortsExhausted):
            restarted.allocate('m2')
        now[0] += 59
        assert restarted.renew('m1')
        now[0] += 59
        assert restarted.leases() == {'m1': port}
        now[0] += 2
        assert restarted.leases() == {}
        assert not restarted.renew('m1')
        assert restarted.allocate('m2') == port


def test_release_is_idempotent(netns, tmp_path):
    pool = leases_lib.PortLeases(str(tmp_path), [range(61000, 61010)])
    with netlab.in_netns(netns):
        port = pool.allocate('m1')
    assert pool.release('m1') == port
    assert pool.release('m1') is None
    assert pool.leases() == {}
