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
"""The engine's destination session and the addresses it hands Nova."""

import os
import time

import numpy as np
import pytest

from nova_stealth.backends import recording
from nova_stealth.chaff import sender as sender_lib
from nova_stealth import conf as stealth_conf
from nova_stealth.engine import destination
from nova_stealth.engine import source
from nova_stealth import exception
from nova_stealth import policy as rate_policies
from nova_stealth.policy import base as rate_policies_base
from nova_stealth.ports import leases as leases_lib
from nova_stealth.shaping import tc_lib
from nova_stealth import units


def test_connect_address_brackets_ipv6_only():
    assert destination.connect_address('198.18.1.2', 61000) == (
        '198.18.1.2:61000')
    assert destination.connect_address('2001:db8::2', 61000) == (
        '[2001:db8::2]:61000')
    assert destination.connect_address('[2001:db8::2]', 61000) == (
        '[2001:db8::2]:61000')
    assert destination.connect_address('compute-2', 61000) == (
        'compute-2:61000')


def test_destination_session_leases_and_releases(tmp_path):
    leases = leases_lib.PortLeases(str(tmp_path), [range(62000, 62002)])
    first = destination.DestinationSession(None, 'm-1', leases=leases)
    second = destination.DestinationSession(None, 'm-2', leases=leases)
    ports = {first.prepare(), second.prepare()}
    assert ports == {62000, 62001}
    with pytest.raises(exception.PortsExhausted):
        destination.DestinationSession(None, 'm-3', leases=leases).prepare()
    first.release()
    first.release()
    assert set(leases.leases()) == {'m-2'}
    assert os.path.exists(leases.path)


class SteppedPolicy(rate_policies_base.RatePolicy):
    """Rates 1, 2, 3, ... MiB/s, one a tick."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.count = 0

    def next_rate(self):
        self.count += 1
        return float(self.count)


class HoldingPolicy(rate_policies_base.RatePolicy):
    """10 MiB/s for 30 ms, then 40 MiB/s for 10 ms, and again."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.count = 0

    def next_rate(self):
        self.count += 1
        return 10.0 if self.count % 2 else 40.0

    def hold_seconds(self):
        return 0.03 if self.count % 2 else 0.01


@pytest.fixture
def test_policies(monkeypatch):
    installed = rate_policies.policy_class
    ours = {'stepped': SteppedPolicy, 'holding': HoldingPolicy}
    monkeypatch.setattr(rate_policies, 'policy_class',
                        lambda name: ours.get(name) or installed(name))


KWARGS = {'min_rate': 1.0, 'max_rate': 1e6, 'start_rate': 1.0}


@pytest.mark.parametrize('tick_s', [0.01, 0.02])
def test_expected_rates_are_the_means_of_ten_ticks(test_policies, tick_s):
    rates = source.expected_rates('stepped', KWARGS, tick_s=tick_s)
    # Ticks 10k+1 ... 10k+10 make up the k-th bin: mean 10k + 5.5 MiB/s.
    assert len(rates) == source.LOOKAHEAD_TICKS // 10
    assert rates == pytest.approx(
        (10.0 * np.arange(len(rates)) + 5.5) * units.MIB)


