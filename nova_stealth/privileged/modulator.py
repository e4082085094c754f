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
"""The modulator that runs inside the privsep daemon.

It is :class:`nova_stealth.shaping.modulator.Modulator`'s loop with the
rate policy plugin built in the daemon and a netlink socket of its own, so
that a tick costs no privsep round trip. Every rate it sets is checked
against the daemon's bounds first.
"""

from nova_stealth import policy as rate_policies
from nova_stealth.privileged import guard
from nova_stealth import rtnl
from nova_stealth.shaping import modulator
from nova_stealth.shaping import tree


class ClassModulator(modulator.Modulator):
    """A modulator driving one HTB class over its own netlink socket.

    The socket is opened once, in the daemon's network namespace, when the
    modulator is made.
    """

    def __init__(self, ifindex, handle, parent, mtu, policy_name,
                 policy_kwargs, seed, tick_s, ramp_s=0.0):
        policy_cls = rate_policies.policy_class(policy_name)
        policy = policy_cls(seed=seed, **policy_kwargs)
        self.ifindex = ifindex
        self.handle = handle
        self.socket = rtnl.RtnlSocket()

        def apply_rate(rate):
            guard.integer('rate', rate, 1, guard.MAX_RATE)
            options = rtnl.htb_class_options(**tree.htb_shape(rate, mtu))
            return self.socket.change_htb_class(ifindex, handle, parent,
                                                options)

        super().__init__(policy, apply_rate, tick_s, ramp_s,
                         policy_name=policy_name)

    def _run(self):
        try:
            super()._run()
        finally:
            self.socket.close()
