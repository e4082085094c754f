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
"""The kernel backends, and the shaper driving the recording one."""

import errno
import time

import pytest

from nova_stealth import backends
from nova_stealth.backends import pyroute2 as pyroute2_backend
from nova_stealth.backends import recording
from nova_stealth import exception
from nova_stealth import rtnl
from nova_stealth.shaping import state
from nova_stealth.shaping import tc_lib
from nova_stealth.shaping import tree


@pytest.fixture
def kernel():
    yield recording.RecordingBackend(host='unit-host')
    recording.RecordingBackend.forget_hosts()


def shaper_on(kernel, tmp_path):
    return tc_lib.Shaper(str(tmp_path), chaff_port_blocks=[(61500, 0xFFFC)],
                         kernel=kernel)


def test_load_by_name():
    assert backends.installed_backends() == ['pyroute2', 'recording']
    assert isinstance(backends.load('pyroute2'),
                      pyroute2_backend.Pyroute2Backend)
    with pytest.raises(exception.UnknownPlugin, match='pyroute2, recording'):
        backends.load('nope')


def test_shaper_builds_and_removes_the_tree(kernel, tmp_path):
    shaper = shaper_on(kernel, tmp_path)
    session = shaper.install('m1', '198.18.1.2', 61234, 8.0)
    (ifindex, found), = kernel.installed().items()
    assert ifindex == session['ifindex']
    assert list(found['qdiscs']) == [tree.ROOT_HANDLE]
    assert set(found['classes']) == {
        tree.handle(tree.PARENT_MINOR), tree.handle(tree.DEFAULT_MINOR),
        tree.handle(tree.CHAFF_MINOR), session['classid']}
    protocol, keys = tree.migration_filter('198.18.1.2', 61234)
    body = (rtnl.filter_tcmsg(ifindex, tree.ROOT_HANDLE, session['prio'],
                              protocol) +
            rtnl.u32_options([tuple(k) for k in keys], session['classid']))
    assert any(message.endswith(body) for message in found['filters'].values())
    # What a dump returns is what the shaper reads back as its own root.
    assert tc_lib._root_qdisc(kernel.dump_tc(ifindex)) == (
        'htb', tree.ROOT_HANDLE)

    assert shaper.remove('m1')
    assert kernel.installed() == {}


def test_a_chaff_range_of_two_port_blocks(kernel, tmp_path):
    # 61500-61504 is two u32 blocks, 61500/0xfffc and 61504/0xffff: two
    # filters at each chaff priority, which the kernel takes (as u32
    # nodes 800::800 and 800::801 of that priority).
    blocks = tree.port_blocks(range(61500, 61505))
    assert blocks == [(61500, 0xFFFC), (61504, 0xFFFF)]
    shaper = tc_lib.Shaper(str(tmp_path), chaff_port_blocks=blocks,
                           kernel=kernel)
    session = shaper.install('m1', '198.18.1.2', 61234, 8.0)
    filters = kernel.installed()[session['ifindex']]['filters']
    chaff = [(version, protocol, [tuple(k) for k in keys])
             for version, protocol, keys in tree.chaff_filters(blocks)]
    assert len(chaff) == 4
    for version, protocol, keys in chaff:
        body = (rtnl.filter_tcmsg(session['ifindex'], tree.ROOT_HANDLE,
                                  tree.CHAFF_PRIO[version], protocol) +
                rtnl.u32_options(keys, tree.handle(tree.CHAFF_MINOR)))
        assert sum(message.endswith(body)
                   for message in filters.values()) == 1
    assert len(filters) == 5
    assert len(kernel.dump_tc(session['ifindex'])['filters']) == 5
    assert shaper.remove('m1')
    assert kernel.installed() == {}


def test_filters_of_one_priority_go_together(kernel):
    kernel.replace_root_htb(2, tree.ROOT_HANDLE, tree.DEFAULT_MINOR)
    chaff = tree.handle(tree.CHAFF_MINOR)
    kernel.add_htb_class(2, chaff, tree.ROOT_HANDLE,
                         tree.htb_shape(1000, 1500))
    for port in (61500, 61504):
        kernel.add_u32_filter(2, tree.ROOT_HANDLE, 10, tree.ETH_P_IP,
                              [(port, 0xFFFF, 20)], chaff)
    kernel.add_u32_filter(2, tree.ROOT_HANDLE, 11, tree.ETH_P_IPV6,
                          [(61500, 0xFFFF, 40)], chaff)
    snapshot = kernel.dump_tc(2)
    assert len(snapshot['filters']) == 3
    with pytest.raises(rtnl.NetlinkError) as e:
        kernel.delete_class(2, chaff)
    assert e.value.errno == errno.EBUSY
    assert kernel.delete_filters(2, tree.ROOT_HANDLE, 10, tree.ETH_P_IP)
    assert not kernel.delete_filters(2, tree.ROOT_HANDLE, 10, tree.ETH_P_IP)
    assert len(kernel.dump_tc(2)['filters']) == 1
    # A tree saved and put back has each of its filters again.
    assert kernel.delete_root(2, tree.ROOT_HANDLE)
    kernel.replay_tc(2, snapshot)
    assert kernel.dump_tc(2) == snapshot


