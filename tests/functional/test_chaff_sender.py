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
"""The chaff sender on the real kernel, through the DHTB's chaff class.

The source shapes a migration-like bulk stream with the DHTB (paper policy
between 1.5 and 6 MiB/s, 10 ms ticks) and sends chaff through the chaff
class to a responder on the destination; tcpdump records the source's
egress. The steps the chaff leaves at the migration's start and end are
measured and printed (100 ms bins; the change of the mean over two bins at
the first and last migration packets, against the standard deviation of the
same change in the chaff's own bytes): the ramp schedule does not yet hide
them reliably, so they are not asserted (issue: chaff and port leases).
"""

import contextlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from nova_stealth.analysis import capture
from nova_stealth.chaff import records
from nova_stealth.chaff import schedules
from nova_stealth.chaff import sender as sender_lib
from nova_stealth.policy import paper
from tests.functional import netlab

MIB = 1 << 20
POLICY = {'min_rate': 1.5, 'max_rate': 6.0, 'start_rate': 3.0}
CHAFF_PORTS = list(range(61500, 61504))
BIN = 0.1
SPAN = 2
LEAD = 3.0
PLATEAU = 3.0


def policy_rates(ticks=20000):
    """The policy run ahead: rates in bytes/s, one per 100 ms bin."""
    policy = paper.PaperRatePolicy(seed=0, **POLICY)
    rates = np.array([policy.next_rate() for _ in range(ticks)]) * MIB
    return rates.reshape(-1, 10).mean(axis=1)


def in_src(link):
    """A socket factory that makes sockets in the source namespace."""
    def factory(family, kind):
        with netlab.in_netns(link.src):
            return socket.socket(family, kind)
    return factory


def start_responder(link):
    responder = subprocess.Popen(
        ['ip', 'netns', 'exec', link.dst, sys.executable, '-m',
         'nova_stealth.cmd.chaff_responder', '--address', link.DST_V4,
         '--ports', '61500-61503', '--peer-network', '198.18.7.0/24'],
        stdout=subprocess.PIPE, text=True)
    if responder.stdout.readline().strip() != 'ready':
        responder.kill()
        responder.wait()
        raise RuntimeError('the chaff responder did not start')
    return responder


def stop_responder(responder):
    responder.terminate()
    responder.communicate(timeout=20)


def chaff_class_bytes(link):
    shown = netlab.run('tc', '-n', link.src, '-s', 'class', 'show', 'dev',
                       's0', 'classid', '5ea1:3')
    return int(shown.split(' Sent ')[1].split()[0])


def run_migration(link, shaper, with_chaff, workdir, seed, budget):
    """Run one migration; return (capture, start, sender, chaff bytes)."""
    modulator = []
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(stop_responder, start_responder(link))
        workdir.mkdir()
        dump = netlab.Tcpdump(link.src, str(workdir / ('chaff-%s.pcap'
                                                       % with_chaff)),
                              '-i', 's0', '-s', '64', 'tcp and src host',
                              link.SRC_V4)
        cleanup.callback(dump.stop)
        cleanup.callback(netlab.Sink(link.dst, link.DST_V4, 61001).close)
        session = shaper.install('migration', link.DST_V4, 61001, 2.0)
        cleanup.callback(shaper.remove, 'migration')
        chaff = None
        if with_chaff:
            chaff = sender_lib.ChaffSender(
                [(link.DST_V4, CHAFF_PORTS)],
                schedules.load('ramp', float(policy_rates().mean()),
                               lead=(LEAD, LEAD), tail=(6, 6), seed=seed,
                               migration_rates=policy_rates()),
                max_rate=8 * MIB, budget=budget,
                migration_rate=lambda: (
                    (shaper.modulator_rate(modulator[0]) or 0.0) * MIB
                    if modulator else 0.0),
                seed=seed, socket_factory=in_src(link))
            chaff.start()
            cleanup.callback(chaff.stop)
        time.sleep(LEAD + PLATEAU)
        started = time.time()
        modulator.append(shaper.start_modulator(session, 'paper', POLICY,
                                                0.01, seed=seed))
        cleanup.callback(shaper.stop_modulator, modulator[0])
        bulk = netlab.BulkSender(link.src, link.DST_V4, 61001)
        if chaff:
            chaff.migration_started()
        time.sleep(6.0)
        bulk.stopping.set()
        if chaff:
            chaff.migration_ended()
        bulk.close()
        shaper.stop_modulator(modulator.pop())
        time.sleep(6.0)
        if chaff:
            assert chaff.wait(5.0), 'the chaff did not ramp down'
        class_bytes = chaff_class_bytes(link)
    established = netlab.run('ip', 'netns', 'exec', link.src, 'ss', '-tn')
    assert ':615' not in established, 'chaff streams left open'
    return dump.path, started, chaff, class_bytes


