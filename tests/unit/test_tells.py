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
"""The observer's other senses, on crafted captures and real hellos."""

import json
import ssl

import hypothesis
from hypothesis import strategies
import pytest

from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import tells
from nova_stealth.analysis import tls_hello
from nova_stealth.cmd import audit as audit_cmd
from nova_stealth.cmd import testbed as testbed_cmd
from nova_stealth.testbed import runner
from tests import captures

START = 1700000000 * 10 ** 9
SECOND = 10 ** 9
SRC, DST, OTHER = (198, 18, 0, 1), (198, 19, 0, 1), (198, 18, 0, 9)
FIN, SYN, RST, ACK, PSH = 0x01, 0x02, 0x04, 0x10, 0x08


def connection(start, sport, dport, first, packets=10, ending=FIN,
               src=SRC, dst=DST, gap=10 ** 6, handshake=True):
    """(time, packet) pairs of one TCP connection from src to dst."""
    out = []
    now = start
    if handshake:
        out.append((now, captures.ipv4_tcp(sport, dport, src=src, dst=dst,
                                           flags=SYN)))
        out.append((now + 1000, captures.ipv4_tcp(dport, sport, src=dst,
                                                  dst=src,
                                                  flags=SYN | ACK)))
        now += 2000
    for index in range(packets):
        payload = first if index == 0 else b'd' * 1000
        out.append((now, captures.ipv4_tcp(sport, dport, payload, src=src,
                                           dst=dst, flags=ACK | PSH)))
        now += gap
    if ending:
        out.append((now, captures.ipv4_tcp(sport, dport, src=src, dst=dst,
                                           flags=ending | ACK)))
    return out


TLS12_SUITES = ':'.join((
    'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES256-GCM-SHA384',
    'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256',
    'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
    'ECDHE-ECDSA-AES256-SHA384', 'ECDHE-RSA-AES256-SHA384',
    'ECDHE-ECDSA-AES128-SHA256', 'ECDHE-RSA-AES128-SHA256',
    'DHE-RSA-AES256-GCM-SHA384', 'DHE-RSA-AES128-GCM-SHA256',
    'DHE-RSA-AES256-SHA256', 'DHE-RSA-AES128-SHA256'))


