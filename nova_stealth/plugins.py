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
"""Finding plugins by name in their stevedore namespaces.

The namespaces are named here, not in the packages of their plugins, so that
``nova_stealth.conf`` can name them without importing those packages (and
numpy with them).
"""

from stevedore import driver
from stevedore import exception as stevedore_exc
from stevedore import extension

from nova_stealth import exception

#: How nova_stealth reaches the kernel (``[stealth] backend``).
BACKENDS = 'nova_stealth.backends'
#: Rate policies of the migration class (``[stealth] rate_policy``).
RATE_POLICIES = 'nova_stealth.rate_policies'
#: Chaff schedules (``[stealth] chaff_schedule``).
CHAFF_SCHEDULES = 'nova_stealth.chaff_schedules'


def installed(namespace):
    """Sorted names of the plugins installed in ``namespace``."""
    return sorted(extension.ExtensionManager(namespace).names())


def plugin_class(namespace, name, kind):
    """The class of plugin ``name``.

    :param kind: what a plugin of the namespace is, for the error message
    :raises nova_stealth.exception.UnknownPlugin: listing installed ones
    """
    try:
        manager = driver.DriverManager(namespace, name, invoke_on_load=False)
    except stevedore_exc.NoMatches:
        raise exception.UnknownPlugin(
            kind=kind, name=name,
            installed=', '.join(installed(namespace)) or 'none')
    return manager.driver


def check_option(group, option, namespace, kinds):
    """Check that option ``option`` of ``group`` names an installed plugin.

    :param kinds: what the namespace's plugins are, in the plural
    :raises nova_stealth.exception.InvalidOption: listing installed ones
    """
    names = installed(namespace)
    if group[option] not in names:
        raise exception.InvalidOption(
            option=option, value=repr(group[option]),
            reason='installed %s: %s' % (kinds, ', '.join(names) or 'none'))
