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
"""Options of the chaff traffic that hides where a migration starts."""

import ipaddress

from oslo_config import cfg
from oslo_config import types

from nova_stealth.conf import base
from nova_stealth.conf import ports
from nova_stealth import exception
from nova_stealth import plugins

#: Where every compute node's chaff responder listens, by default.
DEFAULT_CHAFF_PORTS = '61500-61503'
SECONDS = types.Float(min=0.0, max=600.0)


def peer_network(text):
    """The network, as CIDR text, of ``text``: a network or a host/prefix.

    A host address with a prefix (``198.18.0.10/24``, what devstack's
    ``$HOST_IP/24`` gives) means the network it is in (``198.18.0.0/24``).

    :raises ValueError: naming the text when it is neither
    """
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ValueError('%r is not a network, ADDRESS/PREFIX' % text)


class PeerNetwork(types.String):
    """A network of chaff peers; see :func:`peer_network`."""

    def __init__(self):
        super().__init__(type_name='network')

    def __call__(self, value):
        return peer_network(super().__call__(value))


chaff_opts = [
    cfg.BoolOpt(
        'chaff_enabled',
        default=True,
        help="""
Send chaff (dummy TCP streams in their own shaping class) around each
migration so that its start and end do not show as steps in this host's
egress.
"""),
    cfg.FloatOpt(
        'chaff_budget_fraction',
        default=0.6,
        min=0.0,
        max=10.0,
        help="""
Most chaff bytes a migration may cause, as a fraction of the migration's own
bytes: a hard cap. When the budget runs out the chaff stops, which an
observer can see. With chaff_cost_fraction set, the ramp schedule sizes
itself to that, within this.

Related options:

* chaff_cost_fraction
* chaff_max_rate
"""),
    cfg.FloatOpt(
        'chaff_max_rate',
        default=8.0,
        min=0.0,
        help="""
Highest total chaff rate, in MiB/s, a migration may cause. To hide the
start of a migration the chaff must reach about the migration's mean rate.

Related options:

* chaff_budget_fraction
* max_rate
"""),
    cfg.FloatOpt(
        'chaff_cost_fraction',
        default=None,
        min=0.0,
        max=10.0,
        help="""
Experimental; unset by default. The chaff a migration should cost, as a
fraction of the guest's memory: the ramp schedule shortens the lead and
tail it draws from chaff_lead_seconds and chaff_tail_seconds, by one
factor and none below 1.5 seconds, until its expected chaff fits (the
fade under the migration's start stays as drawn). At 0.1 a 1 GiB guest's
chaff costs about 9% instead of 16% (benchmarks/chaff_share.py), but
ramps that short showed the migration's end to the chaff functional test
once in three runs: leave it unset until they are judged safe.

Related options:

* chaff_budget_fraction (the hard cap)
* chaff_lead_seconds, chaff_tail_seconds
"""),
    cfg.StrOpt(
        'chaff_schedule',
        default='ramp',
        help="""
Name of the chaff schedule, an entry point in the
``nova_stealth.chaff_schedules`` namespace: ``ramp`` (rise before the
migration, fill in under it, fall after it) or ``constant`` (a baseline).
"""),
    cfg.ListOpt(
        'chaff_lead_seconds',
        item_type=SECONDS,
        default=[5.0, 15.0],
        help='Range low,high of the random ramp-up before a migration.'),
    cfg.ListOpt(
        'chaff_tail_seconds',
        item_type=SECONDS,
        default=[5.0, 15.0],
        help='Range low,high of the random ramp-down after a migration.'),
    cfg.Opt(
        'chaff_ports',
        type=ports.PortRange(),
        default=DEFAULT_CHAFF_PORTS,
        help="""
Ports, LOW-HIGH, the chaff responder of every compute node listens on. They
must not overlap migration_port_ranges: the chaff's shaping filter matches
first, so a migration on one of these ports would be shaped as chaff.

Related options:

* migration_port_ranges
"""),
    cfg.ListOpt(
        'chaff_peers',
        default=[],
        help="""
Addresses of other compute nodes whose chaff responders this node's chaff
may go to. Each chaff stream picks a peer at random among these and the
migration's destination, and a port among chaff_ports, and lives an
exponentially distributed time (mean chaff_switch_seconds) before the next
draw, so that chaff does not single out the migration's two hosts. Empty,
chaff goes to the destination only, which an observer can see.

Related options: chaff_ports, chaff_switch_seconds.
"""),
    cfg.FloatOpt(
        'chaff_switch_seconds',
        default=5.0,
        min=0.1,
        max=3600.0,
        help="""
Mean lifetime, in seconds, of one chaff stream before it closes and
another opens to a peer and port drawn afresh.
"""),
    cfg.StrOpt(
        'chaff_tls_x509_dir',
        default='/etc/pki/qemu',
        help="""
Directory of the x509 credentials chaff streams use, in the layout of
QEMU's and libvirt's (default_tls_x509_cert_dir): ca-cert.pem,
server-cert.pem and server-key.pem (the responder's identity),
client-cert.pem and client-key.pem (the sender's). Chaff is mutual TLS:
each end refuses a certificate the CA did not sign. Use the credentials of
libvirt's native TLS migration (live_migration_with_native_tls), so chaff
and migrations are the same kind of traffic. Without readable credentials
no chaff is sent, and each migration logs an error.
"""),
    cfg.StrOpt(
        'chaff_tls_priority',
        default='NORMAL',
        help="""
GnuTLS priority string of chaff's TLS sessions, at both ends. Chaff speaks
GnuTLS, QEMU's TLS library, and must offer what QEMU's migrations offer so
that its handshake is theirs: QEMU's built-in default is NORMAL; set the
priority your QEMU's tls-creds objects use if libvirt gives them another
(for example from qemu.conf). nova-compute and the chaff responder stop at
start-up if GnuTLS cannot read it.
"""),
    cfg.ListOpt(
        'chaff_peer_networks',
        item_type=PeerNetwork(),
        default=[],
        help="""
Networks (CIDR) whose hosts may open chaff streams to this node's
responder: the other compute nodes. Empty, the responder serves nobody. A
host address with a prefix, such as 198.18.0.10/24, stands for its network,
198.18.0.0/24.
Read by nova-stealth-chaff-responder; peers must also present a
certificate signed by the CA of chaff_tls_x509_dir.
"""),
    cfg.StrOpt(
        'chaff_responder_address',
        default='::',
        help='Address the chaff responder listens on (:: is every address).'),
    cfg.IntOpt(
        'chaff_responder_max_connections',
        default=128,
        min=1,
        max=65536,
        help="""
Most connections the chaff responder holds at once, TLS handshakes
included; past this it resets new ones.
"""),
    cfg.IntOpt(
        'chaff_responder_max_per_peer',
        default=16,
        min=1,
        max=65536,
        help='Most connections the chaff responder holds from one address.'),
    cfg.FloatOpt(
        'chaff_responder_peer_rate',
        default=4.0,
        min=0.01,
        max=10000.0,
        help="""
Most MiB/s the chaff responder sends to one address, shared among its
connections.
"""),
    cfg.FloatOpt(
        'chaff_responder_total_rate',
        default=32.0,
        min=0.01,
        max=100000.0,
        help="""
Most MiB/s the chaff responder sends in all, shared equally among the
peers it serves.
"""),
    cfg.FloatOpt(
        'chaff_responder_stall_seconds',
        default=5.0,
        min=0.1,
        max=600.0,
        help="""
A chaff connection whose writes have not drained for this long (its peer
stopped reading) is dropped, and its peer refused for
chaff_responder_stall_penalty_seconds.
"""),
    cfg.FloatOpt(
        'chaff_responder_stall_penalty_seconds',
        default=60.0,
        min=0.0,
        max=86400.0,
        help='How long a peer whose stream stalled is refused.'),
]


