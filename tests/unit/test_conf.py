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
"""Every [stealth] option's bounds and every rule between options."""

import subprocess
import sys

from oslo_config import cfg
from oslo_config import types
import pytest

from nova_stealth import conf as stealth_conf
from nova_stealth.conf import opts
from nova_stealth import exception

OUT_OF_BOUNDS = [
    ('enabled', 'maybe'),
    ('min_rate', '0'),
    ('min_rate', 'fast'),
    ('max_rate', '0.001'),
    ('start_rate', '0'),
    ('tick_interval_ms', '0'),
    ('tick_interval_ms', '1001'),
    ('tick_interval_ms', '2.5'),
    ('rate_window', '1'),
    ('rate_window', '100001'),
    ('cv_lower', '-0.1'),
    ('cv_upper', '-1'),
    ('direction_change_threshold', '-0.01'),
    ('random_flip_chance', '-1'),
    ('random_flip_chance', '100.5'),
    ('increase_factor_range', '-0.5,1.0'),
    ('strong_increase_factor_range', '1.4,x'),
    ('decrease_factor_range', '0.8,-1'),
    ('strong_decrease_factor_range', '-0.1,0.8'),
    ('migration_port_ranges', '0-100'),
    ('migration_port_ranges', '61000-70000'),
    ('migration_port_ranges', 'ports'),
    ('allow_libvirt_port_range', 'perhaps'),
    ('chaff_enabled', 'sometimes'),
    ('chaff_budget_fraction', '-0.1'),
    ('chaff_budget_fraction', '10.5'),
    ('chaff_max_rate', '-1'),
    ('chaff_lead_seconds', '-1,5'),
    ('chaff_tail_seconds', '5,700'),
    ('chaff_ports', '0-3'),
]

BROKEN_RULES = [
    ({'min_rate': '16', 'max_rate': '16'}, 'min_rate',
     'lower than max_rate'),
    ({'min_rate': '8', 'max_rate': '4', 'start_rate': '5'}, 'min_rate',
     'lower than max_rate'),
    ({'start_rate': '0.5'}, 'start_rate', 'within [min_rate, max_rate]'),
    ({'start_rate': '17'}, 'start_rate', 'within [min_rate, max_rate]'),
    ({'cv_lower': '1.0'}, 'cv_lower', 'lower than cv_upper'),
    ({'cv_lower': '0.9', 'cv_upper': '0.2'}, 'cv_lower',
     'lower than cv_upper'),
    ({'increase_factor_range': '1.4,1.0'}, 'increase_factor_range',
     'must not exceed high'),
    ({'strong_increase_factor_range': '1.9'},
     'strong_increase_factor_range', 'two numbers'),
    ({'decrease_factor_range': '0.8,0.9,1.0'}, 'decrease_factor_range',
     'two numbers'),
    ({'strong_decrease_factor_range': '0.8,0.1'},
     'strong_decrease_factor_range', 'must not exceed high'),
    ({'migration_port_ranges': '62000-61000'}, 'migration_port_ranges',
     'LOW <= HIGH'),
    ({'migration_port_ranges': '49000-49200'}, 'migration_port_ranges',
     'overlaps libvirt'),
    ({'migration_port_ranges': '61000-61999,49215-49215'},
     'migration_port_ranges', 'overlaps libvirt'),
    ({'migration_port_ranges': ''}, 'migration_port_ranges',
     'at least one range'),
    # The defaults of old: the chaff filter would take a migration's port.
    ({'migration_port_ranges': '61000-64999'}, 'migration_port_ranges',
     'overlaps chaff_ports 61500-61503'),
    ({'migration_port_ranges': '61000-61100,62000-62999',
      'chaff_ports': '62999-63002'}, 'migration_port_ranges',
     'overlaps chaff_ports 62999-63002'),
    ({'rate_policy': 'buflo'}, 'rate_policy', 'constant, envelope, paper'),
    ({'chaff_schedule': 'steps'}, 'chaff_schedule', 'constant, ramp'),
    ({'chaff_lead_seconds': '9,3'}, 'chaff_lead_seconds', 'low <= high'),
    ({'chaff_tail_seconds': '4'}, 'chaff_tail_seconds', 'two numbers'),
    ({'chaff_ports': '61503-61500'}, 'chaff_ports', 'LOW <= HIGH'),
    ({'chaff_peer_networks': '198.18.0.0/15,not-a-net'},
     'chaff_peer_networks', 'is not a network'),
]


