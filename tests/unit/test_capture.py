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
"""The capture reader on real captures and on damaged copies of them."""

import os
import shutil
import struct

import hypothesis
from hypothesis import strategies
import pytest

from nova_stealth.analysis import capture
from nova_stealth.analysis import flows as flow_lib
from nova_stealth import exception
from tests import captures
from tests import paths

TRACES = paths.traces()
ANDROID = TRACES / 'ndpi' / 'android.pcap'
ESPN = TRACES / 'chrissanders-ppa' / 'http_espn.pcapng'

#: Packet counts from ../shared/traces/README.md.
KNOWN_COUNTS = {
    'ndpi/android.pcap': 500, 'ndpi/443-firefox.pcap': 667,
    'ndpi/alexa-app.pcapng': 3103, 'chrissanders-ppa/http_espn.pcapng': 956,
    'zeek-http/no_crlf.pcap': 1519,
    'mlab-ndt/ndt-nnwk2_1611335823_00000000000C2E15.pcap': 6774,
    'requet-youtube/baseline_Mar19_exp_255.pcap': 24863,
}


def read_all(path, **kwargs):
    reader = capture.CaptureReader(str(path), **kwargs)
    return reader, sum(len(batch) for batch in reader)


def record_offsets(path):
    with open(path, 'rb') as capture_file:
        data = capture_file.read()
    little = (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1')
    order = '<' if data[:4] in little else '>'
    offsets, position = [], 24
    while position + 16 <= len(data):
        offsets.append(position)
        position += 16 + struct.unpack(order + 'I',
                                       data[position + 8:position + 12])[0]
    return order, offsets


@pytest.mark.parametrize('name,count', sorted(KNOWN_COUNTS.items()))
def test_packet_counts_of_real_captures(name, count):
    _reader, packets = read_all(TRACES / name, chunk_bytes=1 << 16)
    assert packets == count


NETFLIX = TRACES / 'ndpi' / 'netflix.pcap'


def _signature(path, chunk_bytes):
    found, readers = flow_lib.read_flows(
        [str(path)], flow_lib.FlowOptions(min_packets=1, tcp_only=False),
        chunk_bytes=chunk_bytes)
    assert readers[0].chunk_bytes == chunk_bytes
    return readers[0].packets, [
        (str(f.key), f.packets, f.bytes, f.first_ns, f.last_ns,
         f.burst_starts.tolist()) for f in found]


def _largest_record(path):
    if str(path).endswith('.pcapng'):
        data = path.read_bytes()
        lengths, position = [], 0
        while position < len(data):
            lengths.append(struct.unpack_from('<I', data, position + 4)[0])
            position += lengths[-1]
        return max(lengths)
    order, offsets = record_offsets(path)
    return max(b - a for a, b in zip(offsets, offsets[1:]))


@pytest.fixture(scope='module')
def netflix_pcapng(tmp_path_factory):
    path = tmp_path_factory.mktemp('chunks') / 'netflix.pcapng'
    captures.pcap_to_pcapng(NETFLIX, str(path))
    return path


@pytest.mark.parametrize('kind', ['pcap', 'pcapng'])
def test_small_chunks_read_the_same_as_large(kind, netflix_pcapng):
    """Records that straddle chunks are carried over whole.

    Chunks smaller than one record (every record straddles), about one
    record, a few records and the whole file all give the same flows.
    """
    path = NETFLIX if kind == 'pcap' else netflix_pcapng
    record = _largest_record(path)
    assert record > 1000
    whole = _signature(path, capture.CHUNK_BYTES)
    assert whole[0] > 1000
    for chunk in (7, record // 3, record - 1, record, record + 1,
                  3 * record + 5, 65536):
        assert _signature(path, chunk) == whole, chunk


def test_truncated_pcap_names_the_last_record(tmp_path):
    _order, offsets = record_offsets(ANDROID)
    damaged = tmp_path / 'truncated.pcap'
    data = ANDROID.read_bytes()
    damaged.write_bytes(data[:offsets[-1] + 20])
    with pytest.raises(exception.CaptureError) as raised:
        read_all(damaged)
    message = str(raised.value)
    assert str(damaged) in message
    assert 'byte offset %d: truncated record' % offsets[-1] in message
    reader, packets = read_all(damaged, tolerant=True)
    assert packets == 499
    assert 'truncated record' in reader.error


def test_corrupt_pcap_record_names_its_offset(tmp_path):
    order, offsets = record_offsets(ANDROID)
    data = bytearray(ANDROID.read_bytes())
    struct.pack_into(order + 'I', data, offsets[200] + 8, 0x7FFFFFF0)
    damaged = tmp_path / 'corrupt.pcap'
    damaged.write_bytes(bytes(data))
    with pytest.raises(exception.CaptureError) as raised:
        read_all(damaged, chunk_bytes=1 << 12)
    assert 'byte offset %d: corrupt record header' % offsets[200] in str(
        raised.value)
    reader, packets = read_all(damaged, tolerant=True)
    assert packets == 200
    assert reader.error


def test_truncated_and_corrupt_pcapng(tmp_path):
    data = ESPN.read_bytes()
    truncated = tmp_path / 'truncated.pcapng'
    truncated.write_bytes(data[:-7])
    with pytest.raises(exception.CaptureError, match='truncated block'):
        read_all(truncated)
    corrupt = bytearray(data)
    # The second block (the first IDB) follows the SHB; break its length.
    shb_length = struct.unpack('<I', data[4:8])[0]
    struct.pack_into('<I', corrupt, shb_length + 4, 13)
    damaged = tmp_path / 'corrupt.pcapng'
    damaged.write_bytes(bytes(corrupt))
    with pytest.raises(exception.CaptureError) as raised:
        read_all(damaged)
    assert 'byte offset %d: corrupt block length 13' % shb_length in str(
        raised.value)


def test_not_a_capture(tmp_path):
    text = tmp_path / 'notes.txt'
    text.write_text('hello\n')
    with pytest.raises(exception.CaptureError, match='byte offset 0: not a'):
        read_all(text)


def test_unsupported_link_type(tmp_path):
    _order, linktype, snaplen, _ns, records = captures.pcap_records(ANDROID)
    odd = tmp_path / 'odd.pcap'
    captures.write_pcap(str(odd), 147, snaplen, records)
    with pytest.raises(exception.CaptureError, match='link type 147'):
        read_all(odd)


def flows_of(path):
    fl, _ = flow_lib.read_flows([str(path)], flow_lib.FlowOptions(
        min_packets=1, tcp_only=False))
    return {(str(f.key), f.packets) for f in fl}


def derive(tmp_path, name, linktype, reframe):
    """Re-frame every Ethernet frame of a real capture."""
    _order, _lt, snaplen, _ns, records = captures.pcap_records(ANDROID)
    out = tmp_path / name
    captures.write_pcap(str(out), linktype, snaplen + 8, [
        (s, f, w - 14 + len(reframe(d)) - len(d) + 14, reframe(d))
        for s, f, w, d in records])
    return out


def test_derived_link_types_give_the_same_flows(tmp_path):
    expected = flows_of(ANDROID)
    assert len(expected) > 50

    def null_family(frame):
        family = 2 if frame[12:14] == b'\x08\x00' else 30
        return struct.pack('<I', family) + frame[14:]

    def tagged(frame, tags):
        return frame[:12] + b''.join(tags) + frame[12:]

    derived = {
        'raw.pcap': (101, lambda frame: frame[14:]),
        'null.pcap': (0, null_family),
        'vlan.pcap': (1, lambda frame: tagged(frame, [b'\x81\x00\x00\x2a'])),
        'qinq.pcap': (1, lambda frame: tagged(
            frame, [b'\x88\xa8\x00\x07', b'\x81\x00\x00\x2a'])),
    }
    for name, (linktype, reframe) in derived.items():
        assert flows_of(derive(tmp_path, name, linktype, reframe)) == (
            expected), name


def test_original_length_is_used(tmp_path):
    fl, _ = flow_lib.read_flows(
        [str(TRACES / 'mlab-ndt' /
             'ndt-nnwk2_1611335823_00000000000C2E15.pcap')])
    big = max(fl, key=lambda f: f.bytes)
    # 27.18 MB in the provenance table, from a capture of 94-byte records.
    assert big.bytes / big.packets > 1000


SAMPLE = ANDROID.read_bytes()[:24 + 40 * 300]


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    strategies.lists(strategies.tuples(strategies.integers(0, len(SAMPLE) - 1),
                                       strategies.integers(0, 255)),
                     min_size=1, max_size=8),
    strategies.integers(24, len(SAMPLE)))