def register_opts(conf):
    """Register the chaff options in the [stealth] group."""
    conf.register_opts(chaff_opts, group=base.GROUP)


def list_opts():
    """Return the chaff options for the sample generator."""
    return {base.stealth_group: chaff_opts}


def validate(group):
    """Check the chaff schedule and the ranges.

    :raises nova_stealth.exception.InvalidOption: naming the bad option
    """
    plugins.check_option(group, 'chaff_schedule', plugins.CHAFF_SCHEDULES,
                         'chaff schedules')
    for name in ('chaff_lead_seconds', 'chaff_tail_seconds'):
        value = group[name]
        if len(value) != 2 or value[0] > value[1]:
            raise exception.InvalidOption(
                option=name, value=value,
                reason='must be two numbers, low,high with low <= high')
    if group.chaff_ports.step != 1:
        raise exception.InvalidOption(
            option='chaff_ports', value=ports.format_range(group.chaff_ports),
            reason='a range is written LOW-HIGH with LOW <= HIGH')
    for migration_ports in group.migration_port_ranges:
        if ports.overlap(migration_ports, group.chaff_ports):
            raise exception.InvalidOption(
                option='migration_port_ranges',
                value=ports.format_range(migration_ports),
                reason='overlaps chaff_ports %s, whose shaping filter '
                       'matches first; choose ranges apart' %
                       ports.format_range(group.chaff_ports))
    for peer in group.chaff_peers:
        try:
            ipaddress.ip_address(peer)
        except ValueError as e:
            raise exception.InvalidOption(option='chaff_peers',
                                          value=repr(peer), reason=e)
