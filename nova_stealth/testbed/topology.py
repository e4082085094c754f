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
"""The testbed's hosts: two sites joined by a 100 Mbit/s WAN.

::

    src ──┐                              ┌── dst
          rl ══ wan 100 Mbit/s each way ══ rr
    bgl ──┘   (the adversary taps here)  └── bgr

Every host is a network namespace whose name carries the run's id; every
address is from 198.18.0.0/15 (and 2001:db8::/32). The bottleneck is a
token bucket on each router's WAN egress, with a queue of about 30 ms.
Segmentation offloads are off on every device so that a capture sees
wire-sized packets.
"""

import json
import os
import uuid

from nova_stealth.testbed import netns

PREFIX = 'nst'
ROLES = ('src', 'dst', 'rl', 'rr', 'bgl', 'bgr')
BOTTLENECK_MBIT = 100
#: Hosts, their device, address, router and the router's side.
HOSTS = {
    'src': ('198.18.1.2', '2001:db8:1::2', 'rl', '198.18.1.1',
            '2001:db8:1::1', 'h-src'),
    'bgl': ('198.18.2.2', '2001:db8:2::2', 'rl', '198.18.2.1',
            '2001:db8:2::1', 'h-bgl'),
    'dst': ('198.19.1.2', '2001:db8:101::2', 'rr', '198.19.1.1',
            '2001:db8:101::1', 'h-dst'),
    'bgr': ('198.19.2.2', '2001:db8:102::2', 'rr', '198.19.2.1',
            '2001:db8:102::1', 'h-bgr'),
}
WAN = {'rl': ('198.18.100.1', '2001:db8:100::1'),
       'rr': ('198.18.100.2', '2001:db8:100::2')}
SITE = {'rl': ('198.18.0.0/16', '2001:db8::/40'),
        'rr': ('198.19.0.0/16', '2001:db8:100::/40')}
STATE_FILE = 'topology.json'
#: Most extra source hosts (``src1``...) a lab site may have.
MAX_SOURCES = 16


def source_roles(count):
    """The source hosts' roles: ``src``, then ``src1``, ``src2``..."""
    if not 1 <= count <= MAX_SOURCES + 1:
        raise ValueError('%d source hosts: from 1 to %d'
                         % (count, MAX_SOURCES + 1))
    return ['src'] + ['src%d' % i for i in range(1, count)]


def host_of(role):
    """A host's device, address, router and the router's side.

    Extra source hosts ``srcN`` sit behind ``rl`` on 198.18.(10+N).0/24.
    """
    if role in HOSTS:
        return HOSTS[role]
    number = int(role[len('src'):])
    net = 10 + number
    return ('198.18.%d.2' % net, '2001:db8:%x::2' % net, 'rl',
            '198.18.%d.1' % net, '2001:db8:%x::1' % net, 'h-src%d' % number)


def _is_role(name):
    return name in ROLES or (name.startswith('src') and
                             name[len('src'):].isdigit())


def namespaces_of(run_id, sources=1):
    """The namespace names of a run, by role."""
    roles = list(ROLES) + source_roles(sources)[1:]
    return {role: '%s%s-%s' % (PREFIX, run_id, role) for role in roles}


def leftover_namespaces():
    """Testbed namespaces present on this machine (any run)."""
    try:
        names = os.listdir('/run/netns')
    except FileNotFoundError:
        return []
    return sorted(name for name in names
                  if name.startswith(PREFIX) and
                  _is_role(name.rsplit('-', 1)[-1]))