def test_defaults_are_valid(write_conf):
    conf = write_conf()
    stealth_conf.validate(conf)
    group = conf.stealth
    assert group.rate_policy == 'paper'
    assert (group.min_rate, group.max_rate, group.start_rate) == (1, 16, 4)
    assert group.tick_interval_ms == 10
    assert group.rate_window == 50
    assert (group.cv_lower, group.cv_upper) == (0.5, 1.0)
    assert group.increase_factor_range == [1.0, 1.4]
    assert group.strong_increase_factor_range == [1.4, 1.9]
    assert group.decrease_factor_range == [0.8, 1.0]
    assert group.strong_decrease_factor_range == [0.1, 0.8]
    assert group.migration_port_ranges == [range(62000, 65000)]
    assert not set(group.chaff_ports) & set(group.migration_port_ranges[0])


def test_ranges_that_touch_the_chaff_ports_only_at_the_edges(write_conf):
    conf = write_conf(migration_port_ranges='61000-61499,61504-61999')
    stealth_conf.validate(conf)


@pytest.mark.parametrize('option,value', OUT_OF_BOUNDS)
def test_out_of_bounds_names_the_option(write_conf, option, value):
    conf = write_conf(**{option: value})
    with pytest.raises(exception.InvalidOption) as raised:
        stealth_conf.validate(conf)
    assert '[stealth] %s:' % option in str(raised.value)


@pytest.mark.parametrize('options,option,reason', BROKEN_RULES)
def test_broken_rule_names_option_and_value(write_conf, options, option,
                                            reason):
    conf = write_conf(**options)
    with pytest.raises(exception.InvalidOption) as raised:
        stealth_conf.validate(conf)
    message = str(raised.value)
    assert '[stealth] %s:' % option in message
    assert reason in message
    if option in options and options[option]:
        # The bad item as written (a part of it, such as 'not' of
        # 'not-a-net', matches words of any message).
        shown = options[option].split(',')[-1]
        assert shown in message


def test_libvirt_ports_allowed_when_operator_insists(write_conf):
    conf = write_conf(migration_port_ranges='49152-49215',
                      allow_libvirt_port_range='true')
    stealth_conf.validate(conf)
    assert conf.stealth.migration_port_ranges == [range(49152, 49216)]


def test_ranges_that_touch_libvirt_ports_only_at_the_edges(write_conf):
    conf = write_conf(migration_port_ranges='49100-49151,49216-49300')
    stealth_conf.validate(conf)


def test_every_registered_option_is_listed_for_the_generator():
    listed = {opt.name for group, group_opts in opts.list_opts()
              for opt in group_opts}
    groups = [group.name for group, _ in opts.list_opts()]
    registered = set(stealth_conf.CONF.stealth.keys())
    assert groups == ['stealth']
    assert listed == registered
    for option, _ in OUT_OF_BOUNDS:
        assert option in listed


def test_a_lone_port_is_a_range_of_one(write_conf):
    conf = write_conf(migration_port_ranges='61000,61005-61006')
    stealth_conf.validate(conf)
    assert conf.stealth.migration_port_ranges == [range(61000, 61001),
                                                  range(61005, 61007)]


def test_overrides_stay_with_their_configuration():
    first, second = cfg.ConfigOpts(), cfg.ConfigOpts()
    for conf in (first, second):
        stealth_conf.register_opts(conf)
        conf([], default_config_files=[])
    first.set_override('min_rate', 2.5, group='stealth')
    assert first.stealth.min_rate == 2.5
    assert second.stealth.min_rate == 1.0
    assert stealth_conf.CONF.stealth.min_rate == 1.0


def test_load_group_applies_overrides_and_validates():
    group = stealth_conf.load_group(min_rate=2.0, max_rate=8.0)
    assert (group.min_rate, group.max_rate) == (2.0, 8.0)
    with pytest.raises(exception.InvalidOption, match='min_rate'):
        stealth_conf.load_group(min_rate=9.0, max_rate=8.0)


