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
"""Configuration of nova_stealth: the [stealth] group of nova.conf.

Each area keeps its options in a module of its own with ``register_opts``,
``list_opts`` and ``validate``; this package registers them all on the
global configuration object and checks them together.
"""

import math

from oslo_config import cfg

from nova_stealth.conf import base
from nova_stealth.conf import chaff
from nova_stealth.conf import policy
from nova_stealth.conf import ports
from nova_stealth.conf import shaping
from nova_stealth.conf import switchover
from nova_stealth import exception

CONF = cfg.CONF

AREAS = (base, policy, shaping, ports, chaff, switchover)


def register_opts(conf):
    """Register every [stealth] option on ``conf``."""
    for area in AREAS:
        area.register_opts(conf)


def validate(conf):
    """Load every [stealth] option and check the rules between them.

    Call this at service start-up: a value that is out of bounds or that
    breaks a rule stops the service with an error naming the option.

    :param conf: an oslo.config ConfigOpts with the options registered
    :raises nova_stealth.exception.InvalidOption: naming the bad option
    """
    group = conf[base.GROUP]
    for area in AREAS:
        for opt in area.list_opts()[base.stealth_group]:
            try:
                value = group[opt.dest]
            except ValueError as e:
                raise exception.InvalidOption(
                    option=opt.name, value='in the configuration',
                    reason=e) from e
            _check_finite(opt.name, value)
    for area in AREAS:
        area.validate(group)


def _check_finite(name, value):
    """Refuse NaN and infinity, which pass every min and max bound."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, float) and not math.isfinite(item):
            raise exception.InvalidOption(
                option=name, value=value, reason='must be a finite number')


def load_group(config_files=(), conf=None, **overrides):
    """A validated [stealth] group of a configuration of its own.

    For processes that are not nova-compute (the testbed's hosts, tests,
    the chaff responder): the options from ``config_files``, then
    ``overrides`` by option name.

    :param conf: a ConfigOpts the caller registered other options on
        (oslo.log's), parsed here; a new one if None
    :raises nova_stealth.exception.InvalidOption: naming the bad option
    """
    conf = conf if conf is not None else cfg.ConfigOpts()
    register_opts(conf)
    conf([arg for path in config_files for arg in ('--config-file', path)],
         default_config_files=[])
    for name, value in overrides.items():
        try:
            conf.set_override(name, value, group=base.GROUP)
        except cfg.NoSuchOptError as e:
            raise exception.InvalidOption(
                option=name, value=repr(value),
                reason='no such option in [%s]' % base.GROUP) from e
        except ValueError as e:
            raise exception.InvalidOption(
                option=name, value=repr(value), reason=e) from e
    validate(conf)
    return conf[base.GROUP]


register_opts(CONF)
