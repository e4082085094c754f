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
"""Kernel backends: how nova_stealth reaches traffic control and sockets.

A backend is a plugin in the ``nova_stealth.backends`` namespace, a
:class:`nova_stealth.backends.base.KernelBackend` chosen by
``[stealth] backend``: ``pyroute2`` drives the real kernel through the
privsep daemon, with tc messages of nova_stealth's own codec
(:mod:`nova_stealth.rtnl`; pyroute2 only looks links and routes up);
``recording`` keeps the same objects in memory, for where privsep cannot
run (Nova's functional test harness).
"""

from nova_stealth import plugins


def installed_backends():
    """Return the sorted names of the installed backends."""
    return plugins.installed(plugins.BACKENDS)


def load(name, host=None):
    """Return the backend ``name`` for the host called ``host``.

    :raises nova_stealth.exception.UnknownPlugin: listing the installed ones
    """
    return plugins.plugin_class(plugins.BACKENDS, name, 'backend')(host=host)
