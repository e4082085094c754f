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
"""The shape of the DHTB tree: handles, rates, bursts and filter keys.

One tree per egress device, shared by every migration on it::

    root htb  MAJOR:          default -> MAJOR:2
    └─ MAJOR:1   parent, at the link rate
       ├─ MAJOR:2    default: all other traffic, rate = ceil = link rate
       ├─ MAJOR:3    chaff
       └─ MAJOR:100+n  one migration each, rate = ceil = the policy's rate

Filters (u32, on the root qdisc) send a migration's data, TCP from this host
to the peer's data port, to its class at priority 100+n, and the chaff port
blocks to the chaff class at priority 10 (IPv4) and 11 (IPv6).

Everything here is plain arithmetic: rates in bytes per second for the
kernel, MiB/s for people.
"""

import ipaddress

from nova_stealth import units

ROOT_MAJOR = 0x5EA1
PARENT_MINOR = 0x1
DEFAULT_MINOR = 0x2
CHAFF_MINOR = 0x3
FIRST_SESSION_MINOR = 0x100
MAX_SESSIONS = 0x1000
CHAFF_PRIO = {4: 10, 6: 11}
FIRST_SESSION_PRIO = 100
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
IPPROTO_TCP = 6
#: HTB's own default burst is rate/HZ + MTU; 4 ms is rate/HZ at HZ=250.
BURST_SECONDS = 0.004
MAX_QUANTUM = 200000
#: The highest rate a class may have, bytes/s (8.8 Tbit/s): far above any
#: link, and within what the privsep channel (64-bit integers) carries.
MAX_RATE = 1 << 40


def handle(minor):
    """Return the full handle of a class (or, minor 0, the root qdisc)."""
    return (ROOT_MAJOR << 16) | minor


ROOT_HANDLE = handle(0)


def handle_text(value):
    """Format a handle as tc prints it, major:minor in hex."""
    return '%x:%x' % (value >> 16, value & 0xFFFF)


def mib_to_bytes(rate_mib):
    """Convert MiB/s to bytes/s, the unit of the kernel's HTB rates."""
    return int(round(rate_mib * units.MIB))


def mbit_to_bytes(rate_mbit):
    """Convert Mbit/s to bytes/s."""
    return int(rate_mbit * 1000000 // 8)


def htb_shape(rate, mtu, ceil=None, prio=0):
    """Return the HTB class parameters for a rate in bytes/s.

    The burst is what the rate sends in 4 ms plus one MTU (HTB's default
    at HZ=250); the quantum is a tenth of a second's worth (r2q = 10),
    kept within [MTU, 200000] so the kernel does not warn.
    """
    ceil = rate if ceil is None else ceil
    if not 0 < rate <= ceil <= MAX_RATE:
        raise ValueError('need 0 < rate <= ceil <= %d bytes/s, got %s, %s' %
                         (MAX_RATE, rate, ceil))
    return {
        'rate': int(rate),
        'ceil': int(ceil),
        'burst': int(rate * BURST_SECONDS) + mtu,
        'cburst': int(ceil * BURST_SECONDS) + mtu,
        'quantum': int(min(max(rate // 10, mtu), MAX_QUANTUM)),
        'prio': prio,
    }


def session_minor(slot):
    """Return the class minor of the migration in session slot ``slot``."""
    if not 0 <= slot < MAX_SESSIONS:
        raise ValueError('session slot %d out of range' % slot)
    return FIRST_SESSION_MINOR + slot


def session_prio(slot):
    """Return the filter priority of the migration in slot ``slot``."""
    return FIRST_SESSION_PRIO + slot


def _tcp_keys(version):
    if version == 4:
        return [(IPPROTO_TCP << 16, 0x00FF0000, 8)]
    return [(IPPROTO_TCP << 8, 0x0000FF00, 4)]


def _dport_key(version, port, mask=0xFFFF):
    return (port & mask, mask, 20 if version == 4 else 40)


def migration_filter(peer, port):
    """Return (protocol, keys) matching TCP to ``peer``:``port``.

    The offsets assume no IPv4 options and no IPv6 extension headers, as
    iproute2's own ``match ip dport`` does; Linux TCP sends neither.
    """
    address = ipaddress.ip_address(peer)
    if not 1 <= port <= 65535:
        raise ValueError('port %r out of range' % port)
    words = int(address).to_bytes(address.max_prefixlen // 8, 'big')
    base = 16 if address.version == 4 else 24
    keys = _tcp_keys(address.version)
    for index in range(0, len(words), 4):
        keys.append((int.from_bytes(words[index:index + 4], 'big'),
                     0xFFFFFFFF, base + index))
    keys.append(_dport_key(address.version, port))
    protocol = ETH_P_IP if address.version == 4 else ETH_P_IPV6
    return protocol, keys


def port_blocks(ports):
    """Cover a range of ports with the fewest aligned (port, mask) blocks.

    u32 matches a port under a mask; a range becomes the power-of-two
    aligned blocks that tile it exactly.
    """
    blocks = []
    port, stop = ports.start, ports.stop
    while port < stop:
        size = port & -port if port else 1 << 16
        while port + size > stop:
            size //= 2
        blocks.append((port, 0xFFFF & ~(size - 1)))
        port += size
    return blocks


def chaff_filters(port_blocks):
    """Return [(version, protocol, keys)] for chaff port blocks.

    :param port_blocks: (port, mask) pairs; a packet whose TCP destination
        port ANDed with mask equals port is chaff
    """
    filters = []
    for version, protocol in ((4, ETH_P_IP), (6, ETH_P_IPV6)):
        for port, mask in port_blocks:
            keys = _tcp_keys(version) + [_dport_key(version, port, mask)]
            filters.append((version, protocol, keys))
    return filters
