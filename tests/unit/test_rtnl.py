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
"""The rtnetlink codec: crafted replies, and pyroute2 as an oracle."""

import socket
import threading

from pyroute2 import netlink
from pyroute2.netlink.rtnl import tcmsg
from pyroute2.netlink.rtnl.tcmsg import cls_u32
from pyroute2.netlink.rtnl.tcmsg import common
from pyroute2.netlink.rtnl.tcmsg import sched_htb
import pytest

from nova_stealth import rtnl
from nova_stealth.shaping import tree


def answer_with(reply):
    """An RtnlSocket whose kernel answers every request with ``reply``."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    def kernel_side():
        with kernel:
            kernel.recv(1 << 16)
            kernel.send(reply)

    threading.Thread(target=kernel_side, daemon=True).start()
    return rtnl.RtnlSocket(sock=ours)


def run_briefly(call):
    """Run ``call`` in a thread; return what it raised, within 2 s."""
    raised = []

    def target():
        try:
            call()
        except Exception as e:
            raised.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(2.0)
    assert not thread.is_alive(), 'the reader loops forever'
    return raised


@pytest.mark.parametrize('length', [0, 8, rtnl.NLMSGHDR.size + 100])
def test_a_reply_whose_length_is_wrong_is_refused(length):
    # Our sequence number (1), a length that covers less than its header
    # or more than the datagram: the old reader spun on the zero length.
    reply = rtnl.NLMSGHDR.pack(length=length, type=rtnl.NLMSG_ERROR,
                               seq=1) + bytes(4)
    netlink = answer_with(reply)
    with netlink.sock:
        raised = run_briefly(lambda: netlink.request(
            rtnl.RTM_GETQDISC, 0, rtnl.tcmsg(1, 0, 0)))
    assert len(raised) == 1
    assert isinstance(raised[0], rtnl.NetlinkError)
    assert 'malformed netlink message: length %d' % length in str(
        raised[0])


def test_an_ack_with_our_sequence_number_ends_the_request():
    reply = rtnl.netlink_message(rtnl.NLMSG_ERROR, bytes(4), seq=1)
    netlink = answer_with(reply)
    with netlink.sock:
        assert netlink.request(rtnl.RTM_GETQDISC, 0,
                               rtnl.tcmsg(1, 0, 0)) == []


def pyroute2_decoded(msg_type, body):
    """Our message as pyroute2's own tcmsg class decodes it."""
    message = rtnl.netlink_message(msg_type, body)
    decoded = tcmsg.tcmsg(message)
    decoded.decode()
    assert decoded['header']['length'] == len(message)
    assert decoded['header']['type'] == msg_type
    return decoded


#: Our names where pyroute2's differ: the kernel calls these bytes of
#: struct tc_ratespec ``linklayer`` now, and nlmsghdr's field nlmsg_seq.
RENAMED = {'rate_linklayer': 'rate___reserved',
           'ceil_linklayer': 'ceil___reserved', 'seq': 'sequence_number'}


@pytest.mark.parametrize('ours, theirs', [
    (rtnl.NLMSGHDR, netlink.nlmsg.header),
    (rtnl.NLMSGERR, netlink.nlmsgerr.fields),
    (rtnl.TCMSG, tcmsg.tcmsg.fields),
    (rtnl.TC_HTB_OPT, sched_htb.options.htb_parms.fields),
    (rtnl.TC_HTB_GLOB, sched_htb.options.htb_glob.fields),
    (rtnl.TC_U32_SEL, cls_u32.options.u32_sel.fields),
    (rtnl.TC_U32_KEY, cls_u32.options.u32_sel.u32_key.fields),
    (rtnl.GNET_STATS_BASIC, common.stats2.basic.fields),
])
def test_structs_are_pyroute2s(ours, theirs):
    assert [(RENAMED.get(name, name), code)
            for name, code in ours.fields] == list(theirs)


