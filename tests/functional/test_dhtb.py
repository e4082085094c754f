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
"""The Dynamic HTB on the real kernel, with real TCP traffic.

Run as root: each test makes its own namespaces and removes them.
"""

import os
import re
import signal
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

from nova_stealth import backends
from nova_stealth import exception
from nova_stealth import privileged
from nova_stealth.shaping import state
from nova_stealth.shaping import tc_lib
from nova_stealth.shaping import tree
from nova_stealth import units
from tests.functional import conftest
from tests.functional import netlab

PAPER = {'min_rate': 1.0, 'max_rate': 16.0, 'start_rate': 4.0}


def mbit_to_mib(mbit):
    return mbit * 1e6 / 8 / units.MIB


def shaped_bulk_windows(link, shaper, address, port, mbit):
    """Shape a migration at ``mbit``; return 1 s windows of a bulk flow."""
    sink = netlab.Sink(link.dst, address, port)
    session = shaper.install('mig-%d' % port, address, port,
                             mbit_to_mib(mbit))
    sender = netlab.BulkSender(link.src, address, port)
    try:
        time.sleep(1.0)
        start = time.monotonic()
        time.sleep(3.0)
        return session, sink.throughput(start, time.monotonic())
    finally:
        sender.close()
        sink.close()


@pytest.mark.parametrize('mbit', [8, 32, 64])
def test_migration_port_follows_the_class_rate(link, shaper, mbit):
    _session, windows = shaped_bulk_windows(link, shaper, link.DST_V4,
                                            61001, mbit)
    assert len(windows) == 3
    for bits in windows:
        assert abs(bits - mbit * 1e6) <= 0.15 * mbit * 1e6, windows


def test_ipv6_migration_follows_the_class_rate(link, shaper):
    session, windows = shaped_bulk_windows(link, shaper, link.DST_V6, 61002,
                                           32)
    assert session['protocol'] == tree.ETH_P_IPV6
    assert len(windows) == 3
    for bits in windows:
        assert abs(bits - 32e6) <= 0.15 * 32e6, windows


def test_filter_matches_only_the_migration_port(link, shaper):
    shaper.install('mig', link.DST_V4, 61001, 1.0)
    filters = link.tc_show()['filter']
    assert 'flowid 5ea1:100' in filters
    assert 'match c6120702/ffffffff at 16' in filters
    assert 'match 0000ee49/0000ffff at 20' in filters
    assert 'match 00060000/00ff0000 at 8' in filters


def class_bytes(link, minor):
    """Bytes a class of the source's tree has sent."""
    shown = netlab.run('tc', '-n', link.src, '-s', 'class', 'show', 'dev',
                       's0', 'classid', tree.handle_text(tree.handle(minor)))
    return int(shown.split(' Sent ')[1].split()[0])


