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
"""The rtnetlink codec against messages a test crafts."""

import socket
import threading

import pytest

from nova_stealth.privileged import rtnl


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
    reply = rtnl.NLMSGHDR.pack(length, rtnl.NLMSG_ERROR, 0, 1, 0) + bytes(4)
    netlink = answer_with(reply)
    with netlink.sock:
        raised = run_briefly(lambda: netlink.request(
            rtnl.RTM_GETQDISC, 0, rtnl.tcmsg(1, 0, 0)))
    assert len(raised) == 1
    assert isinstance(raised[0], rtnl.NetlinkError)
    assert 'malformed netlink message: length %d' % length in str(
        raised[0])


def test_an_ack_with_our_sequence_number_ends_the_request():
    reply = rtnl.NLMSGHDR.pack(rtnl.NLMSGHDR.size + 4, rtnl.NLMSG_ERROR, 0,
                               1, 0) + bytes(4)
    netlink = answer_with(reply)
    with netlink.sock:
        assert netlink.request(rtnl.RTM_GETQDISC, 0,
                               rtnl.tcmsg(1, 0, 0)) == []
