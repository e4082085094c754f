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
"""A minimal rtnetlink codec for traffic-control messages.

pyroute2 spends about a millisecond of CPU building one class change, which
at a 10 ms tick is a tenth of a core; the modulator's hot path instead sends
a message encoded here (a few microseconds) on a socket opened once. The same
codec dumps and replays raw messages, so that an operator's root qdisc can be
put back exactly as it was.
"""

import errno
import os
import socket
import struct

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_ECHO = 0x8
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

RTM_NEWQDISC = 36
RTM_DELQDISC = 37
RTM_GETQDISC = 38
RTM_NEWTCLASS = 40
RTM_DELTCLASS = 41
RTM_GETTCLASS = 42
RTM_NEWTFILTER = 44
RTM_DELTFILTER = 45
RTM_GETTFILTER = 46

TCA_KIND = 1
TCA_OPTIONS = 2
TCA_STAB = 8
TCA_STATS2 = 7
TCA_CHAIN = 11
TCA_INGRESS_BLOCK = 13
TCA_EGRESS_BLOCK = 14
TCA_STATS_BASIC = 1
#: Attributes that describe a qdisc, class or filter, as opposed to its
#: statistics; only these are replayed.
CONFIG_ATTRS = (TCA_KIND, TCA_OPTIONS, TCA_STAB, TCA_CHAIN,
                TCA_INGRESS_BLOCK, TCA_EGRESS_BLOCK)

TCA_HTB_PARMS = 1
TCA_HTB_INIT = 2
TCA_HTB_DIRECT_QLEN = 5
TCA_HTB_RATE64 = 6
TCA_HTB_CEIL64 = 7

TCA_U32_CLASSID = 1
TCA_U32_SEL = 5
TCA_U32_PCNT = 10
TCA_U32_FLAGS = 11
#: TCA_CLS_FLAGS_SKIP_HW | TCA_CLS_FLAGS_SKIP_SW, the flags a request may set
TCA_CLS_FLAGS_SETTABLE = 0x3
TC_U32_TERMINAL = 1

TC_H_ROOT = 0xFFFFFFFF
TC_LINKLAYER_ETHERNET = 1
#: The kernel counts HTB buffers in 64 ns ticks (PSCHED_SHIFT = 6).
PSCHED_TICK_NS = 64
U32_MAX = 0xFFFFFFFF

NLMSGHDR = struct.Struct('=IHHII')
TCMSG = struct.Struct('=BxxxiIII')
NLATTR = struct.Struct('=HH')
HTB_OPT = struct.Struct('=BBHhHIBBHhHIIIIII')
HTB_GLOB = struct.Struct('=IIIII')
U32_SEL = struct.Struct('=BBBxHHhhI')
#: struct tc_u32_key: mask and value in network order, offsets in host order
U32_KEY_MATCH = struct.Struct('!II')
U32_KEY_OFFSET = struct.Struct('=ii')


def align(length):
    """Round a length up to the 4-byte netlink alignment."""
    return (length + 3) & ~3


def attr(kind, payload):
    """Encode one netlink attribute."""
    header = NLATTR.pack(NLATTR.size + len(payload), kind)
    return header + payload + b'\0' * (align(len(payload)) - len(payload))


def encode_attrs(attrs):
    """Encode {type: payload} as consecutive attributes."""
    return b''.join(attr(kind, value) for kind, value in attrs.items())


def parse_attrs(data, offset=0, end=None):
    """Return {type: payload} of the attributes in data[offset:end]."""
    end = len(data) if end is None else end
    attrs = {}
    while offset + NLATTR.size <= end:
        length, kind = NLATTR.unpack_from(data, offset)
        if length < NLATTR.size:
            break
        attrs[kind & 0x3FFF] = data[offset + NLATTR.size:offset + length]
        offset += align(length)
    return attrs


def tcmsg(ifindex, handle, parent):
    """Encode a struct tcmsg."""
    return TCMSG.pack(socket.AF_UNSPEC, ifindex, handle, parent, 0)


