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
"""nova-stealth-audit on crafted captures that once crashed it."""

import ipaddress
import json

from nova_stealth.analysis import flows as flow_lib
from nova_stealth.cmd import audit as audit_cmd
from tests import captures

MASK = (1 << 64) - 1
START = 1700000000 * 10 ** 9


def _mix(digest, column, factor):
    digest = ((digest ^ column) * factor) & MASK
    return digest ^ (digest >> 31)


def colliding_destination(proto, sport, dport, src, dst, other_dst_hi):
    """The low half of a destination that collides with ``dst``'s digest.

    FlowTable's digest mixes five 64-bit columns one after the other with
    an invertible step; two keys that differ in the last two columns collide
    when the low halves absorb the difference of the high ones.
    """
    src_value = int(ipaddress.IPv6Address(src))
    dst_value = int(ipaddress.IPv6Address(dst))
    factors = [int(f) for f in flow_lib._MIX]
    columns = [proto << 32 | sport << 16 | dport, src_value >> 64,
               src_value & MASK, dst_value >> 64, dst_value & MASK]
    digest = 0
    for column, factor in zip(columns[:3], factors):
        digest = _mix(digest, column, factor)
    mine = _mix(digest, columns[3], factors[3])
    other = _mix(digest, other_dst_hi, factors[3])
    return mine ^ columns[4] ^ other


def test_flow_hash_collision_in_one_batch(tmp_path):
    src, dst = '2001:db8::1', '2001:db8::2'
    other_hi = 0x20010DB800000001
    other_lo = colliding_destination(6, 40000, 61000, src, dst, other_hi)
    other = str(ipaddress.IPv6Address(other_hi << 64 | other_lo))
    packets = []
    for index in range(5):
        target = dst if index % 2 == 0 else other
        packets.append((START + index * 1000, captures.ipv6_tcp(
            ipaddress.IPv6Address(src).packed,
            ipaddress.IPv6Address(target).packed, payload=b'z' * index)))
    path = tmp_path / 'collision.pcap'
    captures.write_raw_pcap(str(path), packets)

    found, _ = flow_lib.read_flows([str(path)], flow_lib.FlowOptions(
        min_packets=1))
    counts = {flow.key.dst: (flow.packets, flow.bytes) for flow in found}
    assert counts == {dst: (3, 3 * 60 + 0 + 2 + 4), other: (2, 2 * 60 + 4)}

    out = tmp_path / 'out'
    assert audit_cmd.main([str(path), '--out', str(out), '--min-packets',
                           '1', '-q']) == 0
    report = json.loads((out / 'report.json').read_text())
    assert sorted(f['dst'] for f in report['flows']) == sorted([dst, other])


def test_timestamps_going_back_in_the_plot_pass(tmp_path):
    """A clock stepped back 10 s in the middle of a flow (NTP, a VM)."""
    src = (198, 18, 0, 1)
    times = [START + i * 10 ** 7 for i in range(50)]
    times += [START - 10 * 10 ** 9 + i * 10 ** 7 for i in range(50)]
    path = tmp_path / 'backwards.pcap'
    captures.write_raw_pcap(str(path), [
        (ns, captures.ipv4_tcp(src=src, payload=b'b' * 100))
        for ns in times])
    out = tmp_path / 'out'
    assert audit_cmd.main([str(path), '--out', str(out), '--min-packets',
                           '10', '-q']) == 0
    assert (out / 'throughput.png').stat().st_size > 1000
    report = json.loads((out / 'report.json').read_text())
    (flow,) = report['flows']
    assert flow['packets'] == 100


def test_throughput_series_leaves_out_packets_before_the_first(tmp_path):
    from nova_stealth.analysis import report as report_lib

    times = [START + i * 10 ** 7 for i in range(50)]
    times += [START - 10 * 10 ** 9 + i * 10 ** 7 for i in range(50)]
    times += [START + 10 ** 9]
    path = tmp_path / 'backwards.pcap'
    captures.write_raw_pcap(str(path), [
        (ns, captures.ipv4_tcp(payload=b'b' * 100)) for ns in times])
    (flow,), _ = flow_lib.read_flows([str(path)], flow_lib.FlowOptions(
        min_packets=1))
    series = report_lib.throughput_series([str(path)], [flow.key])[flow.key]
    counted = series.sum() * report_lib.PLOT_BIN / 8 * 1e6
    assert round(counted) == 51 * 140
    assert series[100] > 0