def test_conf_imports_nothing_but_oslo_config_and_its_own_leaves():
    # A fresh interpreter: this one has imported the whole package already.
    # The namespaces of the plugins live in nova_stealth.plugins so that
    # nova.conf's options can be loaded without the plugins (and numpy).
    script = (
        'import sys\n'
        'from oslo_config import cfg\n'
        'before = set(sys.modules)\n'
        'import nova_stealth.conf\n'
        'print("\\n".join(sorted(set(sys.modules) - before)))\n')
    loaded = subprocess.run([sys.executable, '-c', script], check=True,
                            capture_output=True, text=True).stdout.split()
    ours = {'nova_stealth', 'nova_stealth.exception', 'nova_stealth.plugins'}
    foreign = [name for name in loaded
               if name not in ours
               and not name.startswith('nova_stealth.conf')
               and name.split('.')[0] not in sys.stdlib_module_names]
    assert 'nova_stealth.conf.chaff' in loaded
    assert foreign == []


def float_options():
    """Names of every option that holds floats, alone or in a list."""
    names = []
    for _, group_opts in opts.list_opts():
        for opt in group_opts:
            kind = getattr(opt.type, 'item_type', opt.type)
            if isinstance(kind, types.Float):
                names.append((opt.name, isinstance(opt.type, types.List)))
    return names


def test_every_float_option_is_checked_for_nan_and_infinity():
    names = [name for name, _ in float_options()]
    for name in ('min_rate', 'max_rate', 'start_rate', 'chaff_max_rate',
                 'chaff_lead_seconds', 'increase_factor_range'):
        assert name in names


@pytest.mark.parametrize('number', ['nan', 'inf', '-inf'])
@pytest.mark.parametrize('option,is_list', float_options())
def test_nan_and_infinity_name_their_option(write_conf, option, is_list,
                                            number):
    # NaN passes every min and max (each comparison is false), and most
    # options have no max: both used to reach the rules between options,
    # which blamed another option (min_rate = nan as a start_rate error)
    # or let an unlimited class through (max_rate = inf).
    conf = write_conf(**{option: number + ',1.0' if is_list else number})
    with pytest.raises(exception.InvalidOption) as raised:
        stealth_conf.validate(conf)
    assert '[stealth] %s:' % option in str(raised.value)
    if number == 'nan':
        assert 'must be a finite number' in str(raised.value)


@pytest.mark.parametrize('option', ['migration_port_ranges', 'chaff_ports'])
@pytest.mark.parametrize('ports', ['1-1023', '80', '1000-2000'])
def test_privileged_ports_are_refused(write_conf, option, ports):
    conf = write_conf(**{option: ports})
    with pytest.raises(exception.InvalidOption) as raised:
        stealth_conf.validate(conf)
    assert '[stealth] %s:' % option in str(raised.value)
    assert 'below 1024 are privileged' in str(raised.value)


def test_first_unprivileged_port_is_allowed(write_conf):
    conf = write_conf(migration_port_ranges='1024-1100', chaff_ports='1101')
    stealth_conf.validate(conf)


@pytest.mark.parametrize('overrides,reason', [
    ({'min_rate': 'fast'}, 'could not convert'),
    ({'chaff_ports': '0-3'}, 'below 1024'),
    ({'tick_interval_ms': 'often'}, 'invalid literal'),
    ({'min_rte': 2.0}, 'no such option in [stealth]'),
])
def test_load_group_overrides_name_the_option(overrides, reason):
    with pytest.raises(exception.InvalidOption) as raised:
        stealth_conf.load_group(**overrides)
    (option, value), = overrides.items()
    assert '[stealth] %s:' % option in str(raised.value)
    assert repr(value) in str(raised.value)
    assert reason in str(raised.value)


@pytest.mark.parametrize('written,network', [
    ('198.18.0.10/24', '198.18.0.0/24'),
    ('198.18.0.0/15', '198.18.0.0/15'),
    ('198.18.3.4', '198.18.3.4/32'),
    ('2001:db8::10/64', '2001:db8::/64'),
])
def test_a_host_address_with_a_prefix_is_its_network(write_conf, written,
                                                     network):
    # devstack's default is $HOST_IP/24.
    conf = write_conf(chaff_peer_networks=written)
    stealth_conf.validate(conf)
    assert conf.stealth.chaff_peer_networks == [network]


def test_peer_networks_given_as_overrides_are_networks_too():
    # The responder's --peer-network reaches the group as an override.
    group = stealth_conf.load_group(chaff_peer_networks=['127.0.0.1/24'])
    assert group.chaff_peer_networks == ['127.0.0.0/24']
    with pytest.raises(exception.InvalidOption, match='not a network'):
        stealth_conf.load_group(chaff_peer_networks=['127.0.0.1/33'])
