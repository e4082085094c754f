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
"""Options of the migration data port leases."""

from oslo_config import cfg
from oslo_config import types

from nova_stealth.conf import base
from nova_stealth import exception

#: libvirt's default migration port range (qemu.conf migration_port_min/max),
#: which an observer knows to watch.
LIBVIRT_MIGRATION_PORTS = range(49152, 49216)
#: Lowest port of a range: those below are privileged, and neither an
#: unprivileged nova-compute (a migration's listener is QEMU's, run as the
#: libvirt user) nor the chaff responder can listen there.
LOWEST_PORT = 1024


class PortRange(types.Range):
    """A LOW-HIGH port range, inclusive; a lone port N is the range N-N.

    Ports below 1024 are refused (see ``LOWEST_PORT``).

    oslo.config returns a range of one port as a descending range; this
    type returns every range of one port ascending, so that a descending
    range always means the operator swapped LOW and HIGH.
    """

    def __init__(self):
        super().__init__(min=LOWEST_PORT, max=65535, type_name='port range')

    def __call__(self, value):
        # Parsed without our minimum, to say why low ports are refused.
        ports = types.Range(min=0, max=self.max)(value)
        if min(ports[0], ports[-1]) < LOWEST_PORT:
            raise ValueError(
                'ports below %d are privileged: nova-compute and the chaff '
                'responder run unprivileged and cannot listen there' %
                LOWEST_PORT)
        if len(ports) == 1:
            return range(ports[0], ports[0] + 1)
        return ports


ports_opts = [
    cfg.ListOpt(
        'migration_port_ranges',
        item_type=PortRange(),
        default=['62000-64999'],
        help="""
Port ranges, as LOW-HIGH (inclusive), from which the data port of each
incoming migration is drawn at random. They must not overlap libvirt's
well-known range 49152-49215 (see allow_libvirt_port_range) nor chaff_ports
(traffic to those is shaped as chaff), and should not overlap the kernel's
ephemeral range (net.ipv4.ip_local_port_range), nor any port a service on
this host listens on.

Related options:

* chaff_ports
* allow_libvirt_port_range
"""),
    cfg.IntOpt(
        'port_lease_seconds',
        default=21600,
        min=60,
        help="""
How long a migration port stays leased unless released or renewed. A lease
whose migration ended without the destination being told (Nova does not
always call its rollback) lapses after this.
"""),
    cfg.BoolOpt(
        'allow_libvirt_port_range',
        default=False,
        help="""
Allow migration_port_ranges to overlap libvirt's default migration ports
49152-49215. An observer looks there first, so this weakens the defence; it
is meant for hosts whose firewall only opens that range.

Related options:

* migration_port_ranges
"""),
]


def register_opts(conf):
    """Register the port lease options in the [stealth] group."""
    conf.register_opts(ports_opts, group=base.GROUP)


def list_opts():
    """Return the port lease options for the sample generator."""
    return {base.stealth_group: ports_opts}


def format_range(ports):
    """Format a range object as the LOW-HIGH text an operator wrote."""
    return '%d-%d' % (ports.start, ports.stop - ports.step)


def overlap(first, second):
    """True when two ascending ranges share a port."""
    return first.start < second.stop and second.start < first.stop


def validate(group):
    """Check that every port range is usable and avoids libvirt's range.

    :raises nova_stealth.exception.InvalidOption: naming the bad range
    """
    ranges = group.migration_port_ranges
    if not ranges:
        raise exception.InvalidOption(
            option='migration_port_ranges', value="''",
            reason='at least one range LOW-HIGH is needed')
    for ports in ranges:
        if ports.step != 1:
            raise exception.InvalidOption(
                option='migration_port_ranges', value=format_range(ports),
                reason='a range is written LOW-HIGH with LOW <= HIGH')
        if (overlap(ports, LIBVIRT_MIGRATION_PORTS) and
                not group.allow_libvirt_port_range):
            raise exception.InvalidOption(
                option='migration_port_ranges', value=format_range(ports),
                reason='overlaps libvirt\'s migration ports 49152-49215; '
                       'choose another range or set '
                       'allow_libvirt_port_range = true')