def htb_buffer_ticks(burst_bytes, rate_bytes):
    """Time to send ``burst_bytes`` at ``rate_bytes`` per second, in ticks."""
    return min(U32_MAX, int(burst_bytes * 1e9 / rate_bytes / PSCHED_TICK_NS))


def htb_class_options(rate, ceil, burst, cburst, quantum, prio=0):
    """Encode TCA_OPTIONS of an HTB class; rates in bytes per second."""
    parms = HTB_OPT.pack(
        0, TC_LINKLAYER_ETHERNET, 0, 0, 0, min(rate, U32_MAX),
        0, TC_LINKLAYER_ETHERNET, 0, 0, 0, min(ceil, U32_MAX),
        htb_buffer_ticks(burst, rate), htb_buffer_ticks(cburst, ceil),
        quantum, 0, prio)
    nested = attr(TCA_HTB_PARMS, parms)
    if rate > U32_MAX:
        nested += attr(TCA_HTB_RATE64, struct.pack('=Q', rate))
    if ceil > U32_MAX:
        nested += attr(TCA_HTB_CEIL64, struct.pack('=Q', ceil))
    return attr(TCA_KIND, b'htb\0') + attr(TCA_OPTIONS, nested)


def htb_qdisc_options(default_minor, direct_qlen=1000):
    """Encode TCA_OPTIONS of an HTB root qdisc."""
    glob = HTB_GLOB.pack(3, 10, default_minor, 0, 0)
    nested = (attr(TCA_HTB_INIT, glob) +
              attr(TCA_HTB_DIRECT_QLEN, struct.pack('=I', direct_qlen)))
    return attr(TCA_KIND, b'htb\0') + attr(TCA_OPTIONS, nested)


def filter_tcmsg(ifindex, parent, prio, protocol):
    """Encode the tcmsg of a filter: tcm_info is prio and protocol."""
    info = (prio << 16) | socket.htons(protocol)
    return TCMSG.pack(socket.AF_UNSPEC, ifindex, 0, parent, info)


def u32_options(keys, classid):
    """Encode a terminal u32 filter matching every key, to ``classid``.

    :param keys: (value, mask, offset) triples, 32-bit words in host order
        at byte offsets from the network header
    """
    sel = U32_SEL.pack(TC_U32_TERMINAL, 0, len(keys), 0, 0, 0, 0, 0)
    sel += b''.join(U32_KEY_MATCH.pack(mask, value & mask) +
                    U32_KEY_OFFSET.pack(offset, 0)
                    for value, mask, offset in keys)
    nested = (attr(TCA_U32_CLASSID, struct.pack('=I', classid)) +
              attr(TCA_U32_SEL, sel))
    return attr(TCA_KIND, b'u32\0') + attr(TCA_OPTIONS, nested)


def basic_bytes(message):
    """Return the byte counter of a tc message, from TCA_STATS2."""
    attrs = parse_attrs(message, NLMSGHDR.size + TCMSG.size)
    stats = attrs.get(TCA_STATS2)
    if stats is None:
        return None
    basic = parse_attrs(stats).get(TCA_STATS_BASIC)
    return struct.unpack_from('=Q', basic)[0] if basic else None


def message_handles(message):
    """Return (ifindex, handle, parent) of a tc message."""
    _family, ifindex, handle, parent, _info = TCMSG.unpack_from(
        message, NLMSGHDR.size)
    return ifindex, handle, parent


def message_kind(message):
    """Return TCA_KIND of a tc message as text."""
    attrs = parse_attrs(message, NLMSGHDR.size + TCMSG.size)
    return attrs.get(TCA_KIND, b'').rstrip(b'\0').decode()


def _htb_init_for_create(options):
    # An HTB root dumps its version as HTB_VER (0x30011) but accepts only
    # HTB_VER >> 16 (3) when created.
    nested = parse_attrs(options)
    if TCA_HTB_INIT not in nested:
        return options
    glob = bytearray(nested[TCA_HTB_INIT])
    struct.pack_into('=I', glob, 0, 3)
    nested[TCA_HTB_INIT] = bytes(glob)
    return encode_attrs(nested)