def client_hello(alpn=('h2', 'http/1.1'), server_name='migration.example'):
    """The bytes Python's ssl (OpenSSL) sends first, without a network."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Name the TLS 1.2 suites: the default list differs between Python
    # builds (Debian's python3 offers 60 where others offer 14). Keep the
    # hello long enough that OpenSSL adds no padding extension, which only
    # one of the two hellos below would carry.
    context.set_ciphers(TLS12_SUITES)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read(), context


def read(tmp_path, packets, min_packets=5, snaplen=65535):
    packets = sorted(packets, key=lambda item: item[0])
    path = tmp_path / 'tells.pcap'
    captures.write_pcap(str(path), 101, snaplen, [
        (ns // SECOND, ns % SECOND, len(data), data[:snaplen])
        for ns, data in packets], nano=True)
    options = flow_lib.FlowOptions(min_packets=min_packets)
    table = tells.TellTable(options)
    found, _ = flow_lib.read_flows([str(path)], options, also=[table])
    return {(f.key.sport, f.key.dport): table.tells_of(f.key)
            for f in found}, path


def test_plaintext_magic_ending_port_and_co_timing(tmp_path):
    packets = connection(START, 40000, 49152, b'QEVM\x00\x00\x00\x03',
                         ending=RST)
    # Two chaff-like connections to the destination just before.
    packets += connection(START - 8 * SECOND, 40001, 61500,
                          b'NSC1\x00\x10', packets=6)
    packets += connection(START - 5 * SECOND, 40002, 61501,
                          b'NSC1\x00\x10', packets=6)
    # One between other hosts, and one long before: not co-timed.
    packets += connection(START - 2 * SECOND, 40003, 443, b'GET / HTTP',
                          src=OTHER, packets=6)
    packets += connection(START - 100 * SECOND, 40004, 22, b'SSH-2.0',
                          packets=6)
    found, _ = read(tmp_path, packets)
    migration = found[(40000, 49152)]
    assert migration['payload_prefix'] == 'qemu-migration (QEVM)'
    assert migration['ending'] == 'rst'
    assert migration['server_port'] == '49152'
    assert migration['port_range'] == 'libvirt migration 49152-49215'
    assert migration['co_timing_count'] == 2
    assert migration['co_timing'] == '2-3'
    assert migration['tls_client_hello'] == 'none'
    chaff = found[(40001, 61500)]
    assert chaff['payload_prefix'] == 'nova-stealth chaff hello (NSC1)'
    assert chaff['ending'] == 'fin'
    assert chaff['port_range'] == 'dynamic 49216-65535'
    assert chaff['co_timing_count'] == 0
    assert found[(40002, 61501)]['co_timing_count'] == 1
    assert found[(40003, 443)]['co_timing_count'] == 0
    assert found[(40003, 443)]['payload_prefix'] == 'http'
    assert found[(40004, 22)]['port_range'] == 'well-known 0-1023'
    # The reverse direction (SYN-ACK only) carries no data.
    assert (49152, 40000) not in found


def test_no_ending_and_no_handshake(tmp_path):
    packets = connection(START, 50000, 8080, b'\x01\x02\x03\x04\x05',
                         ending=0, handshake=False)
    found, _ = read(tmp_path, packets)
    tell = found[(50000, 8080)]
    assert tell['ending'] == 'none'
    assert tell['payload_prefix'] == 'hex 01020304'
    # Without a SYN the server is taken to be the lower port.
    assert tell['server_port'] == '8080'
    assert tell['port_range'] == 'registered 1024-32767'


def test_client_hello_of_python_ssl():
    hello_bytes, context = client_hello()
    hello = tls_hello.parse_client_hello(hello_bytes)
    offered = {cipher['id'] & 0xFFFF for cipher in context.get_ciphers()}
    # OpenSSL adds the renegotiation signalling value, no real suite.
    offered.add(0x00FF)
    ciphers = [c for c in hello.ciphers if not tls_hello.is_grease(c)]
    assert set(ciphers) == offered
    assert hello.alpn == ['h2', 'http/1.1']
    assert hello.server_name
    assert hello.version == 0x0304
    assert not hello.truncated
    assert tls_hello.EXT_SUPPORTED_VERSIONS in hello.extensions
    ja4 = hello.ja4()
    head = 't13d%02d%02dh2' % (len(ciphers), len(hello.extensions))
    assert ja4.startswith(head + '_'), ja4
    assert len(ja4) == len(head) + 26
    # No ALPN, no SNI: another head; JA4's hashes leave both out.
    other = tls_hello.parse_client_hello(client_hello(
        alpn=None, server_name=None)[0])
    assert other.ja4().startswith('t13i')
    assert other.ja4()[8:10] == '00'
    assert other.ja4()[:10] != ja4[:10]
    assert other.ja4()[10:] == ja4[10:]


def test_client_hello_in_a_capture_and_cut_by_the_snap_length(tmp_path):
    hello_bytes, _context = client_hello()
    expected = tls_hello.parse_client_hello(hello_bytes).ja4()
    packets = connection(START, 41000, 16509, hello_bytes)
    found, _ = read(tmp_path, packets)
    tell = found[(41000, 16509)]
    assert tell['tls_client_hello'] == expected
    assert tell['payload_prefix'] == 'tls-handshake'
    assert tell['tls_fields']['alpn'] == ['h2', 'http/1.1']
    cut, _ = read(tmp_path, packets, snaplen=96)
    assert cut[(41000, 16509)]['tls_client_hello'].endswith('~')


def test_client_hello_over_two_segments(tmp_path):
    hello_bytes, _context = client_hello()
    expected = tls_hello.parse_client_hello(hello_bytes).ja4()
    packets = connection(START, 42000, 443, hello_bytes[:200])
    # The second data packet carries the rest of the hello.
    packets[3] = (packets[3][0], captures.ipv4_tcp(
        42000, 443, hello_bytes[200:], src=SRC, dst=DST, flags=ACK))
    found, _ = read(tmp_path, packets)
    assert found[(42000, 443)]['tls_client_hello'] == expected
    assert not expected.endswith('~')
    # Cut after the first segment (the connection ends), it is truncated.
    found, _ = read(tmp_path, packets[:3] + packets[-1:], min_packets=1)
    cut = found[(42000, 443)]['tls_client_hello']
    assert cut.endswith('~')
    # The cipher suites were all in the first 200 bytes; not every
    # extension (supported_versions among them) was.
    assert cut.split('_')[1] == expected.split('_')[1]
    assert cut.split('_')[2] != expected.split('_')[2]


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(strategies.integers(0, 600),
                  strategies.lists(strategies.tuples(
                      strategies.integers(0, 599),
                      strategies.integers(0, 255)), max_size=6))
def test_client_hello_parser_never_raises(cut, edits):
    data = bytearray(HELLO[:cut])
    for position, value in edits:
        if position < len(data):
            data[position] = value
    hello = tls_hello.parse_client_hello(bytes(data))
    if hello is not None:
        hello.ja4()
        json.dumps(hello.as_dict())
        if cut < len(HELLO) and not edits:
            assert hello.truncated


HELLO = client_hello()[0]


def test_audit_reports_the_tells(tmp_path):
    packets = connection(START, 40000, 49152, b'QEVM\x00\x00\x00\x03',
                         ending=RST, packets=30)
    packets += connection(START - 5 * SECOND, 40001, 61500,
                          b'NSC1\x00\x10', packets=30)
    for index in range(4):
        packets += connection(START + index * SECOND, 30000 + index, 443,
                              client_hello()[0], src=OTHER, packets=30)
    _found, path = read(tmp_path, packets)
    truth_path = tmp_path / 'truth.json'
    truth_path.write_text(json.dumps({'flows': [
        {'proto': 'tcp', 'src': '198.18.0.1', 'sport': 40000,
         'dst': '198.19.0.1', 'dport': 49152, 'label': 'migration',
         'kind': 'native'},
        {'proto': 'tcp', 'src': '198.18.0.1', 'sport': 40001,
         'dst': '198.19.0.1', 'dport': 61500, 'label': 'chaff',
         'kind': 'chaff'}]}))
    out = tmp_path / 'out'
    assert audit_cmd.main([str(path), '--out', str(out), '--min-packets',
                           '20', '--truth', str(truth_path), '--no-plots',
                           '-q']) == 0
    report = json.loads((out / 'report.json').read_text())
    rows = {row['value']: row['flows']
            for row in report['tells']['payload_prefix']['rows']}
    assert rows['qemu-migration (QEVM)'] == {'migration': 1}
    assert rows['nova-stealth chaff hello (NSC1)'] == {'chaff': 1}
    assert rows['tls-handshake'] == {'background': 4}
    (rare,) = report['tells']['ending']['migration_values']
    assert rare['value'] == 'rst' and rare['background_share'] == 0.0
    by_port = {f['sport']: f['tells'] for f in report['flows']}
    assert by_port[40000]['ending'] == 'rst'
    text = (out / 'report.md').read_text()
    assert '### payload_prefix' in text
    assert 'Migrations show `qemu-migration (QEVM)`' in text


def test_testbed_captures_at_the_snap_length_asked_for():
    assert testbed_cmd.parse_args(['run', '--out', 'x']).snaplen == (
        runner.SNAPLEN)
    assert testbed_cmd.parse_args(['run', '--out', 'x', '--snaplen',
                                   '0']).snaplen == 0
    with pytest.raises(SystemExit):
        testbed_cmd.parse_args(['run', '--out', 'x', '--snaplen', '-1'])


def rows_of(counts):
    """summarize()'s rows from {value: {label: flows}}."""
    return [{'value': value, 'flows': flows}
            for value, flows in counts.items()]


