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
"""Options of the rate policy that modulates the migration class.

Rates are in MiB/s, the unit of QEMU's and libvirt's migration bandwidth.
The defaults are those of the paper (Algorithm 3 and Section V-B).
"""

from oslo_config import cfg
from oslo_config import types

from nova_stealth.conf import base
from nova_stealth import exception
from nova_stealth import plugins

FACTOR = types.Float(min=0.0)

policy_opts = [
    cfg.StrOpt(
        'rate_policy',
        default='paper',
        help="""
Name of the rate policy, an entry point in the ``nova_stealth.rate_policies``
namespace. Installed with nova_stealth:

* ``paper``: Algorithm 3 of the stealth migration paper, which varies the
  rate so that its coefficient of variation stays in [cv_lower, cv_upper].
* ``constant``: one fixed rate (start_rate), a BuFLO-style baseline that is
  easy to detect; for experiments only.
* ``envelope``: each migration follows envelopes of real long flows drawn
  from template_library (bytes per millisecond as the flows sent them),
  within [min_rate, max_rate] and at least min_mean_rate on average.
"""),
    cfg.StrOpt(
        'template_library',
        default='',
        help="""
Path of the template library the ``envelope`` rate policy draws from: a JSON
file (gzip-compressed if its name ends in .gz) of envelopes of real long
flows, as ``nova-stealth-audit --build-templates`` writes it from captures
of this link. Empty: the library shipped with nova_stealth, built from
M-Lab NDT speed tests (CC0). Read and checked at start-up.
"""),
    cfg.FloatOpt(
        'min_mean_rate',
        default=2.0,
        min=0.0,
        help="""
Least mean rate, in MiB/s, of a migration under the ``envelope`` rate policy,
so that a migration cannot be stretched without bound: envelopes whose mean
is lower are scaled up (by at most a factor 2) or not used, and a migration
that falls more than a second's worth behind this mean is sent faster than
its envelope until it has caught up (where that happens its rate no longer
follows real traffic). 0 disables the floor. At most max_rate.
"""),
    cfg.FloatOpt(
        'min_rate',
        default=1.0,
        min=0.01,
        help="""
Lowest rate, in MiB/s, the policy may set (minR). Lower than max_rate.

Related options:

* max_rate
* start_rate
"""),
    cfg.FloatOpt(
        'max_rate',
        default=16.0,
        min=0.01,
        help="""
Highest rate, in MiB/s, the policy may set (maxR). [libvirt]
live_migration_bandwidth must be 0 or at least four times this.

Related options:

* min_rate
* start_rate
* [libvirt] live_migration_bandwidth
"""),
    cfg.FloatOpt(
        'start_rate',
        default=4.0,
        min=0.01,
        help="""
Rate, in MiB/s, of the migration class when it is installed, before the first
tick (r). It must lie within [min_rate, max_rate].

Related options:

* min_rate
* max_rate
"""),
    cfg.FloatOpt(
        'start_ramp_seconds',
        default=3.0,
        min=0.0,
        max=60.0,
        help="""
Seconds over which the migration's rate may climb at most from where it
starts to max_rate, geometrically; the chaff fills in the rest, so the
migration's start shows no step in the host's egress. 0 lets the policy
jump at once.

Related options:

* max_rate
* chaff_enabled
"""),
    cfg.IntOpt(
        'tick_interval_ms',
        default=10,
        min=1,
        max=1000,
        help='Milliseconds between two rate changes (int).'),
    cfg.IntOpt(
        'rate_window',
        default=50,
        min=2,
        max=100000,
        help="""
Number of most recent rates whose coefficient of variation (CV) steers the
policy (win).
"""),
    cfg.FloatOpt(
        'cv_lower',
        default=0.5,
        min=0.0,
        help="""
Lower bound of the target CV band (lC). Lower than cv_upper.

Related options:

* cv_upper
"""),
    cfg.FloatOpt(
        'cv_upper',
        default=1.0,
        min=0.0,
        help="""
Upper bound of the target CV band (uC).

Related options:

* cv_lower
"""),
    cfg.FloatOpt(
        'direction_change_threshold',
        default=0.1,
        min=0.0,
        help="""
The policy reverses direction when the CV drops by more than this between two
ticks (d).
"""),
    cfg.FloatOpt(
        'random_flip_chance',
        default=10.0,
        min=0.0,
        max=100.0,
        help="""
Chance, in percent, that the policy reverses direction at random on a tick
(c).
"""),
    cfg.ListOpt(
        'increase_factor_range',
        item_type=FACTOR,
        default=[1.0, 1.4],
        help="""
Range low,high of the factor applied to the rate when rising with the CV
inside the band ([x1, y1]).
"""),
    cfg.ListOpt(
        'strong_increase_factor_range',
        item_type=FACTOR,
        default=[1.4, 1.9],
        help="""
Range low,high of the factor applied to the rate when rising with the CV
below cv_lower ([x2, y2]).
"""),
    cfg.ListOpt(
        'decrease_factor_range',
        item_type=FACTOR,
        default=[0.8, 1.0],
        help="""
Range low,high of the factor applied to the rate when falling with the CV
inside the band ([x3, y3]).
"""),
    cfg.ListOpt(
        'strong_decrease_factor_range',
        item_type=FACTOR,
        default=[0.1, 0.8],
        help="""
Range low,high of the factor applied to the rate when falling with the CV
below cv_lower ([x4, y4]).
"""),
]