def test_damaged_pcap_fails_only_with_capture_error(tmp_path_factory, edits,
                                                    cut):
    data = bytearray(SAMPLE[:cut])
    for position, value in edits:
        if position < len(data):
            data[position] = value
    path = tmp_path_factory.mktemp('fuzz') / 'fuzzed.pcap'
    path.write_bytes(bytes(data))
    try:
        for batch in capture.CaptureReader(str(path), chunk_bytes=2048):
            assert len(batch.time_ns) == len(batch.sport)
    except exception.CaptureError as e:
        assert str(path) in str(e)


ESPN_SAMPLE = ESPN.read_bytes()[:20000]


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(strategies.lists(
    strategies.tuples(strategies.integers(0, len(ESPN_SAMPLE) - 1),
                      strategies.integers(0, 255)), min_size=1, max_size=8))
def test_damaged_pcapng_fails_only_with_capture_error(tmp_path_factory,
                                                      edits):
    data = bytearray(ESPN_SAMPLE)
    for position, value in edits:
        data[position] = value
    path = tmp_path_factory.mktemp('fuzz') / 'fuzzed.pcapng'
    path.write_bytes(bytes(data))
    try:
        for _batch in capture.CaptureReader(str(path), chunk_bytes=4096):
            pass
    except exception.CaptureError as e:
        assert str(path) in str(e)


def test_shared_trace_directory_is_there():
    assert len([p for p in TRACES.rglob('*.pcap*')]) >= 40
    assert shutil.which('true')
    assert os.path.exists(ANDROID)
