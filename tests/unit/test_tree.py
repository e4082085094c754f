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
"""The DHTB tree model and the netlink encoding of its parts."""

import struct

import pytest

from nova_stealth import rtnl
from nova_stealth.shaping import tree


def test_handles():
    assert tree.ROOT_HANDLE == 0x5EA10000
    assert tree.handle_text(tree.handle(tree.session_minor(0))) == '5ea1:100'
    assert tree.session_prio(3) == 103
    with pytest.raises(ValueError):
        tree.session_minor(tree.MAX_SESSIONS)


def test_units():
    assert tree.mib_to_bytes(4) == 4194304
    assert tree.mbit_to_bytes(8) == 1000000


def test_htb_shape_burst_and_quantum():
    shape = tree.htb_shape(tree.mib_to_bytes(4), 1500)
    assert shape['rate'] == shape['ceil'] == 4194304
    assert shape['burst'] == int(4194304 * 0.004) + 1500
    assert shape['quantum'] == 200000
    small = tree.htb_shape(10000, 1500)
    assert small['quantum'] == 1500
    with pytest.raises(ValueError):
        tree.htb_shape(0, 1500)
    # 2**70 bytes/s would not even cross the privsep channel.
    with pytest.raises(ValueError, match='<= 1099511627776 bytes/s'):
        tree.htb_shape(2 ** 70, 1500)
    assert tree.htb_shape(tree.MAX_RATE, 1500)['rate'] == tree.MAX_RATE


def test_ipv4_migration_filter():
    protocol, keys = tree.migration_filter('198.18.7.2', 61001)
    assert protocol == tree.ETH_P_IP
    assert keys == [(0x00060000, 0x00FF0000, 8),
                    (0xC6120702, 0xFFFFFFFF, 16),
                    (61001, 0xFFFF, 20)]


def test_ipv6_migration_filter():
    protocol, keys = tree.migration_filter('2001:db8:7::2', 443)
    assert protocol == tree.ETH_P_IPV6
    assert keys == [(0x00000600, 0x0000FF00, 4),
                    (0x20010DB8, 0xFFFFFFFF, 24),
                    (0x00070000, 0xFFFFFFFF, 28),
                    (0, 0xFFFFFFFF, 32),
                    (2, 0xFFFFFFFF, 36),
                    (443, 0xFFFF, 40)]


@pytest.mark.parametrize('peer,port', [('198.18.0.1', 0),
                                       ('198.18.0.1', 65536),
                                       ('not-an-address', 80)])
def test_migration_filter_rejects_bad_input(peer, port):
    with pytest.raises(ValueError):
        tree.migration_filter(peer, port)


def test_chaff_filters_cover_both_families():
    filters = tree.chaff_filters([(0x7000, 0xFF00)])
    assert [(v, p) for v, p, _ in filters] == [(4, tree.ETH_P_IP),
                                               (6, tree.ETH_P_IPV6)]
    assert filters[0][2][-1] == (0x7000, 0xFF00, 20)
    assert filters[1][2][-1] == (0x7000, 0xFF00, 40)


def test_htb_class_options_layout():
    encoded = rtnl.htb_class_options(**tree.htb_shape(1000000, 1500))
    attrs = rtnl.parse_attrs(encoded)
    assert attrs[rtnl.TCA_KIND] == b'htb\0'
    nested = rtnl.parse_attrs(attrs[rtnl.TCA_OPTIONS])
    parms = rtnl.TC_HTB_OPT.unpack_from(nested[rtnl.TCA_HTB_PARMS])
    assert parms['rate_linklayer'] == rtnl.TC_LINKLAYER_ETHERNET
    assert parms['rate'] == parms['ceil'] == 1000000
    assert parms['buffer'] == int(5500 * 1e9 / 1000000 / 64)
    assert rtnl.TCA_HTB_RATE64 not in nested


def test_htb_rates_above_32_bits_use_rate64():
    rate = tree.mbit_to_bytes(100000)
    nested = rtnl.parse_attrs(rtnl.parse_attrs(rtnl.htb_class_options(
        **tree.htb_shape(rate, 1500)))[rtnl.TCA_OPTIONS])
    assert struct.unpack('=Q', nested[rtnl.TCA_HTB_RATE64])[0] == rate
    assert rtnl.TC_HTB_OPT.unpack_from(
        nested[rtnl.TCA_HTB_PARMS])['rate'] == 0xFFFFFFFF


def test_u32_selector_layout():
    encoded = rtnl.u32_options([(61001, 0xFFFF, 20)], 0x5EA10100)
    nested = rtnl.parse_attrs(rtnl.parse_attrs(encoded)[rtnl.TCA_OPTIONS])
    assert struct.unpack('=I', nested[rtnl.TCA_U32_CLASSID])[0] == 0x5EA10100
    sel = nested[rtnl.TCA_U32_SEL]
    flags, _shift, nkeys = struct.unpack_from('=BBB', sel)
    assert (flags, nkeys) == (rtnl.TC_U32_TERMINAL, 1)
    key = sel[rtnl.TC_U32_SEL.size:]
    assert key[:8] == bytes.fromhex('0000ffff0000ee49')
    assert struct.unpack('=ii', key[8:]) == (20, 0)


def test_dumped_htb_root_version_is_fixed_for_create():
    glob = rtnl.TC_HTB_GLOB.pack(version=0x30011, rate2quantum=10, defcls=2)
    options = rtnl.attr(rtnl.TCA_HTB_INIT, glob)
    body = (rtnl.tcmsg(3, 0x200000, rtnl.TC_H_ROOT) +
            rtnl.attr(rtnl.TCA_KIND, b'htb\0') +
            rtnl.attr(rtnl.TCA_OPTIONS, options) +
            rtnl.attr(rtnl.TCA_STATS2, b'\0' * 8))
    message = rtnl.netlink_message(rtnl.RTM_NEWQDISC, body)
    fixed = rtnl.config_only(message)
    attrs = rtnl.parse_attrs(fixed, rtnl.TCMSG.size)
    assert rtnl.TCA_STATS2 not in attrs
    init = rtnl.parse_attrs(attrs[rtnl.TCA_OPTIONS])[rtnl.TCA_HTB_INIT]
    assert rtnl.TC_HTB_GLOB.unpack_from(init)['version'] == 3


@pytest.mark.parametrize('ports', [range(61500, 61504), range(61000, 65000),
                                   range(1, 2), range(1000, 1001),
                                   range(40000, 40013)])
def test_port_blocks_tile_the_range_exactly(ports):
    blocks = tree.port_blocks(ports)
    covered = [port for port in range(1 << 16)
               if any(port & mask == value for value, mask in blocks)]
    assert covered == list(ports)


def test_port_blocks_are_few():
    assert tree.port_blocks(range(61500, 61504)) == [(61500, 0xFFFC)]
    assert len(tree.port_blocks(range(61000, 65000))) <= 16


def test_shaper_takes_the_chaff_ports_from_the_options(write_conf):
    from nova_stealth.shaping import tc_lib
    conf = write_conf(chaff_ports='61500-61503', chaff_max_rate='3',
                      link_rate_mbit='10000', state_dir='/tmp/nowhere')
    kernel = object()
    shaper = tc_lib.Shaper.from_conf(conf.stealth, kernel)
    assert shaper.kernel is kernel
    assert shaper.chaff_port_blocks == [(61500, 0xFFFC)]
    assert shaper.chaff_rate == tree.mib_to_bytes(3)
    assert shaper.link_rate == tree.mbit_to_bytes(10000)
