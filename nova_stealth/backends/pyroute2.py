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
"""The real kernel: nova_stealth's privsep entrypoints and TCP sockets.

The plugin's name, ``pyroute2``, is the library it was first built on and
the value of ``[stealth] backend`` that operators have set. pyroute2 now
serves only the link and route look-ups; every tc message (the tree, the
filters, the modulator's class changes, dumps and replays) is encoded by
:mod:`nova_stealth.rtnl` and sent by the privsep daemon on a netlink
socket of its own.
"""

import socket

from nova_stealth.backends import base
from nova_stealth.chaff import sender
from nova_stealth.privileged import tc


class Pyroute2Backend(base.KernelBackend):
    """Traffic control through the ``net_admin`` privsep daemon.

    Each method is the privileged entrypoint of the same name in
    :mod:`nova_stealth.privileged.tc`, which sends tc messages encoded by
    :mod:`nova_stealth.rtnl` (pyroute2 only finds links and routes); the
    daemon starts on first use (through rootwrap under nova-compute).
    """

    kernel_id = staticmethod(tc.kernel_id)
    link_info = staticmethod(tc.link_info)
    route_device = staticmethod(tc.route_device)
    dump_tc = staticmethod(tc.dump_tc)
    replay_tc = staticmethod(tc.replay_tc)
    replace_root_htb = staticmethod(tc.replace_root_htb)
    delete_root = staticmethod(tc.delete_root)
    add_htb_class = staticmethod(tc.add_htb_class)
    delete_class = staticmethod(tc.delete_class)
    add_u32_filter = staticmethod(tc.add_u32_filter)
    delete_filters = staticmethod(tc.delete_filters)
    start_modulator = staticmethod(tc.start_modulator)
    stop_modulator = staticmethod(tc.stop_modulator)
    set_modulator_floor = staticmethod(tc.set_modulator_floor)
    modulator_rates = staticmethod(tc.modulator_rates)
    modulator_report = staticmethod(tc.modulator_report)
    modulator_trace = staticmethod(tc.modulator_trace)

    def __init__(self, host=None, socket_factory=socket.socket):
        self.host = host
        self.socket_factory = socket_factory

    def chaff_sender(self, peers, schedule, **kwargs):
        """A real :class:`~nova_stealth.chaff.sender.ChaffSender`."""
        return sender.ChaffSender(peers, schedule,
                                  socket_factory=self.socket_factory,
                                  **kwargs)
