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
"""The interface every kernel backend provides."""

import abc


class KernelBackend(object, metaclass=abc.ABCMeta):
    """Traffic control, rate modulators and chaff connections of one host.

    The traffic-control methods take what
    :mod:`nova_stealth.privileged.tc` takes: integer handles, rates in
    bytes per second, shapes and keys built by
    :mod:`nova_stealth.shaping.tree`. A dump returns netlink messages, so
    both backends hold the same tree, byte for byte.
    """

    @abc.abstractmethod
    def kernel_id(self):
        """A name of the kernel (network namespace) this backend changes.

        The same for every service on that kernel, and different for
        another kernel or namespace; services that share it share the
        records of its devices' trees.
        """

    @abc.abstractmethod
    def link_info(self, ifname):
        """Return ``{'index': ifindex, 'mtu': mtu}`` of a device."""

    @abc.abstractmethod
    def route_device(self, address):
        """Return the name of the device that routes to ``address``."""

    @abc.abstractmethod
    def dump_tc(self, ifindex):
        """Return ``{'qdiscs': [...], 'classes': [...], 'filters': [...]}``.

        Each item is an rtnetlink message as the kernel dumps it.
        """

    @abc.abstractmethod
    def replay_tc(self, ifindex, snapshot):
        """Recreate a tree that :meth:`dump_tc` returned."""

    @abc.abstractmethod
    def replace_root_htb(self, ifindex, handle, default_minor):
        """Make an HTB qdisc the device's root."""

    @abc.abstractmethod
    def delete_root(self, ifindex, handle):
        """Delete the root qdisc ``handle``; False if it was not there."""

    @abc.abstractmethod
    def add_htb_class(self, ifindex, handle, parent, shape):
        """Add an HTB class."""

    @abc.abstractmethod
    def delete_class(self, ifindex, handle):
        """Delete a class; False if it was not there."""

    @abc.abstractmethod
    def add_u32_filter(self, ifindex, parent, prio, protocol, keys, classid):
        """Add a u32 filter sending matching packets to ``classid``."""

    @abc.abstractmethod
    def delete_filters(self, ifindex, parent, prio, protocol):
        """Delete the filters at one priority; False if there were none."""

    @abc.abstractmethod
    def start_modulator(self, ifindex, handle, parent, mtu, policy_name,
                        policy_kwargs, seed, tick_s, ramp_s=0.0, *,
                        modulator_id):
        """Start changing a class's rate every tick under ``modulator_id``.

        The id is the migration's own, so it means the same migration
        however often the daemon restarts; returns it.
        """

    @abc.abstractmethod
    def stop_modulator(self, modulator_id):
        """Stop a modulator and return its summary (None if unknown)."""

    @abc.abstractmethod
    def set_modulator_floor(self, modulator_id, rate, ramp_s):
        """Hold a modulator's rate at or above ``rate`` MiB/s.

        Entered over ``ramp_s`` seconds; returns the floor, None if the
        modulator is unknown.
        """

    @abc.abstractmethod
    def modulator_rates(self, modulator_id):
        """A modulator's rates now, None if unknown.

        ``{'set': MiB/s, 'sent': bytes/s or None, 'floor': MiB/s or None,
        'floor_reached': bool}``
        """

    @abc.abstractmethod
    def modulator_report(self, modulator_id):
        """Return a running modulator's summary, None if unknown."""

    @abc.abstractmethod
    def modulator_trace(self, modulator_id):
        """Return a running modulator's last ticks, None if unknown."""

    @abc.abstractmethod
    def chaff_sender(self, peers, schedule, **kwargs):
        """Return a chaff sender (not started) for ``peers``.

        It behaves as :class:`nova_stealth.chaff.sender.ChaffSender`,
        which takes the same arguments.
        """