def _u32_for_create(options):
    # A dumped u32 key reports status flags (in_hw, not_in_hw) that a
    # request may not set, and performance counters.
    nested = parse_attrs(options)
    nested.pop(TCA_U32_PCNT, None)
    if TCA_U32_FLAGS in nested:
        flags = struct.unpack('=I', nested[TCA_U32_FLAGS])[0]
        nested[TCA_U32_FLAGS] = struct.pack('=I',
                                            flags & TCA_CLS_FLAGS_SETTABLE)
    return encode_attrs(nested)


_CREATE_FIXES = {
    (RTM_NEWQDISC, b'htb\0'): _htb_init_for_create,
    (RTM_NEWTFILTER, b'u32\0'): _u32_for_create,
}


def config_only(message):
    """Return the tcmsg and configuration attributes of a dumped message.

    The result is the body of a request that creates the same object.
    """
    body = message[NLMSGHDR.size:]
    head = body[:TCMSG.size]
    attrs = parse_attrs(body, TCMSG.size)
    msg_type = NLMSGHDR.unpack_from(message)[1]
    fix = _CREATE_FIXES.get((msg_type, attrs.get(TCA_KIND)))
    if fix and TCA_OPTIONS in attrs:
        attrs[TCA_OPTIONS] = fix(attrs[TCA_OPTIONS])
    return head + encode_attrs({kind: attrs[kind] for kind in CONFIG_ATTRS
                                if kind in attrs})


class NetlinkError(OSError):
    """The kernel refused a request."""


class RtnlSocket(object):
    """An rtnetlink socket in the caller's network namespace.

    :param sock: a datagram socket to use instead (tests)
    """

    def __init__(self, sock=None):
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                 NETLINK_ROUTE)
            sock.bind((0, 0))
        self.sock = sock
        self.seq = 0

    def close(self):
        """Close the socket."""
        self.sock.close()

    def _send(self, msg_type, flags, body):
        self.seq += 1
        header = NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type,
                               flags | NLM_F_REQUEST, self.seq, 0)
        self.sock.send(header + body)
        return self.seq

    def _replies(self, seq):
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + NLMSGHDR.size <= len(data):
                length, msg_type, _flags, msg_seq, _pid = NLMSGHDR.unpack_from(
                    data, offset)
                if length < NLMSGHDR.size or offset + length > len(data):
                    # A length that does not cover its own header would
                    # never move the offset on: the reader would spin.
                    raise NetlinkError(
                        errno.EBADMSG, 'malformed netlink message: length '
                        '%d at offset %d of %d bytes' % (length, offset,
                                                         len(data)))
                message = data[offset:offset + length]
                offset += align(length)
                if msg_seq != seq:
                    continue
                if msg_type == NLMSG_DONE:
                    return
                if msg_type == NLMSG_ERROR:
                    code = -struct.unpack_from('=i', message,
                                               NLMSGHDR.size)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return
                yield msg_type, message

    def request(self, msg_type, flags, body):
        """Send a request, wait for its ACK; return the messages before it."""
        seq = self._send(msg_type, flags | NLM_F_ACK, body)
        return [message for _type, message in self._replies(seq)]

    def dump(self, msg_type, body):
        """Return every message of a dump request."""
        seq = self._send(msg_type, NLM_F_DUMP, body)
        return [message for _type, message in self._replies(seq)]

    def change_htb_class(self, ifindex, handle, parent, options):
        """Change an HTB class in place; return its byte counter after."""
        replies = self.request(RTM_NEWTCLASS, NLM_F_ECHO,
                               tcmsg(ifindex, handle, parent) + options)
        for message in replies:
            return basic_bytes(message)
        return None


def ignore_exists(error):
    """True when a replayed object was already there."""
    return error.errno == errno.EEXIST
