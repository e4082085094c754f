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
"""What the real privsep daemon refuses, in a namespace of the test's own.

Each call goes straight to an entrypoint, as anything that could write to
the daemon's socket could; nothing refused may change the kernel.
"""

import pytest

from nova_stealth.privileged import guard
from nova_stealth.privileged import tc
from nova_stealth.shaping import tree
from tests.functional import netlab

PAPER = {'min_rate': 1.0, 'max_rate': 16.0, 'start_rate': 4.0}


@pytest.fixture
def shaped(link, shaper):
    """The source device with our tree and one migration class."""
    session = shaper.install('mig', link.DST_V4, 61001, 4.0)
    yield session
    shaper.remove('mig')


def lo_tree(link):
    return link.tc_show(dev='lo')


def test_replay_must_be_for_its_own_device(link, shaper):
    # An operator's tree on lo, dumped; replayed "on s0" it used to land on
    # lo (replay_tc ignored its ifindex).
    netlab.run('tc', '-n', link.src, 'qdisc', 'add', 'dev', 'lo', 'root',
               'handle', '10:', 'tbf', 'rate', '1gbit', 'burst', '1mb',
               'latency', '50ms')
    lo_index = shaper.kernel.link_info('lo')['index']
    s0_index = shaper.kernel.link_info('s0')['index']
    snapshot = tc.dump_tc(lo_index)
    netlab.run('tc', '-n', link.src, 'qdisc', 'del', 'dev', 'lo', 'root')
    before = lo_tree(link)
    with pytest.raises(guard.Refused, match='for device %d replayed on '
                       'device %d' % (lo_index, s0_index)):
        tc.replay_tc(s0_index, snapshot)
    assert lo_tree(link) == before


def test_replay_takes_only_dumped_tc_messages(link, shaper):
    s0_index = shaper.kernel.link_info('s0')['index']
    snapshot = tc.dump_tc(s0_index)
    assert snapshot['qdiscs']
    with pytest.raises(guard.Refused, match='not a dumped one'):
        tc.replay_tc(s0_index, {'qdiscs': [], 'filters': [],
                                'classes': snapshot['qdiscs']})
    with pytest.raises(guard.Refused, match='qdiscs, classes and filters'):
        tc.replay_tc(s0_index, {'links': []})


def test_classes_only_in_our_tree_on_a_shaped_device(link, shaper, shaped):
    index = shaped['ifindex']
    lo_index = shaper.kernel.link_info('lo')['index']
    shape = tree.htb_shape(1 << 20, 1500)
    before = link.tc_show(), lo_tree(link)
    with pytest.raises(guard.Refused, match='class 10:5 is not in '):
        tc.add_htb_class(index, 0x100005, tree.handle(1), shape)
    with pytest.raises(guard.Refused, match='not shaped by nova_stealth'):
        tc.add_htb_class(lo_index, tree.handle(0x150), tree.handle(1),
                         shape)
    with pytest.raises(guard.Refused):
        tc.delete_class(index, 0x100005)
    assert tc.delete_root(lo_index, tree.ROOT_HANDLE) is False
    with pytest.raises(guard.Refused, match='root handle'):
        tc.delete_root(index, 0x10000)
    assert (link.tc_show(), lo_tree(link)) == before


@pytest.mark.parametrize('rate', [0, 2.0 ** 70, 2 ** 41, 1.5, -1])
def test_absurd_rates_are_refused_cleanly(link, shaper, shaped, rate):
    shape = dict(tree.htb_shape(1 << 20, 1500), rate=rate, ceil=rate)
    before = link.tc_show()
    with pytest.raises(guard.Refused, match='rate'):
        tc.add_htb_class(shaped['ifindex'], tree.handle(0x150),
                         tree.handle(1), shape)
    assert link.tc_show() == before


def test_filters_only_at_our_priorities(link, shaper, shaped):
    keys = [(6 << 16, 0x00FF0000, 8)]
    before = link.tc_show()
    with pytest.raises(guard.Refused, match='priority 5 '):
        tc.add_u32_filter(shaped['ifindex'], tree.ROOT_HANDLE, 5,
                          tree.ETH_P_IP, keys, shaped['classid'])
    with pytest.raises(guard.Refused, match='protocol'):
        tc.add_u32_filter(shaped['ifindex'], tree.ROOT_HANDLE, 150, 0x0806,
                          keys, shaped['classid'])
    with pytest.raises(guard.Refused, match='key offset'):
        tc.add_u32_filter(shaped['ifindex'], tree.ROOT_HANDLE, 150,
                          tree.ETH_P_IP, [(0, 0, 3)], shaped['classid'])
    assert link.tc_show() == before


@pytest.mark.parametrize('change, match', [
    ({'tick_s': 1e-9}, 'tick_s'),
    ({'tick_s': float('nan')}, 'tick_s'),
    ({'ramp_s': -1.0}, 'ramp_s'),
    ({'policy_kwargs': dict(PAPER, max_rate=2.0 ** 70)}, 'max_rate'),
    ({'policy_kwargs': dict(PAPER, min_rate=0)}, 'min_rate'),
    ({'handle': tree.handle(tree.DEFAULT_MINOR)}, 'migration class'),
    ({'modulator_id': '../x'}, 'migration id'),
])
def test_modulators_within_bounds(link, shaper, shaped, change, match):
    call = dict(ifindex=shaped['ifindex'], handle=shaped['classid'],
                parent=tree.handle(1), mtu=1500, policy_name='paper',
                policy_kwargs=PAPER, seed=1, tick_s=0.01,
                modulator_id='mig')
    call.update(change)
    with pytest.raises(guard.Refused, match=match):
        tc.start_modulator(**call)
    assert tc.modulator_report(call['modulator_id']) is None


def test_one_modulator_per_class_and_a_bounded_count(link, shaper, shaped):
    started = []
    try:
        started.append(shaper.start_modulator(shaped, 'paper', PAPER, 1.0))
        with pytest.raises(guard.Refused, match='already modulated by mig'):
            tc.start_modulator(shaped['ifindex'], shaped['classid'],
                               tree.handle(1), 1500, 'paper', PAPER, 1, 1.0,
                               modulator_id='other')
        for n in range(1, guard.MAX_MODULATORS):
            session = shaper.install('m%d' % n, link.DST_V4, 61001 + n, 4.0)
            started.append(shaper.start_modulator(session, 'paper', PAPER,
                                                  1.0))
        extra = shaper.install('extra', link.DST_V4, 62000, 4.0)
        with pytest.raises(guard.Refused, match='modulators are running'):
            shaper.start_modulator(extra, 'paper', PAPER, 1.0)
    finally:
        for modulator_id in started:
            shaper.stop_modulator(modulator_id)
        for n in range(1, guard.MAX_MODULATORS):
            shaper.remove('m%d' % n)
        shaper.remove('extra')


@pytest.mark.parametrize('rate, ramp_s, match', [
    (float('nan'), 0.0, 'floor rate'), (0.0, 0.0, 'floor rate'),
    (2.0 ** 70, 0.0, 'floor rate'), (4.0, float('inf'), 'ramp_s'),
    (4.0, -1.0, 'ramp_s')])
def test_a_floor_within_bounds(link, shaper, shaped, rate, ramp_s, match):
    modulator = shaper.start_modulator(shaped, 'paper', PAPER, 0.01)
    try:
        with pytest.raises(guard.Refused, match=match):
            tc.set_modulator_floor(modulator, rate, ramp_s)
        assert shaper.modulator_rates(modulator)['floor'] is None
    finally:
        shaper.stop_modulator(modulator)
