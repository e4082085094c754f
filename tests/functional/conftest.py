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

import sys

import pytest

from oslo_config import cfg

from nova_stealth import backends
from nova_stealth import privileged
from nova_stealth.shaping import tc_lib
from tests.functional import netlab

PRIVSEP_GROUP = privileged.CONFIG_SECTION


def privsep_helper_in(ns):
    """The helper command that starts the privsep daemon inside ``ns``."""
    return 'ip netns exec %s %s/bin/privsep-helper' % (ns, sys.prefix)


@pytest.fixture
def link():
    """A source and a destination namespace joined by a veth pair."""
    lab = netlab.Link().create()
    yield lab
    lab.destroy()


@pytest.fixture
def privsep_in_src(link):
    """Run nova_stealth's privsep daemon in the source namespace."""
    cfg.CONF.set_override('helper_command', privsep_helper_in(link.src),
                          group=PRIVSEP_GROUP)
    yield
    privileged.net_admin.stop()
    cfg.CONF.clear_override('helper_command', group=PRIVSEP_GROUP)


@pytest.fixture
def shaper(tmp_path, privsep_in_src):
    """A Shaper for the source namespace, with its own state directory."""
    return tc_lib.Shaper(str(tmp_path / 'state'), backends.load('pyroute2'),
                         chaff_port_blocks=[(0x7000, 0xFF00)])
