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
"""The lab, small: ``nova-stealth-testbed lab --quick``.

Greedy senders through the engine and QEMU-paced senders on two sites at
once (Markov and trace-driven background, load S), captured at the router
and scored. Also: the trace envelopes of a crafted capture, and Ctrl-C in
the middle of a lab leaves nothing behind.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import dpkt
import numpy as np
import pytest

from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import multiscale
from nova_stealth.cmd import testbed as testbed_cmd
from nova_stealth import procfs
from nova_stealth.testbed import lab_report
from nova_stealth.testbed import netns
from nova_stealth.testbed import replay
from nova_stealth.testbed import runner as runner_lib
from nova_stealth.testbed import topology
from nova_stealth.testbed import x509
from tests import captures
from tests.functional import test_testbed
from tests import paths

TESTBED = [sys.executable, '-m', 'nova_stealth.cmd.testbed']
#: A few real captures for the trace background: bulk NDT transfers and
#: YouTube sessions over TCP and QUIC.
TRACES = [str(paths.traces() / name) for name in (
    'mlab-ndt/ndt-4c6fb_1625899199_000000000121C1A0.pcap',
    'requet-youtube/baseline_Mar19_exp_228.pcap',
    'requet-youtube/baseline_Mar19_exp_255.pcap')]


def _packet(proto, sport, dport, payload):
    body = (dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
            if proto == 'udp' else
            dpkt.tcp.TCP(sport=sport, dport=dport, data=payload))
    ip = dpkt.ip.IP(src=bytes([198, 18, 0, 1]), dst=bytes([198, 18, 0, 2]),
                    p=17 if proto == 'udp' else 6, data=body)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(data=ip))


def test_envelopes_of_a_crafted_capture(tmp_path):
    # A TCP flow: 300 packets of 1000 bytes, 10 in each of 30 bins of
    # 10 ms, then 1 s of silence and 100 more in one bin, 3 ms into it (its
    # onset); a UDP flow of
    # 250 packets; a 50-packet flow, too short to keep.
    records = []
    tcp = _packet('tcp', 40000, 443, b'x' * 946)
    udp = _packet('udp', 40001, 443, b'y' * 454)
    for n in range(300):
        records.append((1000, n * 1000, 1000, tcp))
    for n in range(100):
        records.append((1001, 303000 + n * 10, 1000, tcp))
    for n in range(250):
        records.append((1000, 500 + n * 2000, 500, udp))
        if n < 50:
            records.append((1000, 700 + n * 2000, 100,
                            _packet('tcp', 40002, 80, b'')))
    records.sort()
    path = tmp_path / 'crafted' / 'flows.pcap'
    path.parent.mkdir()
    captures.write_pcap(str(path), 1, 96, [(s, f, w, d[:96])
                                           for s, f, w, d in records])
    envelopes = replay.extract([str(path)])
    by_proto = {f['proto']: (f, b) for f, b in zip(envelopes['flows'],
                                                   envelopes['bins'])}
    assert sorted(by_proto) == ['tcp', 'udp'] and envelopes['origins'] == [
        'crafted']
    flow, bins = by_proto['tcp']
    assert flow['bytes'] == 400 * 1000 == bins.sum()
    assert list(bins[:30]) == [10000] * 30
    assert bins[30:130].sum() == 0 and bins[130] == 100000
    onsets = envelopes['onsets'][envelopes['flows'].index(flow)]
    assert list(onsets[:30]) == [0] * 30 and onsets[130] == 300
    flow, bins = by_proto['udp']
    assert flow['bytes'] == 250 * 500 and len(bins) == 50
    saved = tmp_path / 'envelopes.npz'
    replay.save(str(saved), envelopes)
    loaded = replay.load(str(saved))
    assert loaded['flows'] == envelopes['flows']
    assert all(np.array_equal(a, b) for a, b in zip(loaded['bins'],
                                                    envelopes['bins']))
    assert all(np.array_equal(a, b) for a, b in zip(loaded['onsets'],
                                                    envelopes['onsets']))
    assert replay.ports(loaded) == {replay.PORT_BASE: 'crafted'}
    with pytest.raises(ValueError, match='no flow of at least 1000'):
        replay.extract([str(path)], min_packets=1000)


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('lab'))
    started = time.monotonic()
    done = subprocess.run(
        TESTBED + ['lab', '--quick', '--out', out, '--traces'] + TRACES,
        capture_output=True, text=True, timeout=600)
    print(done.stdout, 'in %.0f s' % (time.monotonic() - started))
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(out, 'results.json')) as results:
        return {'out': out, 'results': json.load(results),
                'stdout': done.stdout}


def test_lab_flows_labelled(quick):
    results = quick['results']
    flows = {flow['name']: flow for flow in results['flows']}
    # Three flows per mode on each background, every byte received.
    assert sorted(flows) == sorted(
        '%s-S-%s-%d' % (bg, mode, n) for bg in ('markov', 'trace')
        for mode in ('native', 'paper') for n in range(3))
    for flow in flows.values():
        assert flow['received'] == flow['bytes'], flow['name']
        assert 14 << 20 <= flow['bytes'] <= 48 << 20
    # Drawn from a distribution: no two flows of the same size.
    sizes = {flow['bytes'] for flow in flows.values()}
    assert len(sizes) == len(flows)
    for run in results['runs']:
        with open(run['truth']) as found:
            named = json.load(found)['flows']
        migrations = {(f['src'], f['sport'], f['dst'], f['dport']): f['kind']
                      for f in named if f['label'] == 'migration'}
        mine = [f for f in flows.values() if f['name'].startswith(
            '%s-S-%s-' % (run['background'], run['policy'] or 'native'))]
        assert migrations == {
            (f['src'], f['sport'], f['dst'], f['dport']):
            f['policy'] or 'native-4' for f in mine}
        kinds = {f['kind'] for f in named if f['label'] == 'background'}
        if run['background'] == 'trace':
            assert kinds and all(k.startswith('trace/') for k in kinds)
        else:
            assert kinds <= {'web', 'video', 'bulk', 'mail'} and kinds
        chaff = [f for f in named if f['label'] == 'chaff']
        assert bool(chaff) == (run['mode'] == 'stealth')
    # The three hosts of a run each sent from their own address.
    assert len({f['src'] for f in flows.values()}) == 3


def test_stealthed_flows_modulated(quick):
    for flow in quick['results']['flows']:
        if flow['policy']:
            assert flow['modulator_error'] is None
            assert flow['chaff_bytes'] > 0
            check = flow['rate_check']
            assert check['windows'] > 10
            # HTB lends a class a little burst beyond its rate.
            assert 0.0 < check['sent_over_set'] <= 1.3


def test_battery_separates_native_from_background(quick):
    scored = quick['results']['backgrounds']['markov']
    assert scored['counts']['S']['native'] == 3
    assert scored['counts']['S']['background'] >= 5
    strongest = lab_report.strongest(scored)['native']
    assert strongest['auc'] >= 0.8 and strongest['auc_ci'][0] > 0.5
    # The cover class keeps every migration and at most the background.
    cover = scored['cover']
    assert cover['floor']['bytes'] > 0 and cover['floor']['rate'] > 0
    assert cover['counts']['S']['native'] == 3
    assert (cover['counts']['S'].get('background', 0) <=
            scored['counts']['S']['background'])
    # The paper's pattern attack: QEMU's 100 ms bursts at 4 MiB/s under
    # load S, and none of the stealthed flows.
    pattern = scored['pooled']['pattern']
    assert pattern['detection']['native'] >= 2 / 3
    assert pattern['detection']['paper'] == 0.0
    assert pattern['false_positive_rate'] <= 0.05
    # The trace background (NDT bulk transfers fill the bottleneck at
    # times) is scored too; three flows are too few to assert a figure.
    trace = quick['results']['backgrounds']['trace']
    assert trace['counts']['S']['background'] >= 5
    assert lab_report.strongest(trace)['native'] is not None


def test_report_written(quick):
    with open(os.path.join(quick['out'], 'report.md')) as found:
        report = found.read()
    for heading in ('## markov background', '## trace background',
                    '### The attacker battery', '#### Load S',
                    '### Against the cover class',
                    'held back by the path'):
        assert heading in report
    assert os.path.getsize(os.path.join(quick['out'], 'markov',
                                        'throughput.png')) > 0
    loads = quick['results']['background_load']
    assert 0.0 < loads['markov/S']['rl'] < 0.5
    assert 0.0 < loads['trace/S']['rl']


def test_nothing_left_behind(quick):
    mine = {ns for run in quick['results']['runs']
            for ns in run['namespaces']}
    assert len(mine) == 2 * 8
    assert not mine & set(topology.leftover_namespaces())
    assert test_testbed.processes_under(quick['out']) == []


def test_ctrl_c_removes_everything(tmp_path):
    out = str(tmp_path / 'interrupted')
    workdir = os.path.join(out, 'load-markov-S')
    # A job a shell started in the background inherits SIGINT ignored, and
    # Python then leaves it ignored: the lab would run to its end. Give it
    # the default disposition, as a terminal's Ctrl-C finds it.
    lab = subprocess.Popen(
        TESTBED + ['lab', '--quick', '--out', out, '--traces'] + TRACES,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    recorded = []
    try:
        deadline = time.monotonic() + 120
        while not any(p['what'].startswith('lab agent') for p in recorded):
            assert lab.poll() is None, lab.stderr.read()[-2000:]
            assert time.monotonic() < deadline, 'no lab agent started'
            time.sleep(0.2)
            recorded = runner_lib.recorded_processes(workdir)
        with open(os.path.join(workdir, topology.STATE_FILE)) as state:
            mine = set(json.load(state)['namespaces'].values())
        assert mine <= set(topology.leftover_namespaces())
        assert lab.poll() is None, 'the lab ended before the interrupt'
        lab.send_signal(signal.SIGINT)
        lab.wait(90)
    finally:
        if lab.poll() is None:
            lab.kill()
            lab.wait()
            subprocess.run(TESTBED + ['cleanup', '--out', out])
    assert lab.returncode != 0
    assert not any(procfs.start_time(p['pid']) == p['started']
                   for p in recorded)
    assert test_testbed.processes_under(out) == []
    assert not mine & set(topology.leftover_namespaces())


def test_plan_splits_flows_over_hosts_and_runs():
    from nova_stealth.testbed import lab
    runs = lab.plan_site('markov', 'M', ['native', 'paper'],
                         {'native': 5, 'paper': 7}, width=3, per_run=2,
                         schedule='ramp', seed=1, speeds=(4.0, 8.0))
    assert [r['name'] for r in runs] == [
        'markov-M-native-000', 'markov-M-paper-000', 'markov-M-paper-001']
    assert [r['name'] for r in lab.plan_site(
        'trace', 'S', ['native', 'paper', 'constant'],
        {'native': 2, 'paper': 4, 'constant': 4}, 2, 1, 'ramp', 0)] == [
        'trace-S-native-000', 'trace-S-paper-000', 'trace-S-constant-000',
        'trace-S-paper-001', 'trace-S-constant-001']
    flows = [f for run in runs for host in run['hosts'] for f in host]
    assert len(flows) == 12 and len({f['name'] for f in flows}) == 12
    assert [len(host) for host in runs[1]['hosts']] == [2, 2, 2]
    assert [len(host) for host in runs[2]['hosts']] == [1]
    native = [f for f in flows if f['policy'] is None]
    assert sorted(f['rate_mib_s'] for f in native) == [4, 4, 4, 8, 8]
    assert all(f['policy'] == 'paper' and f['schedule'] == 'ramp' and
               f['rate_mib_s'] is None for f in flows if f not in native)
    # Sizes vary, within the distribution's bounds; the plan is seeded.
    sizes = [f['bytes'] for f in flows]
    assert len(set(sizes)) == 12
    assert min(sizes) >= 14 << 20 and max(sizes) <= 48 << 20
    assert runs == lab.plan_site('markov', 'M', ['native', 'paper'],
                                 {'native': 5, 'paper': 7}, 3, 2, 'ramp', 1,
                                 (4.0, 8.0))


@pytest.mark.parametrize('args, error', [
    (['--modes', 'native,nosuch'], "--modes: 'native,nosuch': choose from "),
    (['--loads', 'X'], "--loads: 'X': choose from H, M, S"),
    (['--width', '0'], '--width: 0 is out of range'),
    (['--speeds', 'fast'], "--speeds: 'fast' is not a number"),
])
def test_lab_bad_options_named(tmp_path, capsys, args, error):
    with pytest.raises(SystemExit):
        testbed_cmd.main(['lab', '--out', str(tmp_path / 'lab')] + args)
    assert error in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / 'lab'))


def test_lab_missing_traces_named(tmp_path):
    with pytest.raises(SystemExit, match='--traces: /nonexistent: no such '
                                         'file or directory'):
        testbed_cmd.main(['lab', '--out', str(tmp_path / 'lab'),
                          '--background', 'trace', '--traces',
                          '/nonexistent'])
    assert not os.path.exists(str(tmp_path / 'lab'))


def _library(path, bulk, trickle):
    """Crafted envelopes: ``bulk`` short bursts, ``trickle`` slow flows."""
    flows, bins = [], []
    for count, seconds, per_bin in ((bulk, 3.0, 30000),
                                    (trickle, 60.0, 100)):
        for _ in range(count):
            envelope = np.full(int(seconds / replay.BIN_S), per_bin,
                               dtype=np.uint32)
            flows.append({'origin': 'crafted', 'capture': 'crafted.pcap',
                          'proto': 'tcp', 'bytes': int(envelope.sum()),
                          'seconds': seconds})
            bins.append(envelope)
    replay.save(path, {'origins': ['crafted'], 'flows': flows, 'bins': bins,
                       'bin_s': replay.BIN_S})
    return replay.load(path)


def test_trace_users_start_at_their_level(tmp_path, link):
    # Ten bursts of 9 MB in 3 s among ninety 60 s trickles of 10 kB/s: the
    # bursts carry 62% of the bytes but fill 0.5% of a user's time. Users
    # that all began with a fresh pick would have five bursts running at
    # once (45 MB in the first seconds); in their steady state they move
    # about what their mean rate says (7.7 MB in 6 s).
    path = str(tmp_path / 'envelopes.npz')
    envelopes = _library(path, bulk=10, trickle=90)
    users, seconds = 50, 6.0
    expected = users * replay.mean_rate(envelopes, 2.0) * seconds
    python = [sys.executable, '-m', replay.__name__]
    server = subprocess.Popen(
        ['ip', 'netns', 'exec', link.dst] + python + [
            'server', '--address', link.DST_V4, '--envelopes', path],
        stdout=subprocess.PIPE, text=True)
    client = None
    try:
        assert json.loads(server.stdout.readline())['ready']
        client = subprocess.Popen(
            ['ip', 'netns', 'exec', link.src] + python + [
                'users', '--server', link.DST_V4, '--envelopes', path,
                '--count', str(users), '--seed', '3', '--think-s', '2'],
            stdout=subprocess.PIPE, text=True)
        assert json.loads(client.stdout.readline())['ready']
        time.sleep(seconds)
        client.terminate()
        moved = sum(json.loads(client.stdout.readline())['bytes'].values())
    finally:
        for process in (client, server):
            if process and process.poll() is None:
                process.terminate()
            if process:
                process.wait(10)
                process.stdout.close()
    assert 0.3 * expected < moved < 3 * expected, (moved, expected)


def _replayed_flow(tmp_path, link, envelopes, tls):
    """The server-to-user flow of one replaying user, as captured."""
    path = str(tmp_path / 'envelopes.npz')
    replay.save(path, envelopes)
    for ns, dev in ((link.src, 's0'), (link.dst, 'd0')):
        # Wire-sized packets, as the testbed's topology has them.
        netns.offloads_off(ns, dev)
    tls_args = []
    if tls:
        tls_args = ['--tls-dir', x509.make_credentials(
            str(tmp_path / 'web'), x509.make_ca(str(tmp_path / 'ca'),
                                                'replay CA'))]
    capture = str(tmp_path / 'replay.pcap')
    python = [sys.executable, '-m', replay.__name__]
    dump = netns.Tcpdump(link.src, capture, '-i', 's0', '-s', '128', 'tcp')
    processes = []
    try:
        processes.append(subprocess.Popen(
            ['ip', 'netns', 'exec', link.dst] + python + [
                'server', '--address', link.DST_V4, '--envelopes', path] +
            tls_args, stdout=subprocess.PIPE, text=True))
        assert json.loads(processes[0].stdout.readline())['ready']
        # A user who hardly thinks is busy from the start: inside
        # envelope 0 (the only one) at a random bin, then from bin 0
        # again; the longest flow of the 8 s is judged.
        processes.append(subprocess.Popen(
            ['ip', 'netns', 'exec', link.src] + python + [
                'users', '--server', link.DST_V4, '--envelopes', path,
                '--count', '1', '--seed', '5', '--think-s', '0.01'] +
            tls_args, stdout=subprocess.PIPE, text=True))
        assert json.loads(processes[1].stdout.readline())['ready']
        time.sleep(8)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(10)
            process.stdout.close()
        dump.stop()
    found = flow_lib.read_flows([capture], flow_lib.FlowOptions(
        min_packets=200, multiscale=True))[0]
    served = [f for f in found if f.key.src == link.DST_V4]
    assert served, [f.key for f in found]
    feature = dict(zip(multiscale.FEATURE_NAMES,
                       max(served, key=lambda f: f.bytes).multiscale))
    return feature


@pytest.mark.parametrize('tls', [False, True], ids=['tcp', 'tls'])
def test_replay_fills_segments_at_the_flows_own_instants(tmp_path, link,
                                                         tls):
    # 3,000 bytes per 10 ms bin for 12 s. Written at each bin's start,
    # each bin became two full segments and a short one (a mean of about
    # 1,050 bytes on the wire) on a 100 Hz grid (peak_100hz about 2); at
    # onsets drawn within the bins and in whole segments, the mean is
    # within a few percent of a full segment (1,514 on the wire) and the
    # 100 Hz line no stronger than its neighbours'.
    bins = np.full(1200, 3000, dtype=np.uint32)
    envelopes = {'origins': ['crafted'], 'bin_s': replay.BIN_S,
                 'flows': [{'origin': 'crafted', 'capture': 'crafted.pcap',
                            'proto': 'tcp', 'bytes': int(bins.sum()),
                            'seconds': 12.0}], 'bins': [bins]}
    feature = _replayed_flow(tmp_path, link, envelopes, tls)
    assert feature['mean_size'] > 1400, feature['mean_size']
    assert feature['peak_100hz'] < 0.5, feature['peak_100hz']


def test_record_sizes_end_on_segments():
    # Plain TCP: 11 segments of 1,448 fill one 16 kB write.
    assert replay.record_sizes(40000, 1448, 0) == (
        [15928, 15928, 5 * 1448], 40000 - 27 * 1448)
    # TLS 1.3: each record's 22 bytes of overhead end on a segment too.
    sizes, left = replay.record_sizes(3000, 1448, 22)
    assert (sizes, left) == ([2 * 1448 - 22], 3000 - 2 * 1448)
    assert replay.record_sizes(1000, 1448, 22) == ([], 1000)


def test_first_request_is_the_steady_state():
    envelopes = {'flows': [{'seconds': 3.0}] * 10 + [{'seconds': 60.0}] * 90,
                 'bins': [np.ones(300)] * 10 + [np.ones(6000)] * 90}
    rng = random.Random(1)
    picks = [replay.first_request(envelopes, rng, 2.0)
             for _ in range(20000)]
    busy = [pick for pick in picks if pick is not None]
    # Busy 5430 s of 5630; a burst 30 s of those.
    assert abs(len(busy) / len(picks) - 5430 / 5630) < 0.01
    bursts = sum(index < 10 for index, _ in busy)
    assert abs(bursts / len(busy) - 30 / 5430) < 0.003
    # The moment is uniform within the flow.
    firsts = np.array([first for index, first in busy if index >= 10])
    assert abs(firsts.mean() / 6000 - 0.5) < 0.02 and firsts.max() < 6000