def test_a_struct_packs_its_fields_by_name():
    packed = rtnl.TC_U32_KEY.pack(key_mask=0xFFFF, key_val=0x1234, key_off=20)
    # Mask and value in network order, the offset in host order.
    assert packed[:8] == bytes.fromhex('0000ffff00001234')
    assert rtnl.TC_U32_KEY.unpack_from(packed) == {
        'key_mask': 0xFFFF, 'key_val': 0x1234, 'key_off': 20,
        'key_offmask': 0}
    with pytest.raises(TypeError, match='struct tc_u32_key has no field '
                       'mask'):
        rtnl.TC_U32_KEY.pack(mask=1)


@pytest.mark.parametrize('rate', [4 << 20, 1 << 35])
def test_htb_class_as_pyroute2_reads_it(rate):
    shape = tree.htb_shape(rate, 1500, ceil=2 * rate, prio=3)
    decoded = pyroute2_decoded(
        rtnl.RTM_NEWTCLASS, rtnl.tcmsg(7, tree.handle(0x105), tree.handle(1))
        + rtnl.htb_class_options(**shape))
    assert (decoded['index'], decoded['handle'], decoded['parent']) == (
        7, tree.handle(0x105), tree.handle(1))
    assert decoded.get_attr('TCA_KIND') == 'htb'
    options = decoded.get_attr('TCA_OPTIONS')
    parms = options.get_attr('TCA_HTB_PARMS')
    assert parms['rate___reserved'] == parms['ceil___reserved'] == (
        rtnl.TC_LINKLAYER_ETHERNET)
    assert parms['rate'] == min(rate, rtnl.U32_MAX)
    assert parms['ceil'] == min(2 * rate, rtnl.U32_MAX)
    # The kernel's buffers are the time to send the burst, in 64 ns ticks.
    assert parms['buffer'] == int(shape['burst'] * 1e9 / rate / 64)
    assert parms['cbuffer'] == int(shape['cburst'] * 1e9 / (2 * rate) / 64)
    assert (parms['quantum'], parms['prio']) == (shape['quantum'], 3)
    if rate > rtnl.U32_MAX:
        assert options.get_attr('TCA_HTB_RATE64') == rate
        assert options.get_attr('TCA_HTB_CEIL64') == 2 * rate
    else:
        assert options.get_attr('TCA_HTB_RATE64') is None


def test_htb_root_as_pyroute2_reads_it():
    decoded = pyroute2_decoded(
        rtnl.RTM_NEWQDISC, rtnl.tcmsg(7, tree.ROOT_HANDLE, rtnl.TC_H_ROOT) +
        rtnl.htb_qdisc_options(tree.DEFAULT_MINOR))
    assert (decoded['handle'], decoded['parent']) == (tree.ROOT_HANDLE,
                                                      rtnl.TC_H_ROOT)
    options = decoded.get_attr('TCA_OPTIONS')
    init = options.get_attr('TCA_HTB_INIT')
    assert (init['version'], init['rate2quantum'], init['defcls']) == (
        3, 10, tree.DEFAULT_MINOR)
    assert options.get_attr('TCA_HTB_DIRECT_QLEN') == 1000


def test_u32_filter_as_pyroute2_reads_it():
    protocol, keys = tree.migration_filter('2001:db8:7::2', 61001)
    decoded = pyroute2_decoded(
        rtnl.RTM_NEWTFILTER,
        rtnl.filter_tcmsg(7, tree.ROOT_HANDLE, 105, protocol) +
        rtnl.u32_options(keys, tree.handle(0x105)))
    # tcm_info: the priority above, the protocol in network order below.
    assert decoded['info'] >> 16 == 105
    assert socket.ntohs(decoded['info'] & 0xFFFF) == tree.ETH_P_IPV6
    assert decoded.get_attr('TCA_KIND') == 'u32'
    options = decoded.get_attr('TCA_OPTIONS')
    assert options.get_attr('TCA_U32_CLASSID') == tree.handle(0x105)
    sel = options.get_attr('TCA_U32_SEL')
    assert (sel['flags'], sel['nkeys']) == (rtnl.TC_U32_TERMINAL, len(keys))
    # pyroute2 (0.9) decodes the keys themselves one 32-bit word early
    # (its first key_mask is the selector's hmask), so it is no oracle for
    # them; the kernel's own reading of them is checked against tc's
    # output in tests/functional/test_dhtb.py.