def egress_bins(path, origin, seconds):
    """Egress and chaff in bins from ``origin`` (epoch ns).

    Also returns the bins of the first and last migration packets.
    """
    total = np.zeros(int(seconds / BIN))
    chaff = np.zeros(int(seconds / BIN))
    times = []
    for batch in capture.CaptureReader(path):
        migration = batch.dport == 61001
        times.extend(batch.time_ns[migration].tolist())
        index = (batch.time_ns - origin) // int(BIN * 1e9)
        inside = (index >= 0) & (index < len(total))
        np.add.at(total, index[inside], batch.wire_len[inside])
        ours = inside & np.isin(batch.dport, CHAFF_PORTS)
        np.add.at(chaff, index[ours], batch.wire_len[ours])
    start, end = ((min(times) - origin) // int(BIN * 1e9),
                  (max(times) - origin) // int(BIN * 1e9) + 1)
    return total / BIN, chaff / BIN, int(start), int(end)


def change(bins, at):
    """Mean of the SPAN bins from ``at`` less the SPAN bins before."""
    return bins[at:at + SPAN].mean() - bins[at - SPAN:at].mean()


@pytest.fixture
def chaffed_shaper(tmp_path, privsep_in_src):
    from nova_stealth.shaping import tc_lib
    return tc_lib.Shaper(str(tmp_path / 'state'),
                         chaff_port_blocks=[(61500, 0xFFFC)],
                         chaff_rate_mib=8.0)


def measure(link, shaper, with_chaff, workdir, seed, budget=200 * MIB):
    path, started, chaff, class_bytes = run_migration(
        link, shaper, with_chaff, workdir, seed, budget)
    bins, chaff_bins, start, end = egress_bins(
        path, int((started - LEAD - PLATEAU) * 1e9), 25.0)
    moments = [at for at in range(start - int(PLATEAU / BIN) + SPAN,
                                  end - SPAN)
               if abs(at - start) > SPAN]
    migration_bytes = float(np.sum(bins - chaff_bins) * BIN)
    ports = set()
    for batch in capture.CaptureReader(path):
        ports.update(batch.dport[np.isin(batch.dport, CHAFF_PORTS)].tolist())
    return {
        'chaff_ports': ports,
        'chaff_class_bytes': class_bytes,
        'captured_chaff_bytes': float(np.sum(chaff_bins) * BIN),
        'steps': [abs(change(bins, start)), abs(change(bins, end))],
        'changes': [change(chaff_bins, at) for at in moments],
        'overhead': (chaff.sent / migration_bytes) if chaff else 0.0,
        'chaff': chaff,
    }


def test_sender_streams_through_the_chaff_class(link, chaffed_shaper,
                                                tmp_path):
    run = measure(link, chaffed_shaper, True, tmp_path / 'chaff', 3)
    bare = measure(link, chaffed_shaper, False, tmp_path / 'bare', 3)
    variation = float(np.std(run['changes']))
    print('chaff: variation %.2f MiB/s; steps with chaff %s MiB/s, without '
          '%s MiB/s; chaff bytes %.0f%% of the migration\'s' % (
              variation / MIB,
              ' '.join('%.2f' % (x / MIB) for x in run['steps']),
              ' '.join('%.2f' % (x / MIB) for x in bare['steps']),
              100 * run['overhead']))
    sender = run['chaff']
    assert sender.connections >= 2 and not sender.running
    assert sender.errors == 0
    assert 0 < sender.sent <= sender.budget
    assert len(run['chaff_ports']) >= 2
    # What left the host on the chaff ports went through the chaff class,
    # wire headers included.
    assert run['chaff_class_bytes'] >= sender.sent
    assert run['captured_chaff_bytes'] >= sender.sent
    assert variation > 0 and not any(bare['changes'])


def test_budget_caps_the_chaff(link, chaffed_shaper, tmp_path):
    budget = 1 << 20
    run = measure(link, chaffed_shaper, True, tmp_path / 'small', 4,
                  budget=budget)
    sender = run['chaff']
    assert budget <= sender.sent <= budget + sender.streams * (
        records.FULL_RECORD + records.HEADER.size)
    assert not sender.running