def test_a_value_only_migrations_show_catches_them_all():
    point = tells.operating_point(rows_of({
        'QEVM': {'migration': 6},
        'tls': {'chaff': 30, 'background': 990, 'migration': 2},
        'http': {'background': 10}}))
    assert point['migration']['tpr'] == pytest.approx(6 / 8)
    assert point['migration']['fpr'] == 0.0
    assert point['migration']['values'] == ['QEVM']
    # Chaff shows only what 99% of the background shows: none flagged.
    assert point['chaff'] == {'tpr': 0.0, 'fpr': 0.0, 'values': []}


def test_the_rule_stays_within_two_percent_of_the_background():
    # 'rare' is 1.5% of the background: flagged, with the migrations and
    # chaff that show it; 'seldom', more telling, is 2.5% alone.
    point = tells.operating_point(rows_of({
        'rare': {'background': 15, 'migration': 3, 'chaff': 1},
        'seldom': {'background': 25, 'migration': 5},
        'common': {'background': 960, 'migration': 2, 'chaff': 9}}))
    assert point['migration']['values'] == ['rare']
    assert point['migration']['tpr'] == pytest.approx(0.3)
    assert point['migration']['fpr'] == pytest.approx(0.015)
    assert point['chaff']['tpr'] == pytest.approx(0.1)


def test_no_background_no_operating_point():
    assert tells.operating_point(rows_of({'x': {'migration': 3}})) == {}
