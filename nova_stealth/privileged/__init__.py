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
"""Privileged contexts of nova_stealth.

One context per capability set, as in os-vif. Each context runs in the
network namespace its daemon was started in: nova-compute's own on a compute
node; a test or the testbed starts it inside a namespace through the
``helper_command`` option of its section.

What runs inside the daemon, and nothing else: the entrypoints of ``tc``
(one kernel operation each, every request checked first by ``guard``, the
daemon's own safety checks) and, for each migration, its modulator
(``modulator``): the tick loop of :mod:`nova_stealth.shaping.modulator` and
the rate-policy plugin it builds (:mod:`nova_stealth.policy`), on a netlink
socket of its own. The messages are encoded by :mod:`nova_stealth.rtnl`, a
pure codec outside this package that the unprivileged side reads dumps with
too.
"""

from oslo_privsep import capabilities as caps
from oslo_privsep import priv_context

#: The section of nova.conf with the daemon's options (oslo.privsep's
#: ``helper_command``, ``user``, ...).
CONFIG_SECTION = 'nova_stealth_privileged'

#: Seconds a call into the daemon may take before the caller gives up
#: with ``oslo_privsep.comm.PrivsepTimeout``: the slowest entrypoint (a
#: modulator's stop, which waits at most 5 s for its tick) is far below
#: it, and without it a lost reply would hang nova-compute for good.
TIMEOUT_SECONDS = 60.0

#: Changing qdiscs, classes and filters needs CAP_NET_ADMIN and nothing else.
net_admin = priv_context.PrivContext(
    'nova_stealth',
    cfg_section=CONFIG_SECTION,
    pypath=__name__ + '.net_admin',
    capabilities=[caps.CAP_NET_ADMIN],
    timeout=TIMEOUT_SECONDS,
)