def test_expected_rates_weigh_each_rate_by_its_hold(test_policies):
    rates = source.expected_rates('holding', KWARGS)
    # By hand: [0, 100 ms) holds 10 MiB/s for 0-30, 40-70, 80-100 ms and
    # 40 MiB/s for 30-40, 70-80 ms: (10 * 80 + 40 * 20) / 100 = 16.
    # [100, 200 ms): 10 MiB/s for 100-110, 120-150, 160-190 ms and 40
    # MiB/s for 110-120, 150-160, 190-200 ms: (700 + 1200) / 100 = 19.
    # Then it repeats. Unweighted, every bin would be 25.
    assert len(rates) == source.LOOKAHEAD_TICKS // 10
    assert rates == pytest.approx(np.tile([16.0, 19.0], len(rates) // 2) *
                                  units.MIB)


def test_expected_rates_are_the_policy_run_with_its_seed_and_options():
    kwargs = {'min_rate': 3.0, 'max_rate': 40.0, 'start_rate': 5.0}
    policy = rate_policies.policy_class('paper')(seed=7, **kwargs)
    ticks = np.array([policy.next_rate()
                      for _ in range(source.LOOKAHEAD_TICKS)])
    rates = source.expected_rates('paper', kwargs, seed=7)
    assert rates == pytest.approx(ticks.reshape(-1, 10).mean(axis=1) *
                                  units.MIB)
    # A policy that moves: its rates span much of its range.
    assert rates.min() < 10.0 * units.MIB < 20 * units.MIB < rates.max()
    other = source.expected_rates('paper', kwargs, seed=8)
    assert not np.allclose(other, rates)


@pytest.fixture
def kernel():
    yield recording.RecordingBackend(host='unit-engine')
    recording.RecordingBackend.forget_hosts()


def test_switchover_floor_follows_qemus_progress(kernel, tmp_path):
    group = stealth_conf.load_group(
        state_dir=str(tmp_path), rate_policy='paper', chaff_enabled=False,
        switchover_lead_seconds=2.0, switchover_ramp_seconds=0.5)
    shaper = tc_lib.Shaper(str(tmp_path), kernel=kernel)
    session = source.SourceSession(group, 'm-1', '198.18.1.2', 61234,
                                   64 * units.MIB, shaper=shaper, seed=7)
    guaranteed = session.switchover_bandwidth
    rates = source.expected_rates('paper', session.policy_kwargs, 7)
    assert guaranteed == pytest.approx(np.quantile(rates, 0.25))
    assert session.avail_switchover_bandwidth == pytest.approx(
        0.1 * guaranteed)
    assert group.min_rate * units.MIB < guaranteed < (
        group.max_rate * units.MIB)
    session.start()
    try:
        # Far from the end: nothing changes.
        assert session.progress(3 * guaranteed) is None
        assert session.progress(2 * guaranteed) == guaranteed
        assert session.switchover() == guaranteed
        # switchover() waits for a tick at the floor, a while at most: on
        # a loaded machine the tick may come after.
        deadline = time.monotonic() + 10
        while not shaper.modulator_rates(session.modulator)[
                'floor_reached']:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        now = shaper.modulator_rates(session.modulator)
        assert now['floor'] * units.MIB == pytest.approx(guaranteed)
        time.sleep(0.1)
        trace = shaper.modulator_trace(session.modulator)
        session.finish()
    finally:
        session.abort()
    report = session.report
    since = report['floor_since']
    held = [rate for at, rate in zip(trace['times'], trace['rates'])
            if at >= since]
    assert held and min(held) * units.MIB >= guaranteed * (1 - 1e-9)


def test_chaff_goes_to_the_destination_and_the_listed_peers():
    group = stealth_conf.load_group(
        chaff_ports='61500-61501',
        chaff_peers=['198.18.5.3', '198.18.5.2', '2001:db8::4'])
    assert source.chaff_peers(group, '198.18.5.2') == [
        ('198.18.5.2', [61500, 61501]), ('198.18.5.3', [61500, 61501]),
        ('2001:db8::4', [61500, 61501])]
    with pytest.raises(exception.InvalidOption, match='chaff_peers'):
        stealth_conf.load_group(chaff_peers=['compute-3'])


def test_no_credentials_no_chaff_and_an_error(tmp_path, caplog):
    # Plaintext chaff would announce the migration: without readable
    # credentials the migration goes on without chaff, loudly.
    group = stealth_conf.load_group(
        state_dir=str(tmp_path), backend='recording',
        chaff_tls_x509_dir=str(tmp_path / 'none'),
        chaff_lead_seconds=[0.1, 0.1])
    backend = recording.RecordingBackend('unit-source')
    try:
        session = source.SourceSession(
            group, 'm-1', '198.18.5.2', 61000, 64 << 20,
            shaper=tc_lib.Shaper.from_conf(group, kernel=backend),
            chaff_sender=sender_lib.ChaffSender, sleep=lambda s: None)
        session.start()
        assert session.chaff is None and session.modulator is not None
        session.abort()
    finally:
        recording.RecordingBackend.forget_hosts()
    assert 'WITHOUT chaff' in caplog.text
    assert 'chaff_tls_x509_dir' in caplog.text
