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
"""Template libraries and the envelope rate policy, on real captures."""

import gzip
import json

import numpy as np
import pytest

from nova_stealth.analysis import templates as builder
from nova_stealth.cmd import audit as audit_cmd
from nova_stealth import conf as stealth_conf
from nova_stealth.engine import source
from nova_stealth import exception
from nova_stealth.policy import envelope
from nova_stealth.policy import templates
from nova_stealth.shaping import modulator
from tests import paths

MIB = 1 << 20
#: Two NDT speed tests (CC0): 2.0 and 10.6 MiB/s on average.
CAPTURES = ('mlab-ndt/ndt-4c6fb_1625899199_000000000121C1A0.pcap',
            'mlab-ndt/ndt-m6znc_1632401351_000000000005B90B.pcap')
WIDE = dict(min_rate=1e-6, max_rate=1e6)


@pytest.fixture(scope='module')
def library_path(tmp_path_factory):
    captures = [str(paths.traces() / name) for name in CAPTURES]
    library = builder.build(captures, ['CC0-1.0'] * len(captures),
                            root=str(paths.traces()))
    path = tmp_path_factory.mktemp('templates') / 'library.json'
    templates.write(library, path)
    return str(path)


@pytest.fixture(scope='module')
def one_flow_path(tmp_path_factory):
    capture = str(paths.traces() / CAPTURES[1])
    library = builder.build([capture], ['CC0-1.0'])
    path = tmp_path_factory.mktemp('templates') / 'one.json.gz'
    templates.write(library, path)
    return str(path)


def play(policy, seconds):
    """(rates in MiB/s, holds in s) of ``seconds`` of the policy."""
    rates, holds, elapsed = [], [], 0.0
    while elapsed < seconds:
        rates.append(policy.next_rate())
        holds.append(policy.hold_seconds())
        elapsed += holds[-1]
    return np.array(rates), np.array(holds)


def bytes_per_bin(rates, holds, bin_s):
    """What the rates send per bin of ``bin_s``, in bytes."""
    edges = np.concatenate([[0.0], np.cumsum(holds)])
    sent = np.concatenate([[0.0], np.cumsum(rates * holds * MIB)])
    grid = np.arange(0.0, edges[-1], bin_s)
    return np.diff(np.interp(grid, edges, sent))


def cv(values):
    return float(np.std(values) / np.mean(values))


def test_library_round_trip_keeps_bins_and_provenance(library_path):
    library = templates.load(library_path)
    assert library.bin_s == 0.001
    assert [e.capture for e in library.envelopes] == list(CAPTURES)
    first = library.envelopes[0]
    assert first.licence == 'CC0-1.0'
    assert first.flow['proto'] == 'tcp'
    assert first.start.endswith('Z') and first.start.startswith('2021-')
    # The file's own figures: 22.75 MB over 10.6 s (traces/README.md).
    assert first.bytes == first.bins.sum() == pytest.approx(22.75e6,
                                                            rel=0.01)
    assert first.duration_s == pytest.approx(10.617, abs=0.01)
    again = templates.from_dict(library.to_dict())
    assert [e.provenance() for e in again.envelopes] == [
        e.provenance() for e in library.envelopes]
    assert all(np.array_equal(a.bins, b.bins) for a, b in
               zip(again.envelopes, library.envelopes))


@pytest.mark.parametrize('damage, reason', [
    (lambda text: text[:len(text) // 2], 'cannot be read as JSON'),
    (lambda text: text.replace('"version":1', '"version":7'),
     'unknown version 7'),
    (lambda text: text.replace('"bins":[', '"bins":[5,', 1),
     'bins sum to'),
    (lambda text: text.replace('"format":"nova-stealth-envelopes"',
                               '"format":"other"'),
     'not a template library'),
])
def test_a_damaged_library_is_refused_naming_the_file(library_path,
                                                      tmp_path, damage,
                                                      reason):
    with open(library_path) as source_file:
        text = source_file.read()
    broken = tmp_path / 'broken.json'
    broken.write_text(damage(text))
    with pytest.raises(exception.TemplateLibraryError) as raised:
        templates.load(str(broken))
    assert str(broken) in str(raised.value)
    assert reason in str(raised.value)


def test_gzip_library_reads_like_plain(one_flow_path):
    with gzip.open(one_flow_path, 'rt') as compressed:
        assert json.load(compressed)['version'] == templates.VERSION
    assert len(templates.load(one_flow_path).envelopes) == 1


def test_same_seed_same_rates_and_ticks(library_path):
    def run(seed):
        return play(envelope.EnvelopeRatePolicy(
            1.0, 16.0, 4.0, template_library=library_path, seed=seed), 30)

    first, again, other = run(5), run(5), run(6)
    assert np.array_equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0][:100], other[0][:100])