def test_one_memory_per_host(kernel, tmp_path):
    shaper_on(kernel, tmp_path).install('m1', '198.18.1.2', 61234, 8.0)
    assert recording.RecordingBackend(host='unit-host').installed()
    assert not recording.RecordingBackend(host='other-host').installed()
    # A service starting again removes what the one before left.
    assert shaper_on(recording.RecordingBackend(host='unit-host'),
                     tmp_path).sweep(everything=True) == ['m1']
    assert kernel.installed() == {}


def test_kernel_refusals(kernel):
    with pytest.raises(rtnl.NetlinkError) as e:
        kernel.add_htb_class(2, tree.handle(0x10), tree.ROOT_HANDLE,
                             tree.htb_shape(1000, 1500))
    assert e.value.errno == errno.EINVAL
    kernel.replace_root_htb(2, tree.ROOT_HANDLE, tree.DEFAULT_MINOR)
    kernel.add_htb_class(2, tree.handle(0x10), tree.ROOT_HANDLE,
                         tree.htb_shape(1000, 1500))
    with pytest.raises(rtnl.NetlinkError) as e:
        kernel.add_htb_class(2, tree.handle(0x10), tree.ROOT_HANDLE,
                             tree.htb_shape(1000, 1500))
    assert e.value.errno == errno.EEXIST
    assert kernel.delete_class(2, tree.handle(0x10))
    assert not kernel.delete_class(2, tree.handle(0x10))


def test_modulator_changes_the_recorded_class(kernel, tmp_path):
    shaper = shaper_on(kernel, tmp_path)
    session = shaper.install('m1', '198.18.1.2', 61234, 8.0)
    before = kernel.installed()[2]['classes'][session['classid']]
    modulator = shaper.start_modulator(
        session, 'constant',
        {'min_rate': 1.0, 'max_rate': 16.0, 'start_rate': 3.0}, 0.01)
    try:
        deadline = time.monotonic() + 5
        while kernel.modulator_report(modulator)['ticks'] == 0 and (
                time.monotonic() < deadline):
            time.sleep(0.01)
    finally:
        report = shaper.stop_modulator(modulator)
    assert report['ticks'] and report['error'] is None
    assert report['policy'] == 'constant'
    after = kernel.installed()[2]['classes'][session['classid']]
    assert after != before
    assert after.endswith(rtnl.htb_class_options(
        **tree.htb_shape(tree.mib_to_bytes(3.0), 1500)))
    shaper.remove('m1')


def qdisc(handle, parent, kind):
    """A dumped qdisc message of device 2, as the kernel shows one."""
    body = rtnl.tcmsg(2, handle, parent) + rtnl.attr(rtnl.TCA_KIND,
                                                     kind + b'\0')
    return rtnl.netlink_message(rtnl.RTM_NEWQDISC, body)


def operator_tree(kernel, *qdiscs):
    kernel.replay_tc(2, {'qdiscs': list(qdiscs), 'classes': [],
                         'filters': []})
    return kernel.dump_tc(2)


@pytest.mark.parametrize('kind', [b'fq', b'fq_codel'])
def test_an_operators_fq_root_needs_the_option(kernel, tmp_path, kind):
    before = operator_tree(kernel, qdisc(0x80010000, rtnl.TC_H_ROOT, kind))
    shaper = shaper_on(kernel, tmp_path)
    with pytest.raises(exception.ExistingRootQdisc,
                       match='qdisc %s 8001:0 ' % kind.decode()):
        shaper.install('m1', '198.18.1.2', 61234, 8.0)
    assert kernel.dump_tc(2) == before
    shaper.allow_replace_root_qdisc = True
    shaper.install('m1', '198.18.1.2', 61234, 8.0)
    shaper.remove('m1')
    assert kernel.dump_tc(2) == before


@pytest.mark.parametrize('kind', [b'fq', b'fq_codel', b'pfifo_fast'])
def test_the_kernels_own_root_is_replaced_freely(kernel, tmp_path, kind):
    # Handle 0: the kernel made it (net.core.default_qdisc); it comes back
    # by itself when the tree goes.
    operator_tree(kernel, qdisc(0, rtnl.TC_H_ROOT, kind))
    shaper = shaper_on(kernel, tmp_path)
    shaper.install('m1', '198.18.1.2', 61234, 8.0)
    assert shaper.remove('m1')


def test_children_tuned_under_the_default_mq_need_the_option(kernel,
                                                             tmp_path):
    before = operator_tree(kernel, qdisc(0, rtnl.TC_H_ROOT, b'mq'),
                           qdisc(0, 1, b'pfifo_fast'),
                           qdisc(0x80020000, 2, b'fq_codel'))
    shaper = shaper_on(kernel, tmp_path)
    with pytest.raises(exception.ExistingRootQdisc,
                       match=r'qdisc fq_codel 8002:0 \(parent 0:2\)'):
        shaper.install('m1', '198.18.1.2', 61234, 8.0)
    assert kernel.dump_tc(2) == before
    shaper.allow_replace_root_qdisc = True
    shaper.install('m1', '198.18.1.2', 61234, 8.0)
    record = state.load(shaper.records_dir, 'stealth0')
    # Saved, to be put back: the old code kept no copy under a default root.
    assert record['prior'] is not None
    replayed = []
    kernel.replay_tc = lambda index, snapshot: replayed.append(snapshot)
    shaper.remove('m1')
    assert replayed and replayed[0]['qdiscs'] == before['qdiscs']