FACTOR_RANGE_OPTS = ('increase_factor_range', 'strong_increase_factor_range',
                     'decrease_factor_range', 'strong_decrease_factor_range')


def register_opts(conf):
    """Register the rate policy options in the [stealth] group."""
    conf.register_opts(policy_opts, group=base.GROUP)


def list_opts():
    """Return the rate policy options for the sample generator."""
    return {base.stealth_group: policy_opts}


def validate(group):
    """Check the rules between rate policy options.

    :param group: the loaded [stealth] group
    :raises nova_stealth.exception.InvalidOption: naming the first option
        that breaks a rule
    """
    plugins.check_option(group, 'rate_policy', plugins.RATE_POLICIES,
                         'rate policies')
    if group.min_rate >= group.max_rate:
        raise exception.InvalidOption(
            option='min_rate', value=group.min_rate,
            reason='must be lower than max_rate (%s)' % group.max_rate)
    if not group.min_rate <= group.start_rate <= group.max_rate:
        raise exception.InvalidOption(
            option='start_rate', value=group.start_rate,
            reason='must lie within [min_rate, max_rate] = [%s, %s]' % (
                group.min_rate, group.max_rate))
    if group.min_mean_rate > group.max_rate:
        raise exception.InvalidOption(
            option='min_mean_rate', value=group.min_mean_rate,
            reason='must not exceed max_rate (%s)' % group.max_rate)
    if group.rate_policy == 'envelope' or group.template_library:
        _check_library(group.template_library)
    if group.cv_lower >= group.cv_upper:
        raise exception.InvalidOption(
            option='cv_lower', value=group.cv_lower,
            reason='must be lower than cv_upper (%s)' % group.cv_upper)
    for name in FACTOR_RANGE_OPTS:
        value = group[name]
        if len(value) != 2:
            raise exception.InvalidOption(
                option=name, value=value,
                reason='must be two numbers, low,high')
        if value[0] > value[1]:
            raise exception.InvalidOption(
                option=name, value=value,
                reason='low (%s) must not exceed high (%s)' % tuple(value))


def _check_library(path):
    # Imported here: reading a library needs numpy, which the conf modules
    # do not import (the sample generator loads them alone).
    from nova_stealth.policy import envelope

    try:
        envelope.read_library(path)
    except exception.TemplateLibraryError as e:
        raise exception.InvalidOption(
            option='template_library', value=path or '(shipped library)',
            reason=e) from e
