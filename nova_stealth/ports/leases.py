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
"""Leases of migration data ports.

A destination leases one port per incoming migration, drawn uniformly at
random from the operator's ranges among the ports that are neither leased
nor bound on this host, and hands it to the source. Leases live in one JSON
file in the state directory, changed only under an inter-process lock, and
carry an expiry: a lease whose release never came (Nova does not always
call the destination's rollback) lapses by itself.
"""

import contextlib
import errno
import os
import random
import socket
import time

from oslo_concurrency import lockutils

from nova_stealth import exception
from nova_stealth import statefile

LEASE_FILE = 'port-leases.json'


def is_bound(port):
    """True when a TCP socket on this host is bound to ``port``.

    Probes by binding the wildcard address, IPv4 and IPv6, without
    SO_REUSEADDR; the probe socket is closed at once.
    """
    for family, address in ((socket.AF_INET, '0.0.0.0'),
                            (socket.AF_INET6, '::')):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        with probe:
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((address, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return True
                if e.errno != errno.EADDRNOTAVAIL:
                    raise
    return False


def check_leases(leases):
    """Return why ``leases`` is not a lease file's content, or None."""
    if not isinstance(leases, dict):
        return 'a %s, not an object' % type(leases).__name__
    for owner, lease in leases.items():
        if not isinstance(lease, dict):
            return 'lease of %s is not an object' % owner
        port = lease.get('port')
        if not isinstance(port, int) or isinstance(port, bool) or not (
                0 < port < 65536):
            return 'lease of %s has no port' % owner
        for key in ('since', 'expires'):
            value = lease.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return 'lease of %s has no %s time' % (owner, key)
    return None


class PortLeases(object):
    """The migration port leases of one host.

    :param state_dir: where the lease file and its lock live
    :param ranges: range objects of allowed ports
    :param lease_seconds: how long a lease lasts unless renewed
    :param clock: seconds since the epoch (tests pass their own)
    :param excluded: ports never leased even when in ``ranges``: the chaff
        ports, whose shaping filter matches before any migration's
    """

    def __init__(self, state_dir, ranges, lease_seconds=21600,
                 clock=time.time, rng=None, excluded=()):
        self.state_dir = state_dir
        self.ranges = [r for r in ranges if len(r)]
        self.excluded = frozenset(excluded)
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        self.path = os.path.join(state_dir, LEASE_FILE)

    @classmethod
    def from_conf(cls, group):
        """Build from the loaded [stealth] group."""
        return cls(group.state_dir, group.migration_port_ranges,
                   group.port_lease_seconds, excluded=group.chaff_ports)

    @contextlib.contextmanager
    def _locked(self):
        lock_path = os.path.join(self.state_dir, 'locks')
        os.makedirs(lock_path, exist_ok=True)
        with lockutils.lock('port-leases', external=True,
                            lock_path=lock_path):
            leases = self._read()
            now = self.clock()
            live = {owner: lease for owner, lease in leases.items()
                    if lease['expires'] > now}
            yield live
            self._write(live)

    def _read(self):
        # A bad file is moved aside and reads as no leases: a port still in
        # use by an incoming migration is bound by QEMU, and allocate()
        # skips bound ports.
        return statefile.read_json(self.path, check_leases) or {}

    def _write(self, leases):
        statefile.write_json(self.path, leases)

    def _describe_ranges(self):
        return ','.join('%d-%d' % (r.start, r.stop - 1) for r in self.ranges)

    def allocate(self, owner):
        """Lease a port to ``owner`` (a migration id); return the port.

        Leasing again for the same owner renews and returns the same port.

        :raises nova_stealth.exception.PortsExhausted: when every port of
            the ranges is leased or bound
        """
        with self._locked() as leases:
            now = self.clock()
            if owner in leases:
                leases[owner]['expires'] = now + self.lease_seconds
                return leases[owner]['port']
            taken = {lease['port'] for lease in leases.values()}
            free = [port for ports in self.ranges for port in ports
                    if port not in taken and port not in self.excluded]
            self.rng.shuffle(free)
            bound = 0
            for port in free:
                if is_bound(port):
                    bound += 1
                    continue
                leases[owner] = {'port': port, 'since': now,
                                 'expires': now + self.lease_seconds,
                                 'pid': os.getpid()}
                return port
            raise exception.PortsExhausted(ranges=self._describe_ranges(),
                                           leased=len(taken), bound=bound)

    def renew(self, owner):
        """Push a lease's expiry back; False if it has none."""
        with self._locked() as leases:
            if owner not in leases:
                return False
            leases[owner]['expires'] = self.clock() + self.lease_seconds
            return True

    def release(self, owner):
        """End a lease; idempotent. Returns the port, or None."""
        with self._locked() as leases:
            lease = leases.pop(owner, None)
            return lease and lease['port']

    def release_all(self):
        """End every lease; return ``{owner: port}`` of those ended."""
        with self._locked() as leases:
            ended = {owner: lease['port'] for owner, lease in leases.items()}
            leases.clear()
            return ended

    def leased_since(self):
        """``{owner: seconds since the epoch}`` of the leases in force."""
        with self._locked() as leases:
            return {owner: lease['since'] for owner, lease in leases.items()}

    def leases(self):
        """{owner: port} of the leases in force."""
        with self._locked() as leases:
            return {owner: lease['port'] for owner, lease in leases.items()}
