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
"""One compute service's migrations: StealthNode, on the recording kernel."""

import os
import time

import pytest

from nova_stealth.backends import recording
from nova_stealth import conf
from nova_stealth import exception
from nova_stealth.ports import leases as leases_lib
from nova_stealth.shaping import state
from nova_stealth.shaping import tc_lib
from nova_stealth.shaping import tree
from nova_stealth.virt import node as node_lib


@pytest.fixture
def node(tmp_path):
    group = conf.load_group(state_dir=str(tmp_path), backend='recording',
                            migration_port_ranges=['61000-61009'])
    now = [1000.0]
    made = node_lib.StealthNode(group, 'unit-host', clock=lambda: now[0])
    made.now = now
    yield made
    recording.RecordingBackend.forget_hosts()


def test_state_lives_in_a_directory_per_host(node, tmp_path):
    assert node.state_dir == str(tmp_path / 'unit-host')
    assert node.lease('vm-1') in range(61000, 61010)
    assert (tmp_path / 'unit-host' / 'port-leases.json').exists()


def test_chaff_ports_are_never_leased(tmp_path, write_conf):
    # Not validated (validation refuses the overlap): the leases hold on
    # their own that a migration never gets a port of the chaff's class.
    group = write_conf(state_dir=str(tmp_path), backend='recording',
                       migration_port_ranges='61500-61504',
                       chaff_ports='61500-61503').stealth
    node = node_lib.StealthNode(group, 'unit-host')
    assert node.lease('vm-1') == 61504
    with pytest.raises(exception.PortsExhausted):
        node.lease('vm-2')
    pool = leases_lib.PortLeases.from_conf(group)
    assert pool.allocate('vm-3') == 61504
    recording.RecordingBackend.forget_hosts()


def test_lease_of_an_incoming_domain_that_came_and_went(node):
    node.lease('vm-1')
    assert node.release_abandoned({'vm-1'}) == []
    assert node.release_abandoned(set()) == ['vm-1']
    assert node.leases.leases() == {}


def test_lease_whose_domain_never_came_lapses_after_the_grace(node):
    node.lease('vm-1')
    node.now[0] += node_lib.INCOMING_GRACE_SECONDS - 1
    assert node.release_abandoned(set()) == []
    node.now[0] += 2
    assert node.release_abandoned(set()) == ['vm-1']


def test_sweep_ends_what_an_earlier_run_left(node):
    port = node.lease('vm-1')
    node.shaper.install('vm-2', '198.18.1.2', 61234, 8.0)
    again = node_lib.StealthNode(node.group, 'unit-host', clock=node.clock)
    assert again.sweep() == (['vm-2'], {'vm-1': port})
    assert again.backend.installed() == {}
    assert again.sweep() == ([], {})