def test_rates_stay_within_the_bounds(library_path):
    policy = envelope.EnvelopeRatePolicy(
        1.5, 3.0, 2.0, template_library=library_path, seed=2)
    rates, _ = play(policy, 60)
    assert rates.min() >= 1.5 and rates.max() <= 3.0
    # The 2 MiB/s envelope goes well outside [1.5, 3]: both bounds bind.
    assert (rates == 1.5).mean() > 0.05 and (rates == 3.0).mean() > 0.05


def test_mean_rate_floor_holds_at_every_moment(library_path):
    # The slower envelope (2.0 MiB/s) cannot be scaled to 8 (at most x2):
    # the floor itself must keep the migration's mean up.
    floor = 8.0
    policy = envelope.EnvelopeRatePolicy(
        1.0, 16.0, 2.0, template_library=library_path, min_mean_rate=floor,
        seed=3, expected_bytes=20 * MIB)
    rates, holds = play(policy, 120)
    elapsed = np.cumsum(holds)
    granted = np.cumsum(rates * holds)
    assert np.all(granted >= floor * (elapsed - envelope.FLOOR_SLACK_S)
                  - 1e-6)
    assert granted[-1] / elapsed[-1] >= floor * 0.99
    unfloored = envelope.EnvelopeRatePolicy(
        1.0, 16.0, 2.0, template_library=library_path, seed=3,
        expected_bytes=20 * MIB)
    rates, holds = play(unfloored, 120)
    assert (rates * holds).sum() / holds.sum() < floor


def test_envelopes_are_scaled_only_within_bounds(library_path):
    policy = envelope.EnvelopeRatePolicy(
        1.0, 16.0, 4.0, template_library=library_path, min_mean_rate=3.0,
        seed=1)
    scales = {choice[0].capture: choice[3] for choice in policy.candidates}
    # 2.0 MiB/s is lifted to the floor, 10.6 MiB/s is played as it is.
    assert scales[CAPTURES[0]] == pytest.approx(3.0 / 2.04, rel=0.01)
    assert scales[CAPTURES[1]] == 1.0
    policy = envelope.EnvelopeRatePolicy(
        1.0, 16.0, 4.0, template_library=library_path, min_mean_rate=5.0,
        seed=1)
    # Lifting 2.0 to 5.0 would take more than x2: that envelope is out.
    assert [c[0].capture for c in policy.candidates] == [CAPTURES[1]]


def test_ticks_leave_no_grid(library_path):
    policy = envelope.EnvelopeRatePolicy(
        1.0, 16.0, 4.0, template_library=library_path, tick_s=0.01,
        seed=4)
    _, holds = play(policy, 60)
    assert holds.min() >= 0.005 and holds.max() <= 0.015
    phases = np.cumsum(holds) % 0.01 / 0.01
    counts, _ = np.histogram(phases, bins=10, range=(0, 1))
    # Tick instants fall evenly within any 10 ms period, not on a grid.
    assert counts.min() > 0.7 * counts.mean()


def test_modulator_sets_each_rate_for_the_policys_hold(library_path):
    now = [50.0]

    def sleep(seconds):
        now[0] += seconds

    policy = envelope.EnvelopeRatePolicy(
        1.0, 16.0, 4.0, template_library=library_path, seed=8)
    holds = []
    next_rate = policy.next_rate

    def recording():
        rate = next_rate()
        holds.append(policy.hold_seconds())
        if len(holds) == 200:
            loop._stopping.set()
        return rate

    policy.next_rate = recording
    loop = modulator.Modulator(policy, lambda rate: None, 0.01,
                               clock=lambda: now[0], sleep=sleep)
    loop._run()
    times = np.array(loop.trace()['times'])
    assert loop.skipped == 0
    assert np.allclose(np.diff(times), holds[:-1])
    assert np.std(np.diff(times)) > 0.002


def test_policy_reproduces_the_envelope_statistics(one_flow_path):
    """CV at 100 ms and 1 s of a long run, against the source flow's."""
    library = templates.load(one_flow_path)
    flow = library.envelopes[0]
    cumulative = [0.0] + flow.bins.cumsum().tolist()
    start, end = envelope.body(cumulative, library.bin_s)
    steady = flow.bins[int(start / library.bin_s):int(end / library.bin_s)]
    played = np.concatenate([bytes_per_bin(*play(
        envelope.EnvelopeRatePolicy(
            start_rate=flow.mean_rate / MIB, template_library=one_flow_path,
            seed=seed, **WIDE), 60), library.bin_s) for seed in range(4)])
    for scale in (0.1, 1.0):
        step = int(round(scale / library.bin_s))
        source_cv = cv(steady[:len(steady) // step * step].reshape(
            -1, step).sum(axis=1))
        policy_cv = cv(played[:len(played) // step * step].reshape(
            -1, step).sum(axis=1))
        assert policy_cv == pytest.approx(source_cv, rel=0.25), scale
    assert np.mean(played) / library.bin_s == pytest.approx(
        steady.mean() / library.bin_s, rel=0.1)


