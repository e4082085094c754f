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
"""Options of the switch-over: the rate held while QEMU stops the guest.

QEMU stops the guest when the dirty memory left fits ``downtime-limit`` at
the bandwidth it expects for the stop-and-copy; the shaping must then give
the last copy at least that bandwidth, or the downtime grows by however
long the class takes to drain it at the policy's rate of the moment.
"""

from oslo_config import cfg

from nova_stealth.conf import base

switchover_opts = [
    cfg.FloatOpt(
        'switchover_rate_quantile',
        default=0.25,
        min=0.0,
        max=1.0,
        help="""
The rate guaranteed from QEMU's switch-over decision until the guest runs on
the destination, as this quantile of the rate policy's own 100 ms mean rates
(run ahead with the migration's seed). The guarantee only lifts the policy's
rates that fall below it, to a rate the policy itself often sends, so the
end of the migration keeps the flow's statistics.
"""),
    cfg.FloatOpt(
        'switchover_bandwidth_share',
        default=0.1,
        min=0.01,
        max=1.0,
        help="""
QEMU is told this share of the guaranteed rate as its
``avail-switchover-bandwidth`` (QEMU 8.2 and later): QEMU stops the guest
once what is left fits ``downtime-limit`` at the rate it is told, so the
stop-and-copy then takes at most this share of ``downtime-limit`` at the rate
guaranteed. 1.0 tells QEMU the guaranteed rate itself, and QEMU then plans
to use the whole of ``downtime-limit`` (measured: 260-275 ms of downtime at
the default 300 ms where native migration has 3-80 ms).
"""),
    cfg.FloatOpt(
        'switchover_lead_seconds',
        default=1.0,
        min=0.0,
        max=600.0,
        help="""
Start raising the policy's floor toward the guaranteed rate when the data
QEMU has left would take this long at that rate, so that the guarantee is
entered gradually during the last pass rather than as a step at the
switch-over.
"""),
    cfg.FloatOpt(
        'switchover_ramp_seconds',
        default=0.5,
        min=0.0,
        max=60.0,
        help="""
Seconds over which the floor climbs, geometrically, from the rate of the
moment to the guaranteed rate (0: at once).
"""),
]


def register_opts(conf):
    """Register the switch-over options in the [stealth] group."""
    conf.register_opts(switchover_opts, group=base.GROUP)


def list_opts():
    """Return the switch-over options for the sample generator."""
    return {base.stealth_group: switchover_opts}


def validate(group):
    """Check the switch-over options; their bounds are all per option."""
