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
"""The rate policies: plugin loading, the paper's Algorithm 3, the baseline."""

import numpy as np
import pytest

from nova_stealth import conf as stealth_conf
from nova_stealth import exception
from nova_stealth import policy
from nova_stealth.policy import constant
from nova_stealth.policy import paper

WIDE = dict(min_rate=1e-300, max_rate=1e300, start_rate=1.0)


def quiet_policy(**kwargs):
    """A paper policy with no random flips, for driving the rules."""
    options = dict(WIDE, random_flip_chance=0.0, seed=1)
    options.update(kwargs)
    return paper.PaperRatePolicy(**options)


def run(policy_obj, ticks):
    return np.array([policy_obj.next_rate() for _ in range(ticks)])


def test_installed_policies():
    assert policy.installed_policies() == ['constant', 'envelope', 'paper']


def test_load_by_name_uses_the_options(write_conf):
    # Every option its own value, none a default: an option dropped (the
    # default comes back) or two swapped shows.
    conf = write_conf(min_rate='2', max_rate='12', start_rate='3',
                      rate_window='20', cv_lower='0.4', cv_upper='1.3',
                      direction_change_threshold='0.15',
                      random_flip_chance='7.5',
                      increase_factor_range='1.05,1.3',
                      strong_increase_factor_range='1.45,1.8',
                      decrease_factor_range='0.85,0.95',
                      strong_decrease_factor_range='0.2,0.7')
    loaded = policy.load('paper', conf.stealth, seed=3)
    assert isinstance(loaded, paper.PaperRatePolicy)
    assert (loaded.min_rate, loaded.max_rate, loaded.rate) == (2, 12, 3)
    assert loaded.rates.maxlen == 20
    assert (loaded.cv_lower, loaded.cv_upper) == (0.4, 1.3)
    assert loaded.direction_change_threshold == 0.15
    assert loaded.random_flip_chance == 7.5
    # ranges[(rising, strong)]
    assert loaded.ranges == {(True, False): (1.05, 1.3),
                             (True, True): (1.45, 1.8),
                             (False, False): (0.85, 0.95),
                             (False, True): (0.2, 0.7)}
    baseline = policy.load('constant', conf.stealth)
    assert isinstance(baseline, constant.ConstantRatePolicy)
    assert (baseline.min_rate, baseline.max_rate) == (2, 12)
    assert set(run(baseline, 20)) == {3}


def test_unknown_policy_lists_the_installed_ones(write_conf):
    conf = write_conf()
    with pytest.raises(exception.UnknownPlugin) as raised:
        policy.load('buflo', conf.stealth)
    message = str(raised.value)
    assert "'buflo'" in message
    assert 'constant, envelope, paper' in message


def test_constant_policy_returns_the_start_rate():
    baseline = constant.ConstantRatePolicy(1.0, 16.0, 6.5, seed=0)
    assert set(run(baseline, 100)) == {6.5}


@pytest.mark.parametrize('rates', [(0, 1, 1), (2, 1, 3), (1, 5, 6)])
def test_policy_rejects_impossible_rates(rates):
    with pytest.raises(ValueError):
        constant.ConstantRatePolicy(*rates)


def test_same_seed_same_sequence():
    first = run(paper.PaperRatePolicy(1, 16, 4, seed=42), 2000)
    again = run(paper.PaperRatePolicy(1, 16, 4, seed=42), 2000)
    other = run(paper.PaperRatePolicy(1, 16, 4, seed=43), 2000)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize('seed', range(5))
def test_rates_stay_within_bounds(seed):
    rates = run(paper.PaperRatePolicy(
        1, 16, 4, strong_increase_factor_range=(3.0, 5.0),
        strong_decrease_factor_range=(0.01, 0.1), seed=seed), 5000)
    assert rates.min() >= 1.0
    assert rates.max() <= 16.0
    assert rates.min() == 1.0 and rates.max() == 16.0


def test_window_keeps_exactly_win_rates():
    policy_obj = paper.PaperRatePolicy(1, 16, 4, window=7, seed=0)
    rates = run(policy_obj, 30)
    assert list(policy_obj.rates) == list(rates[-7:])


def test_drop_in_cv_larger_than_d_flips_direction():
    policy_obj = quiet_policy(direction_change_threshold=0.1)
    policy_obj.step(0.6)
    assert policy_obj.rising
    policy_obj.step(0.49)
    assert not policy_obj.rising


