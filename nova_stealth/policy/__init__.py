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
"""Rate policies: what rate the migration class gets on each tick.

Policies are plugins in the ``nova_stealth.rate_policies`` entry point
namespace; each is a :class:`nova_stealth.policy.base.RatePolicy`.
"""

from nova_stealth import plugins


def installed_policies():
    """Return the sorted names of the installed rate policies."""
    return plugins.installed(plugins.RATE_POLICIES)


def policy_class(name):
    """Return the class of the rate policy ``name``.

    :raises nova_stealth.exception.UnknownPlugin: listing the installed ones
    """
    return plugins.plugin_class(plugins.RATE_POLICIES, name, 'rate policy')


def load(name, group, seed=None):
    """Build the rate policy ``name`` from the [stealth] option group.

    :param name: entry point name, such as ``paper`` or ``constant``
    :param group: the loaded [stealth] group (its rate options are used)
    :param seed: seed for the policy's random generator
    :raises nova_stealth.exception.UnknownPlugin: listing the installed ones
    """
    return policy_class(name).from_conf(group, seed=seed)