def test_a_chaff_range_of_two_port_blocks(link, tmp_path, privsep_in_src):
    # 61500-61504 needs two u32 blocks, so two filters at each chaff
    # priority: the kernel takes both, and TCP to either block is chaff.
    blocks = tree.port_blocks(range(61500, 61505))
    assert len(blocks) == 2
    shaper = tc_lib.Shaper(str(tmp_path / 'state'), backends.load('pyroute2'),
                           chaff_port_blocks=blocks)
    before = link.tc_show()
    shaper.install('mig', link.DST_V4, 61001, 4.0)
    lines = link.tc_show()['filter'].splitlines()
    for prio in tree.CHAFF_PRIO.values():
        # Each priority's u32 has a hash table, its filters nodes in it.
        node = re.compile(r'pref %d u32 chain 0 fh [0-9a-f]+::[0-9a-f]+ .*'
                          r'flowid 5ea1:3 ' % prio)
        assert len([line for line in lines if node.search(line)]) == 2, (
            lines)
    # The port outside the range first: the chaff class still drains what
    # a chaff flow left queued after the flow is closed.
    for address, port, chaff in ((link.DST_V4, 61505, False),
                                 (link.DST_V4, 61500, True),
                                 (link.DST_V4, 61504, True),
                                 (link.DST_V6, 61504, True)):
        sent = class_bytes(link, tree.CHAFF_MINOR)
        sink = netlab.Sink(link.dst, address, port)
        sender = netlab.BulkSender(link.src, address, port)
        time.sleep(1.0)
        sender.close()
        sink.close()
        # The chaff class runs at 2 MiB/s: a second of bulk gives it MiBs.
        grew = class_bytes(link, tree.CHAFF_MINOR) - sent
        assert (grew > units.MIB // 2) if chaff else (grew == 0), (port, grew)
    assert shaper.remove('mig')
    assert link.tc_show() == before


def test_device_is_taken_from_the_route_to_the_peer(link, shaper):
    assert shaper.device_for(link.DST_V4) == 's0'
    assert shaper.device_for(link.DST_V6) == 's0'


def test_modulator_changes_show_within_two_ticks(link, shaper):
    running, trace, report = netlab.modulated_bulk(link, shaper, 61003,
                                                   'paper', PAPER, seed=7)
    assert running['running'] and running['error'] is None
    assert report['error'] is None and not report['running']
    assert report['policy'] == 'paper' and report['bytes_sent'] > 0
    rates = np.array(trace['rates'])
    sent = np.array(trace['sent'])
    assert 250 <= len(rates) <= report['ticks'] <= 330
    assert len(set(rates)) > 20
    assert report['mean_rate'] == pytest.approx(rates.mean(), rel=0.1)
    measured = np.diff(sent) / report['tick_s'] / units.MIB
    correlations = [np.corrcoef(rates[:len(measured) - lag],
                                measured[lag:])[0, 1] for lag in range(6)]
    best = int(np.argmax(correlations))
    assert best <= 2, correlations
    # 0.9 and more on an idle machine, 0.885 seen under CI's load; a class
    # that did not follow the modulator would give about zero.
    assert correlations[best] > 0.75, correlations
    class_rate = link.tc_show()['class']
    last = tree.mib_to_bytes(report['last_rate']) * 8 // 1000
    assert 'rate %dKbit' % last in class_rate or report['last_rate'] >= 15


def test_other_traffic_keeps_its_throughput(link, shaper):
    # veth runs at what two cores can push (15-20 Gbit/s idle) and swings
    # by 20% from run to run, so runs with and without the tree alternate
    # and the median of each pair's ratio is judged. What this guards
    # against is other traffic throttled by the tree (sent to the
    # migration's class, or a default class with a low ceiling), which
    # would cost it 90% and more. HTB's own cost per packet shows on a
    # CPU-bound veth: pairs of 0.77-0.99 were seen with the CPUs busy.
    ratios = []
    for _ in range(4):
        baseline = netlab.iperf3_bits_per_second(link, 5201, 2)
        shaper.install('mig', link.DST_V4, 61001, 4.0)
        shaped = netlab.iperf3_bits_per_second(link, 5201, 2)
        shaper.remove('mig')
        ratios.append(shaped / baseline)
    assert statistics.median(ratios) >= 0.7, ratios


def test_teardown_restores_the_kernel_default(link, shaper):
    before = link.tc_show()
    assert before['qdisc'].startswith('qdisc noqueue 0: root')
    shaper.install('mig', link.DST_V4, 61001, 4.0)
    assert 'qdisc htb 5ea1: root' in link.tc_show()['qdisc']
    assert shaper.remove('mig')
    assert link.tc_show() == before
    assert state.devices(shaper.state_dir) == []
    assert not shaper.remove('mig')


OPERATOR_TREES = {
    'tbf': [['qdisc', 'add', 'dev', 's0', 'root', 'handle', '10:', 'tbf',
             'rate', '1gbit', 'burst', '1mb', 'latency', '50ms']],
    'htb-with-filter': [
        ['qdisc', 'add', 'dev', 's0', 'root', 'handle', '20:', 'htb',
         'default', '30'],
        ['class', 'add', 'dev', 's0', 'parent', '20:', 'classid', '20:1',
         'htb', 'rate', '500mbit'],
        ['class', 'add', 'dev', 's0', 'parent', '20:1', 'classid', '20:30',
         'htb', 'rate', '100mbit', 'ceil', '500mbit'],
        ['qdisc', 'add', 'dev', 's0', 'parent', '20:30', 'handle', '30:',
         'bfifo', 'limit', '300000'],
        ['filter', 'add', 'dev', 's0', 'parent', '20:', 'protocol', 'ip',
         'prio', '5', 'u32', 'match', 'ip', 'dport', '22', '0xffff',
         'flowid', '20:30'],
    ],
}


@pytest.mark.parametrize('name', sorted(OPERATOR_TREES))
def test_operator_root_qdisc_refused_then_restored(link, shaper, name):
    for command in OPERATOR_TREES[name]:
        netlab.run('tc', '-n', link.src, *command)
    before = link.tc_show()
    with pytest.raises(exception.ExistingRootQdisc) as raised:
        shaper.install('mig', link.DST_V4, 61001, 4.0)
    assert 'allow_replace_root_qdisc' in str(raised.value)
    assert link.tc_show() == before
    assert state.devices(shaper.state_dir) == []

    shaper.allow_replace_root_qdisc = True
    shaper.install('mig', link.DST_V4, 61001, 4.0)
    assert 'qdisc htb 5ea1: root' in link.tc_show()['qdisc']
    shaper.remove('mig')
    assert link.tc_show() == before


def test_explicit_default_kind_root_is_replaced_and_restored(link, shaper):
    netlab.run('tc', '-n', link.src, 'qdisc', 'add', 'dev', 's0', 'root',
               'handle', '40:', 'pfifo_fast')
    before = link.tc_show()
    shaper.install('mig', link.DST_V4, 61001, 4.0)
    shaper.remove('mig')
    assert link.tc_show() == before


@pytest.mark.parametrize('order', [('first', 'second'),
                                   ('second', 'first')])
def test_two_sessions_share_the_tree(link, shaper, order):
    before = link.tc_show()
    sinks = [netlab.Sink(link.dst, link.DST_V4, port)
             for port in (61001, 61002)]
    first = shaper.install('first', link.DST_V4, 61001, mbit_to_mib(8))
    second = shaper.install('second', link.DST_V4, 61002, mbit_to_mib(24))
    assert shaper.install('first', link.DST_V4, 61001, 1.0) == first
    assert (first['slot'], second['slot']) == (0, 1)
    senders = [netlab.BulkSender(link.src, link.DST_V4, port)
               for port in (61001, 61002)]
    try:
        time.sleep(1.0)
        start = time.monotonic()
        time.sleep(2.0)
        stop = time.monotonic()
        rates = [sum(sink.throughput(start, stop, 2.0)) for sink in sinks]
    finally:
        for sender in senders:
            sender.close()
        for sink in sinks:
            sink.close()
    assert abs(rates[0] - 8e6) <= 0.15 * 8e6, rates
    assert abs(rates[1] - 24e6) <= 0.15 * 24e6, rates

    sessions = {'first': first, 'second': second}
    shaper.remove(order[0])
    shown = link.tc_show()
    gone, kept = sessions[order[0]], sessions[order[1]]
    assert tree.handle_text(gone['classid']) + ' ' not in shown['class']
    assert tree.handle_text(kept['classid']) + ' ' in shown['class']
    assert 'pref %d ' % gone['prio'] not in shown['filter']
    assert 'pref %d ' % kept['prio'] in shown['filter']
    shaper.remove(order[1])
    assert link.tc_show() == before


def test_modulator_error_is_reported(link, shaper):
    session = shaper.install('mig', link.DST_V4, 61001, 4.0)
    modulator_id = shaper.start_modulator(session, 'paper', PAPER, 0.01)
    time.sleep(0.2)
    netlab.run('tc', '-n', link.src, 'filter', 'del', 'dev', 's0', 'parent',
               '5ea1:', 'prio', str(session['prio']))
    netlab.run('tc', '-n', link.src, 'class', 'del', 'dev', 's0', 'classid',
               tree.handle_text(session['classid']))
    time.sleep(0.2)
    report = shaper.modulator_report(modulator_id)
    assert not report['running']
    assert 'No such file or directory' in report['error']
    assert shaper.stop_modulator(modulator_id)['error'] == report['error']
    assert shaper.remove('mig')
    assert 'htb' not in link.tc_show()['qdisc']


CRASHING_OWNER = '''
import sys, time
from oslo_config import cfg
from nova_stealth import backends
from nova_stealth import privileged
from nova_stealth.shaping import tc_lib
cfg.CONF.set_override('helper_command', sys.argv[1],
                      group=privileged.CONFIG_SECTION)
shaper = tc_lib.Shaper(sys.argv[2], backends.load('pyroute2'))
session = shaper.install('crashed', sys.argv[3], 61009, 4.0)
shaper.start_modulator(session, 'paper',
                       {'min_rate': 1, 'max_rate': 16, 'start_rate': 4}, 0.01)
print('ready', flush=True)
time.sleep(600)
'''


def privsep_daemons():
    found = set()
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try:
                with open('/proc/%s/cmdline' % pid, 'rb') as cmdline:
                    if b'nova_stealth.privileged' in cmdline.read():
                        found.add(int(pid))
            except OSError:
                pass
    return found


def test_sweep_removes_what_a_killed_process_left(link, shaper):
    before = link.tc_show()
    daemons_before = privsep_daemons()
    owner = subprocess.Popen(
        [sys.executable, '-c', CRASHING_OWNER,
         conftest.privsep_helper_in(link.src), shaper.state_dir,
         link.DST_V4],
        stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == 'ready'
        assert len(shaper.sweep()) == 0
        os.kill(owner.pid, signal.SIGKILL)
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
    left = link.tc_show()
    assert 'class htb 5ea1:100 ' in left['class']
    for _ in range(50):
        if privsep_daemons() <= daemons_before:
            break
        time.sleep(0.1)
    assert privsep_daemons() <= daemons_before

    assert shaper.sweep() == ['crashed']
    assert link.tc_show() == before
    assert state.devices(shaper.state_dir) == []
    assert shaper.sweep() == []


def test_sweep_keeps_sessions_of_live_processes(link, shaper):
    shaper.install('alive', link.DST_V4, 61001, 4.0)
    assert shaper.sweep() == []
    assert 'class htb 5ea1:100 ' in link.tc_show()['class']
    shaper.remove('alive')


def test_rebuilds_a_tree_removed_behind_its_back(link, shaper):
    shaper.install('mig', link.DST_V4, 61001, 4.0)
    netlab.run('tc', '-n', link.src, 'qdisc', 'del', 'dev', 's0', 'root')
    shaper.install('again', link.DST_V4, 61002, 4.0)
    assert 'class htb 5ea1:100 ' in link.tc_show()['class']
    shaper.remove('again')
    assert 'htb' not in link.tc_show()['qdisc']


def test_shaper_sees_only_its_own_namespace(link, shaper):
    assert isinstance(shaper, tc_lib.Shaper)
    with pytest.raises(Exception, match='no network device'):
        shaper.install('mig', link.DST_V4, 61001, 4.0, ifname='d0')


def test_tree_left_without_a_record_is_replaced(link, shaper):
    before = link.tc_show()
    shaper.install('lost', link.DST_V4, 61001, 4.0)
    state.delete(shaper.state_dir, 's0')
    session = shaper.install('next', link.DST_V4, 61002, 4.0)
    assert session['slot'] == 0
    shown = link.tc_show()
    assert 'pref %d ' % session['prio'] in shown['filter']
    assert shown['filter'].count('flowid 5ea1:100') == 1
    shaper.remove('next')
    assert link.tc_show() == before


def test_old_teardown_cannot_stop_a_modulator_after_a_restart(link, shaper):
    old = shaper.install('mig-old', link.DST_V4, 61001, 4.0)
    old_id = shaper.start_modulator(old, 'paper', PAPER, 0.01)
    # oslo.privsep starts a new daemon on the next call after its daemon
    # went away; the new one knows nothing of the old one's modulators.
    privileged.net_admin.stop()
    new = shaper.install('mig-new', link.DST_V4, 61002, 4.0)
    new_id = shaper.start_modulator(new, 'paper', PAPER, 0.01)
    assert new_id != old_id
    assert shaper.stop_modulator(old_id) is None
    assert shaper.modulator_report(new_id)['running']
    with pytest.raises(Exception, match='already running'):
        shaper.start_modulator(new, 'paper', PAPER, 0.01)
    assert shaper.stop_modulator(new_id)['ticks'] > 0
    shaper.remove('mig-old')
    shaper.remove('mig-new')


def test_sweep_removes_a_tree_whose_record_is_unreadable(link, shaper):
    before = link.tc_show()
    shaper.install('mig', link.DST_V4, 61001, 4.0)
    with open(state.record_path(shaper.state_dir, 's0'), 'w') as record:
        record.write('{"ifname": "s0", "sessions": {"mig": {"sl')
    assert shaper.sweep(everything=True) == []
    assert link.tc_show() == before
    assert state.devices(shaper.state_dir) == []
    assert any(name.startswith('s0.json.corrupt-') for name in os.listdir(
        os.path.dirname(state.record_path(shaper.state_dir, 's0'))))


@pytest.fixture
def two_services(tmp_path, privsep_in_src):
    """Two compute services' shapers on one kernel: two state dirs."""
    shared = str(tmp_path / 'kernels' / 'one')
    return [tc_lib.Shaper(str(tmp_path / host), backends.load('pyroute2'),
                          records_dir=shared,
                          chaff_port_blocks=[(0x7000, 0xFF00)])
            for host in ('compute-a', 'compute-b')]


@pytest.mark.parametrize('last', [0, 1])
def test_two_services_on_one_kernel_share_the_tree(link, two_services,
                                                   last):
    # An operator's explicit root, saved by whoever builds the tree and
    # put back by whoever leaves last.
    netlab.run('tc', '-n', link.src, 'qdisc', 'add', 'dev', 's0', 'root',
               'handle', '40:', 'pfifo_fast')
    before = link.tc_show()
    a, b = two_services
    first = a.install('mig-a', link.DST_V4, 61001, 4.0)
    second = b.install('mig-b', link.DST_V4, 61002, 8.0)
    assert first['classid'] != second['classid']
    shown = link.tc_show()
    for session in (first, second):
        assert 'class htb %s ' % tree.handle_text(session['classid']) in (
            shown['class'])
        assert 'pref %d ' % session['prio'] in shown['filter']
    # b restarting sweeps its own sessions only, and a's modulator runs on.
    modulator = a.start_modulator(first, 'paper', PAPER, 0.01)
    assert b.sweep(everything=True) == ['mig-b']
    assert b.remove('mig-a') is False
    shown = link.tc_show()
    assert 'class htb %s ' % tree.handle_text(first['classid']) in (
        shown['class'])
    assert 'class htb %s ' % tree.handle_text(second['classid']) not in (
        shown['class'])
    assert a.stop_modulator(modulator)['error'] is None
    b.install('mig-b', link.DST_V4, 61002, 8.0)
    leaving = [(a, 'mig-a'), (b, 'mig-b')]
    shaper, session_id = leaving[1 - last]
    assert shaper.remove(session_id)
    assert 'qdisc htb 5ea1: root' in link.tc_show()['qdisc']
    shaper, session_id = leaving[last]
    assert shaper.remove(session_id)
    assert link.tc_show() == before
    assert state.devices(a.records_dir) == []


def test_a_class_the_kernel_shows_is_never_taken_again(link, shaper):
    # A session whose record was lost keeps its class; the next takes
    # another one rather than driving the same class.
    first = shaper.install('mig', link.DST_V4, 61001, 4.0)
    record = state.load(shaper.state_dir, 's0')
    del record['sessions']['mig']
    state.save(shaper.state_dir, 's0', record)
    second = shaper.install('next', link.DST_V4, 61002, 4.0)
    assert second['classid'] != first['classid']
    shaper.remove('next')


@pytest.fixture
def multiqueue(link):
    """A veth with four transmit queues under an mq root, in ``src``."""
    netlab.run('ip', '-n', link.src, 'link', 'add', 'm0', 'numtxqueues', '4',
               'type', 'veth', 'peer', 'name', 'm1', 'numtxqueues', '4')
    for dev in ('m0', 'm1'):
        netlab.run('ip', '-n', link.src, 'link', 'set', dev, 'up')
    netlab.run('tc', '-n', link.src, 'qdisc', 'add', 'dev', 'm0', 'root',
               'handle', '70:', 'mq')
    return 'm0'


def test_children_tuned_under_mq_are_refused_then_restored(link, shaper,
                                                           multiqueue):
    # This kernel has no fq_codel module; a bfifo with its own limit is as
    # much an operator's tuning.
    netlab.run('tc', '-n', link.src, 'qdisc', 'replace', 'dev', multiqueue,
               'parent', '70:2', 'handle', '72:', 'bfifo', 'limit', '99999')
    before = link.tc_show(dev=multiqueue)
    assert 'qdisc bfifo 72: parent 70:2 limit 99999b' in before['qdisc']
    with pytest.raises(exception.ExistingRootQdisc,
                       match=r'qdisc bfifo 72:0 \(parent 70:2\)'):
        shaper.install('mig', link.DST_V4, 61001, 4.0, ifname=multiqueue)
    assert link.tc_show(dev=multiqueue) == before
    shaper.allow_replace_root_qdisc = True
    shaper.install('mig', link.DST_V4, 61001, 4.0, ifname=multiqueue)
    assert 'qdisc htb 5ea1: root' in link.tc_show(dev=multiqueue)['qdisc']
    shaper.remove('mig')
    assert link.tc_show(dev=multiqueue) == before


def test_an_untuned_mq_root_is_saved_and_put_back(link, shaper, multiqueue):
    before = link.tc_show(dev=multiqueue)
    assert 'qdisc mq 70: root' in before['qdisc']
    shaper.install('mig', link.DST_V4, 61001, 4.0, ifname=multiqueue)
    shaper.remove('mig')
    assert link.tc_show(dev=multiqueue) == before