def test_drop_in_cv_of_at_most_d_keeps_direction():
    policy_obj = quiet_policy(direction_change_threshold=0.1)
    for cv in (0.6, 0.55, 0.5, 0.45, 0.46):
        policy_obj.step(cv)
        assert policy_obj.rising


def test_unchanged_cv_flips_direction():
    policy_obj = quiet_policy()
    policy_obj.step(0.7)
    assert policy_obj.rising
    policy_obj.step(0.7)
    assert not policy_obj.rising
    policy_obj.step(0.7)
    assert policy_obj.rising


def test_first_tick_of_an_empty_window_flips_direction():
    policy_obj = quiet_policy()
    policy_obj.next_rate()
    assert not policy_obj.rising


def test_certain_random_flip_flips_every_tick():
    policy_obj = quiet_policy(random_flip_chance=100.0)
    seen = []
    for cv in np.linspace(0.1, 0.9, 9):
        policy_obj.step(cv)
        seen.append(policy_obj.rising)
    assert seen == [False, True] * 4 + [False]


def test_random_flip_happens_at_the_configured_chance():
    policy_obj = quiet_policy(random_flip_chance=10.0)
    flips = 0
    for cv in np.linspace(0.0, 0.9, 20001)[1:]:
        before = policy_obj.rising
        policy_obj.step(cv)
        flips += before != policy_obj.rising
    assert 0.09 < flips / 20000 < 0.11


def test_rules_that_fire_together_cancel_out():
    policy_obj = quiet_policy(random_flip_chance=100.0)
    policy_obj.step(0.8)
    assert not policy_obj.rising
    policy_obj.step(0.3)
    assert not policy_obj.rising


@pytest.mark.parametrize('rising,cv,low,high', [
    (True, 0.7, 1.0, 1.4),
    (True, 0.2, 1.4, 1.9),
    (False, 0.7, 0.8, 1.0),
    (False, 0.2, 0.1, 0.8),
])
def test_factor_drawn_from_the_range_for_direction_and_cv(rising, cv, low,
                                                          high):
    policy_obj = quiet_policy(direction_change_threshold=10.0)
    policy_obj.rising = rising
    factors = []
    current = cv
    for _ in range(500):
        before = policy_obj.rate
        current = cv + 1e-9 if current == cv else cv
        policy_obj.step(current)
        assert policy_obj.rising == rising
        factors.append(policy_obj.rate / before)
    factors = np.array(factors)
    assert factors.min() >= low
    assert factors.max() <= high
    assert factors.max() - factors.min() > 0.8 * (high - low)


@pytest.mark.parametrize('rising', [True, False])
def test_cv_at_or_above_upper_bound_holds_the_rate(rising):
    policy_obj = quiet_policy(direction_change_threshold=10.0)
    policy_obj.rising = rising
    for cv in (1.0, 1.5, 2.0):
        policy_obj.step(cv)
        assert policy_obj.rate == 1.0


def test_rate_is_clamped_to_the_bounds():
    policy_obj = quiet_policy(min_rate=1.0, max_rate=2.0, start_rate=1.5,
                              direction_change_threshold=10.0)
    for cv in (0.1, 0.11, 0.12, 0.13, 0.14, 0.15):
        policy_obj.step(cv)
    assert policy_obj.rate == 2.0
    policy_obj.rising = False
    for cv in (0.16, 0.17, 0.18, 0.19, 0.2, 0.21, 0.22, 0.23):
        policy_obj.step(cv)
    assert policy_obj.rate == 1.0


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_median_cv_with_paper_defaults_is_in_the_band(write_conf, seed):
    conf = write_conf(random_flip_chance='10',
                      direction_change_threshold='0.1')
    stealth_conf.validate(conf)
    policy_obj = policy.load('paper', conf.stealth, seed=seed)
    cvs = []
    for _ in range(20000):
        policy_obj.next_rate()
        cvs.append(paper.coefficient_of_variation(policy_obj.rates))
    assert 0.5 <= np.median(cvs) <= 1.0


def test_coefficient_of_variation():
    assert paper.coefficient_of_variation([]) == 0.0
    assert paper.coefficient_of_variation([0, 0]) == 0.0
    assert paper.coefficient_of_variation([2, 2, 2]) == 0.0
    assert paper.coefficient_of_variation([1, 3]) == pytest.approx(0.5)