class Topology(object):
    """The six namespaces of one run.

    :param workdir: where the run records its namespaces, so that
        :func:`cleanup` finds them after a crash
    :param sources: source hosts behind ``rl`` (the lab runs several
        flows at once, one per source host)
    """

    def __init__(self, workdir, run_id=None, sources=1):
        self.run_id = run_id or uuid.uuid4().hex[:6]
        self.sources = source_roles(sources)
        self.ns = namespaces_of(self.run_id, sources)
        self.workdir = workdir

    def address(self, role):
        """IPv4 address of a host."""
        return host_of(role)[0]

    def create(self):
        """Build hosts, links, routes and the bottleneck; undone on error."""
        with open(os.path.join(self.workdir, STATE_FILE), 'w') as state:
            json.dump({'run_id': self.run_id, 'namespaces': self.ns}, state)
        try:
            for name in self.ns.values():
                netns.run('ip', 'netns', 'add', name)
                self._ip(name, 'link', 'set', 'lo', 'up')
            for router in ('rl', 'rr'):
                netns.run('ip', 'netns', 'exec', self.ns[router], 'sysctl',
                          '-qw', 'net.ipv4.ip_forward=1',
                          'net.ipv6.conf.all.forwarding=1')
            for role in list(HOSTS) + self.sources[1:]:
                self._host(role)
            self._wan()
        except BaseException:
            self.destroy()
            raise
        return self

    def _ip(self, ns, *args):
        return netns.run('ip', '-n', ns, *args)

    def _veth(self, ns_a, dev_a, ns_b, dev_b):
        self._ip(ns_a, 'link', 'add', dev_a, 'type', 'veth', 'peer', 'name',
                 dev_b, 'netns', ns_b)
        for ns, dev in ((ns_a, dev_a), (ns_b, dev_b)):
            netns.offloads_off(ns, dev)
            self._ip(ns, 'link', 'set', dev, 'up')

    def _host(self, role):
        v4, v6, router, gw4, gw6, router_dev = host_of(role)
        host, gateway = self.ns[role], self.ns[router]
        self._veth(host, 'eth0', gateway, router_dev)
        self._ip(host, 'addr', 'add', v4 + '/24', 'dev', 'eth0')
        self._ip(host, '-6', 'addr', 'add', v6 + '/64', 'dev', 'eth0',
                 'nodad')
        self._ip(gateway, 'addr', 'add', gw4 + '/24', 'dev', router_dev)
        self._ip(gateway, '-6', 'addr', 'add', gw6 + '/64', 'dev',
                 router_dev, 'nodad')
        self._ip(host, 'route', 'add', 'default', 'via', gw4)
        self._ip(host, '-6', 'route', 'add', 'default', 'via', gw6)

    def _wan(self):
        self._veth(self.ns['rl'], 'wan0', self.ns['rr'], 'wan0')
        for router, other in (('rl', 'rr'), ('rr', 'rl')):
            ns = self.ns[router]
            v4, v6 = WAN[router]
            self._ip(ns, 'addr', 'add', v4 + '/24', 'dev', 'wan0')
            self._ip(ns, '-6', 'addr', 'add', v6 + '/64', 'dev', 'wan0',
                     'nodad')
            far4, far6 = SITE[other]
            self._ip(ns, 'route', 'add', far4, 'via', WAN[other][0])
            self._ip(ns, '-6', 'route', 'add', far6, 'via', WAN[other][1])
            # 100 Mbit/s with a 375 kB (30 ms) queue, as a WAN router.
            netns.run('tc', '-n', ns, 'qdisc', 'add', 'dev', 'wan0', 'root',
                      'tbf', 'rate', '%dmbit' % BOTTLENECK_MBIT, 'burst',
                      '32kb', 'limit', '375kb')

    def wan_bytes(self):
        """Bytes each router's WAN egress has sent: {'rl': n, 'rr': n}."""
        sent = {}
        for router in ('rl', 'rr'):
            shown = netns.run('tc', '-s', '-n', self.ns[router], 'qdisc',
                              'show', 'dev', 'wan0')
            sent[router] = int(shown.split(' Sent ')[1].split()[0])
        return sent

    def destroy(self):
        """Remove every namespace of the run; idempotent."""
        for name in self.ns.values():
            netns.run('ip', 'netns', 'del', name, check=False)
        if os.path.exists(os.path.join(self.workdir, STATE_FILE)):
            os.unlink(os.path.join(self.workdir, STATE_FILE))


def cleanup(workdir):
    """Remove the namespaces a crashed run recorded in ``workdir``.

    :returns: the names removed
    """
    path = os.path.join(workdir, STATE_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as state:
        recorded = json.load(state)['namespaces'].values()
    present = set(leftover_namespaces())
    removed = [name for name in recorded if name in present]
    for name in removed:
        netns.run('ip', 'netns', 'del', name, check=False)
    os.unlink(path)
    return removed
