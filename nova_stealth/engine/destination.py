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
"""A migration on its destination host: the leased data port.

The chaff responder runs on every node for all migrations
(``nova-stealth-chaff-responder``), so the destination's per-migration
state is the port lease alone; it is released when the migration ends
either way, and expires by itself if nobody does.
"""

import ipaddress

from oslo_utils import netutils

from nova_stealth import exception
from nova_stealth.ports import leases as leases_lib


def connect_address(address, port):
    """``addr:port``, or ``[addr]:port`` for IPv6, as libvirt's URI wants.

    ``address`` may also be a host name (Nova's
    ``live_migration_inbound_addr`` allows one).
    """
    bare = address.strip('[]')
    try:
        if ipaddress.ip_address(bare).version == 6:
            return '[%s]:%d' % (bare, port)
    except ValueError:
        pass
    return '%s:%d' % (bare, port)


def parse_connect_address(text):
    """``(address, port)`` of what :func:`connect_address` made.

    Also an address alone, as Nova's own destinations hand back in
    ``target_connect_addr`` (a host name, or an IPv4 or IPv6 address, the
    latter bare or in brackets): its port is None. None is (None, None).

    :raises nova_stealth.exception.InvalidConnectAddress: naming the text
        and what is wrong with it
    """
    if not text:
        return None, None
    try:
        address, port = netutils.parse_host_port(text)
    except ValueError as e:
        # oslo.utils says only what failed inside it ("invalid literal for
        # int()", "not enough values to unpack").
        raise exception.InvalidConnectAddress(
            text=text, reason='not ADDRESS:PORT, [IPV6]:PORT, or an '
            'address alone') from e
    if text and not address:
        raise exception.InvalidConnectAddress(text=text,
                                              reason='no address')
    if port is not None and not 0 < port < 65536:
        raise exception.InvalidConnectAddress(
            text=text, reason='port %d is not from 1 to 65535' % port)
    return address, port


class DestinationSession(object):
    """The data port of one incoming migration.

    :param group: the loaded [stealth] option group
    :param migration_id: a name unique on this host (Nova's migration uuid)
    :param leases: a :class:`nova_stealth.ports.leases.PortLeases` (built
        from ``group`` if None)
    """

    def __init__(self, group, migration_id, leases=None):
        self.migration_id = migration_id
        self.leases = leases or leases_lib.PortLeases.from_conf(group)
        self.port = None

    def prepare(self):
        """Lease the migration's data port and return it."""
        self.port = self.leases.allocate(self.migration_id)
        return self.port

    def release(self):
        """Release the port; idempotent."""
        self.leases.release(self.migration_id)
        self.port = None
