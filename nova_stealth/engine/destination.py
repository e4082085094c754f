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
