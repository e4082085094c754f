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
"""The [stealth] group and the options that concern the whole service."""

from oslo_config import cfg

from nova_stealth import plugins

GROUP = 'stealth'
GROUP_TITLE = 'Stealth live migration options'
GROUP_HELP = ('Options for nova_stealth, which shapes the traffic of libvirt '
              'live migrations so that an on-path observer cannot tell them '
              'from ordinary TCP flows. They are read by nova-compute when '
              '``compute_driver = stealth.StealthLibvirtDriver``.')

#: The group as the sample generator lists it. Registration makes a fresh
#: group per configuration object: oslo.config copies a registered group
#: shallowly, so one shared OptGroup would share its options' overrides
#: between every ConfigOpts it was registered on.
stealth_group = cfg.OptGroup(GROUP, title=GROUP_TITLE, help=GROUP_HELP)

base_opts = [
    cfg.BoolOpt(
        'enabled',
        default=True,
        help="""
Shape live migrations sent or received by this host.

When false, the driver behaves exactly like the libvirt driver and migrations
are sent unshaped.
"""),
    cfg.StrOpt(
        'state_dir',
        default='$state_path/stealth',
        help="""
Directory where port leases and installed shaping are recorded, so that a
restarted nova-compute can remove what a crashed one left behind. It must be
on local disk and writable by nova-compute. Each nova-compute keeps its own
subdirectory, named after its host.

Related options:

* [DEFAULT] state_path (Nova's): the default is under it
"""),
    cfg.BoolOpt(
        'require_stealth',
        default=False,
        help="""
Refuse a live migration that cannot be stealthed: one whose other end does not
run nova_stealth. When false, such a migration goes ahead unshaped and a
warning is logged. Tunnelled migrations are refused either way (they have no
data port to shape).
"""),
    cfg.StrOpt(
        'backend',
        default='pyroute2',
        help="""
How nova_stealth reaches the kernel: an entry point in the
``nova_stealth.backends`` namespace. ``pyroute2`` changes traffic control
through nova_stealth's privsep daemon, which sends tc messages of
nova_stealth's own rtnetlink codec (pyroute2 itself only looks up links and
routes), and sends chaff over TCP; ``recording``
keeps everything in memory and sends nothing (for tests only).
"""),
]


#: Nova's [DEFAULT] state_path, for a [stealth] group outside Nova (the
#: commands, the testbed, tests), so that state_dir's default reads
#: nova.conf's state_path as nova-compute does. The default is the one
#: distributions' nova.conf set.
standalone_state_path_opt = cfg.StrOpt(
    'state_path',
    default='/var/lib/nova',
    help="Nova's top-level directory for maintaining its state.")


def register_opts(conf):
    """Register the [stealth] group and its service-wide options.

    On a configuration other than the global one, also Nova's
    ``state_path`` if nothing registered it: in nova-compute, Nova
    registers it on ``cfg.CONF``, where an option of ours of that name
    would clash with Nova's.
    """
    conf.register_group(cfg.OptGroup(GROUP, title=GROUP_TITLE,
                                     help=GROUP_HELP))
    conf.register_opts(base_opts, group=GROUP)
    if conf is not cfg.CONF and 'state_path' not in conf:
        conf.register_opt(standalone_state_path_opt)


def list_opts():
    """Return the service-wide options for the sample generator."""
    return {stealth_group: base_opts}


def validate(group):
    """Check that the backend is installed.

    :raises nova_stealth.exception.InvalidOption: naming the bad option
    """
    plugins.check_option(group, 'backend', plugins.BACKENDS, 'backends')
