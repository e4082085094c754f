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
"""Exceptions raised by nova_stealth."""


class StealthError(Exception):
    """Base class: formats ``msg_fmt`` with the keyword arguments."""

    msg_fmt = 'An unknown nova_stealth error occurred'

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        super().__init__(self.msg_fmt % kwargs)


class InvalidOption(StealthError, ValueError):
    """An option, or a combination of options, that cannot work."""

    msg_fmt = ('Invalid value %(value)s for option [stealth] %(option)s: '
               '%(reason)s')


class IncompatibleNovaOption(StealthError, ValueError):
    """A Nova option whose value defeats nova_stealth."""

    msg_fmt = ('Invalid value %(value)s for option [%(group)s] %(option)s: '
               '%(reason)s')


class UnknownPlugin(StealthError, LookupError):
    """A plugin name that no installed distribution provides."""

    msg_fmt = ('Unknown %(kind)s %(name)r; installed %(kind)ss: '
               '%(installed)s')


class InvalidConnectAddress(StealthError, ValueError):
    """A migration's target_connect_addr that cannot be read."""

    msg_fmt = ('Invalid migration connect address %(text)r: %(reason)s')


class ExistingRootQdisc(StealthError):
    """The egress device has a root qdisc an operator put there."""

    msg_fmt = ('Device %(ifname)s has a qdisc %(kind)s %(handle)s that an '
               'operator configured, which shaping the migration would '
               'replace; set '
               '[stealth] allow_replace_root_qdisc = true to let nova_stealth '
               'replace it and restore it when the migration ends')


class ShapingError(StealthError):
    """Shaping could not be installed, changed or removed."""

    msg_fmt = 'Shaping on %(ifname)s failed: %(reason)s'


class CaptureError(StealthError):
    """A capture file that cannot be read past some point."""

    msg_fmt = '%(path)s: byte offset %(offset)d: %(reason)s'


class PortsExhausted(StealthError):
    """Every port of the configured ranges is leased or bound."""

    msg_fmt = ('No free migration port in [stealth] migration_port_ranges '
               '%(ranges)s: %(leased)d leased, %(bound)d bound by other '
               'services; widen the ranges or wait for migrations to end')


class TemplateLibraryError(StealthError, ValueError):
    """A template library file that cannot be used."""

    msg_fmt = 'Template library %(path)s: %(reason)s'