def test_expected_bytes_prefer_envelopes_of_that_size(library_path):
    small = envelope.EnvelopeRatePolicy(
        1.0, 16.0, 4.0, template_library=library_path,
        expected_bytes=20 * MIB, seed=1)
    weights = {c[0].capture: c[4] for c in small.candidates}
    assert weights[CAPTURES[0]] > weights[CAPTURES[1]]
    large = envelope.EnvelopeRatePolicy(
        1.0, 16.0, 4.0, template_library=library_path,
        expected_bytes=120 * MIB, seed=1)
    weights = {c[0].capture: c[4] for c in large.candidates}
    assert weights[CAPTURES[1]] > weights[CAPTURES[0]]


def test_expected_rates_weigh_each_rate_by_its_hold(library_path):
    kwargs = dict(min_rate=1.0, max_rate=16.0, start_rate=4.0,
                  template_library=library_path, tick_s=0.01)
    rates = source.expected_rates('envelope', kwargs, seed=9)
    rate, hold = play(envelope.EnvelopeRatePolicy(seed=9, **kwargs),
                      len(rates) * 0.1 - 0.05)
    assert np.mean(rates) == pytest.approx(
        (rate * hold).sum() / hold.sum() * MIB, rel=0.02)


def test_shipped_library_is_cc0_and_loads():
    library = envelope.read_library(None)
    assert library.envelopes
    assert {e.licence for e in library.envelopes} == {'CC0-1.0'}
    assert all(e.capture.startswith('ndt-') for e in library.envelopes)


def test_options_name_the_bad_library_and_floor(tmp_path):
    missing = str(tmp_path / 'nowhere.json')
    with pytest.raises(exception.InvalidOption) as raised:
        stealth_conf.load_group(rate_policy='envelope',
                                template_library=missing)
    assert 'template_library' in str(raised.value)
    assert missing in str(raised.value)
    with pytest.raises(exception.InvalidOption) as raised:
        stealth_conf.load_group(rate_policy='envelope', min_mean_rate=20.0)
    assert 'min_mean_rate' in str(raised.value)
    group = stealth_conf.load_group(rate_policy='envelope')
    kwargs = envelope.EnvelopeRatePolicy.conf_kwargs(group)
    assert kwargs['min_mean_rate'] == 2.0 and kwargs['tick_s'] == 0.01


def test_audit_builds_a_library(tmp_path, capsys):
    out = tmp_path / 'mine.json'
    assert audit_cmd.main(['--build-templates', str(out), '--licence',
                           'CC0-1.0', str(paths.traces() / CAPTURES[0])]) == 0
    assert '1 envelopes written' in capsys.readouterr().out
    assert templates.load(str(out)).envelopes[0].licence == 'CC0-1.0'
    empty = tmp_path / 'none.json'
    assert audit_cmd.main(['--build-templates', str(empty), str(
        paths.traces() / 'ndpi' / 'android.pcap')]) == 2
    assert not empty.exists()


def test_link_headroom_keeps_envelopes_that_fit(library_path):
    def captures(headroom):
        policy = envelope.EnvelopeRatePolicy(
            1.0, 16.0, 4.0, template_library=library_path, seed=1,
            link_headroom=headroom)
        return sorted(choice[0].capture for choice in policy.candidates)

    assert captures(None) == sorted(CAPTURES)
    # 5 MiB/s free: the 10.6 MiB/s flow would not fit.
    assert captures(5.0 * MIB) == [CAPTURES[0]]
    # Nothing fits 0.5 MiB/s: every envelope stays a candidate.
    assert captures(0.5 * MIB) == sorted(CAPTURES)
    assert envelope.EnvelopeRatePolicy.migration_kwargs(
        64 * MIB, link_headroom=5.0 * MIB) == {
            'expected_bytes': 64 * MIB, 'link_headroom': 5.0 * MIB}


def test_device_counter_read_from_sysfs(tmp_path):
    counter = tmp_path / 'eth7' / 'statistics'
    counter.mkdir(parents=True)
    (counter / 'tx_bytes').write_text('123456\n')
    assert source.device_tx_bytes('eth7', sysfs=str(tmp_path)) == 123456
    assert source.device_tx_bytes('eth8', sysfs=str(tmp_path)) is None
    assert source.device_tx_bytes(None) is None
    assert source.device_tx_bytes('lo') >= 0