def test_one_summary_line_per_outgoing_migration(tmp_path, caplog):
    caplog.set_level('INFO', logger='nova_stealth.engine.source')
    group = conf.load_group(state_dir=str(tmp_path), backend='recording',
                            chaff_enabled=False)
    node = node_lib.StealthNode(group, 'summary-host')
    node.start_outgoing('vm-3', '198.18.1.2', 61234, 1 << 30)
    time.sleep(0.1)
    node.abort_outgoing('vm-3')
    lines = [r.getMessage() for r in caplog.records
             if 'shaping summary' in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith('Migration vm-3 shaping summary: policy '
                               'paper, ')
    ticks = int(lines[0].split(', ')[1].split()[0])
    assert ticks > 0
    assert 'mean rate n/a' not in lines[0]
    recording.RecordingBackend.forget_hosts()


@pytest.mark.parametrize('text', ['', '{"vm-1": {"port": 6', '[1, 2]',
                                  '{"vm-1": {"since": 1}}'])
def test_a_restart_survives_a_bad_lease_file(node, text):
    node.lease('vm-1')
    with open(node.leases.path, 'w') as lease_file:
        lease_file.write(text)
    again = node_lib.StealthNode(node.group, 'unit-host', clock=node.clock)
    assert again.sweep() == ([], {})
    assert again.lease('vm-2') in range(61000, 61010)
    aside = [name for name in os.listdir(again.state_dir)
             if name.startswith('port-leases.json.corrupt-')]
    assert len(aside) == 1


@pytest.mark.parametrize('text', ['', '{"ifname": "stealth0", "ifin',
                                  '{"sessions": []}'])
def test_a_restart_survives_a_bad_shaping_record(node, text):
    node.shaper.install('vm-2', '198.18.1.2', 61234, 8.0)
    path = state.record_path(node.records_dir, 'stealth0')
    with open(path, 'w') as record_file:
        record_file.write(text)
    again = node_lib.StealthNode(node.group, 'unit-host', clock=node.clock)
    again.sweep()
    # What the record described is found in the kernel and removed.
    assert again.backend.installed() == {}
    assert state.devices(again.records_dir) == []
    assert again.shaper.install('vm-3', '198.18.1.2', 61235, 8.0)['slot'] == 0


@pytest.fixture
def quiet_node(tmp_path):
    """A node without chaff, so migrations start at once."""
    group = conf.load_group(state_dir=str(tmp_path), backend='recording',
                            chaff_enabled=False)
    yield node_lib.StealthNode(group, 'teardown-host')
    recording.RecordingBackend.forget_hosts()


def fail(*_args, **_kwargs):
    raise OSError(32, 'Broken pipe (the privsep daemon is gone)')


def test_a_failed_modulator_stop_does_not_keep_the_shaping(quiet_node,
                                                           monkeypatch,
                                                           caplog):
    quiet_node.start_outgoing('vm-1', '198.18.1.2', 61234, 1 << 30)
    monkeypatch.setattr(quiet_node.backend, 'stop_modulator', fail)
    quiet_node.abort_outgoing('vm-1')
    assert quiet_node.backend.installed() == {}
    assert state.devices(quiet_node.records_dir) == []
    assert any('stopping the modulator failed' in r.getMessage()
               for r in caplog.records if r.levelname == 'ERROR')


def test_the_periodic_sweep_finishes_a_failed_teardown(quiet_node,
                                                       monkeypatch):
    quiet_node.start_outgoing('vm-1', '198.18.1.2', 61234, 1 << 30)
    quiet_node.start_outgoing('vm-2', '198.18.1.2', 61235, 1 << 30)
    with monkeypatch.context() as patch:
        patch.setattr(quiet_node.backend, 'delete_filters', fail)
        quiet_node.abort_outgoing('vm-1')
    # The modulator is stopped; the class and filter are still there.
    assert quiet_node.backend.modulator_report('vm-1') is None
    classes = quiet_node.backend.installed()[2]['classes']
    assert tree.handle(tree.session_minor(0)) in classes
    # vm-2 is still migrating: the sweep leaves it.
    assert quiet_node.sweep_unowned() == ['vm-1']
    classes = quiet_node.backend.installed()[2]['classes']
    assert tree.handle(tree.session_minor(0)) not in classes
    assert tree.handle(tree.session_minor(1)) in classes
    assert quiet_node.backend.modulator_report('vm-2')['running']
    quiet_node.abort_outgoing('vm-2')
    assert quiet_node.backend.installed() == {}
    assert quiet_node.sweep_unowned() == []


def test_the_sweep_stops_a_modulator_nobody_owns(quiet_node):
    session = quiet_node.shaper.install('lost', '198.18.1.2', 61236, 4.0)
    quiet_node.shaper.start_modulator(
        session, 'constant',
        {'min_rate': 1.0, 'max_rate': 16.0, 'start_rate': 3.0}, 0.01)
    assert quiet_node.sweep_unowned() == ['lost']
    assert quiet_node.backend.modulator_report('lost') is None
    assert quiet_node.backend.installed() == {}


def test_a_failed_restore_of_the_root_is_retried(quiet_node, monkeypatch):
    kernel = quiet_node.backend
    quiet_node.start_outgoing('vm-1', '198.18.1.2', 61234, 1 << 30)
    record = state.load(quiet_node.records_dir, 'stealth0')
    record['prior'] = {'qdiscs': [], 'classes': [], 'filters': []}
    state.save(quiet_node.records_dir, 'stealth0', record)
    with monkeypatch.context() as patch:
        patch.setattr(kernel, 'replay_tc', fail)
        quiet_node.abort_outgoing('vm-1')
    assert kernel.installed() == {}
    assert state.devices(quiet_node.records_dir) == ['stealth0']
    replayed = []
    monkeypatch.setattr(kernel, 'replay_tc',
                        lambda index, snapshot: replayed.append(index))
    quiet_node.sweep_unowned()
    assert replayed == [2]
    assert state.devices(quiet_node.records_dir) == []


def test_a_disabled_service_still_sweeps_what_a_crash_left(tmp_path):
    crashed = node_lib.StealthNode(
        conf.load_group(state_dir=str(tmp_path), backend='recording'),
        'unit-host')
    port = crashed.lease('vm-1')
    crashed.shaper.install('vm-2', '198.18.1.2', 62345, 8.0)
    group = conf.load_group(state_dir=str(tmp_path), backend='recording',
                            enabled=False)
    assert node_lib.sweep_while_disabled(group, 'unit-host') == (
        ['vm-2'], {'vm-1': port})
    assert recording.RecordingBackend(host='unit-host').installed() == {}
    assert leases_lib.PortLeases(str(tmp_path / 'unit-host'),
                                 [range(62000, 65000)]).leases() == {}
    recording.RecordingBackend.forget_hosts()


def test_a_disabled_service_that_never_ran_makes_nothing(tmp_path):
    group = conf.load_group(state_dir=str(tmp_path / 'state'),
                            enabled=False)
    assert node_lib.sweep_while_disabled(group, 'unit-host') == ([], {})
    assert not (tmp_path / 'state').exists()


def test_a_restart_finds_the_migrations_left_in_flight(node):
    node.shaper.install('vm-2', '198.18.1.2', 61234, 8.0)
    legacy = tc_lib.Shaper(node.state_dir, kernel=node.backend)
    legacy.install('vm-old', '198.18.1.2', 61235, 8.0, ifname='stealth0')
    again = node_lib.StealthNode(node.group, 'unit-host', clock=node.clock)
    assert again.recorded_outgoing() == ['vm-2', 'vm-old']
    assert sorted(again.sweep()[0]) == ['vm-2', 'vm-old']
    assert again.recorded_outgoing() == []


@pytest.mark.parametrize('choice', ['abort', 'continue'])
def test_a_defence_that_cannot_hold_follows_the_option(tmp_path, caplog,
                                                       choice):
    group = conf.load_group(state_dir=str(tmp_path), backend='recording',
                            chaff_enabled=False, on_defence_failure=choice)
    quiet = node_lib.StealthNode(group, 'degraded-host')
    aborted = []
    try:
        quiet.start_outgoing('vm-1', '198.18.1.2', 61234, 1 << 30,
                             abort_migration=lambda: aborted.append(True))
        classid = tree.handle(tree.session_minor(0))
        # The class goes behind the modulator's back: its next change
        # fails with ENOENT, which no retry overcomes.
        with quiet.backend.lock:
            del quiet.backend.trees[2]['classes'][classid]
        deadline = time.monotonic() + 10
        session = quiet.outgoing['vm-1']
        while session.degraded is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 'class is gone' in session.degraded

        # The watcher marks the session degraded, then logs and acts.
        def acted():
            if choice == 'abort':
                return aborted == [True]
            return quiet.backend.installed() == {}
        while not acted() and time.monotonic() < deadline:
            time.sleep(0.05)
        errors = [r.getMessage() for r in caplog.records
                  if r.levelname == 'ERROR' and 'vm-1' in r.getMessage()]
        assert any('can no longer be hidden' in e for e in errors), errors
        if choice == 'abort':
            assert aborted == [True]
        else:
            assert aborted == []
            assert quiet.backend.installed() == {}
        quiet.abort_outgoing('vm-1')
        assert quiet.backend.installed() == {}
    finally:
        recording.RecordingBackend.forget_hosts()
