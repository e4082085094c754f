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
"""Options of the Dynamic HTB on the egress device toward the peer."""

from oslo_config import cfg

from nova_stealth.conf import base

shaping_opts = [
    cfg.StrOpt(
        'egress_device',
        help="""
Network device whose egress carries migration data. Unset, the device the
kernel routes the peer's address to is used, for each migration.
"""),
    cfg.IntOpt(
        'link_rate_mbit',
        default=100000,
        min=1,
        help="""
Rate, in Mbit/s, of the shaping tree's parent class and of the default class
that carries all traffic other than migrations and chaff. Keep it at or
above what the device can really send, so that HTB leaves that traffic
unshaped; the default, 100 Gbit/s, is above any device nova-compute runs on
today.
"""),
    cfg.BoolOpt(
        'allow_replace_root_qdisc',
        default=False,
        help="""
Allow nova_stealth to replace the qdiscs that an operator configured on the
egress device: any qdisc with a handle of its own, root or child (an fq or
fq_codel root, a child tuned under mq, a tbf, an htb tree...), but for the
untunable noqueue, pfifo_fast and mq, which are always saved and put back.
They are saved first and restored exactly when the last migration on the
device ends. When false, a migration over such a device is refused. The
kernel's own qdiscs (handle 0:, whatever net.core.default_qdisc makes them)
are replaced freely and come back by themselves.
"""),
    cfg.StrOpt(
        'on_defence_failure',
        default='abort',
        choices=[
            ('abort', 'abort the live migration through libvirt; the guest '
                      'stays on its source'),
            ('continue', 'remove the shaping and the chaff and let the '
                         'migration go on, unhidden, with a warning'),
        ],
        help="""
What to do when the defence of a running migration cannot hold: its rate
modulator stopped (after a netlink error that retries did not overcome) or
went away with the privsep daemon, so that the migration class would stay at
one rate, the constant baseline an eavesdropper tells apart. Either way the
compute log says so at ERROR level.
"""),
]


def register_opts(conf):
    """Register the shaping options in the [stealth] group."""
    conf.register_opts(shaping_opts, group=base.GROUP)


def list_opts():
    """Return the shaping options for the sample generator."""
    return {base.stealth_group: shaping_opts}


def validate(group):
    """Check the shaping options; their bounds are all per option."""
