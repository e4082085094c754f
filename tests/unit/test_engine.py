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
"""The engine's destination session and the addresses it hands Nova."""

import os

import pytest

from nova_stealth.engine import destination
from nova_stealth.engine import source
from nova_stealth import exception
from nova_stealth.ports import leases as leases_lib


def test_connect_address_brackets_ipv6_only():
    assert destination.connect_address('198.18.1.2', 61000) == (
        '198.18.1.2:61000')
    assert destination.connect_address('2001:db8::2', 61000) == (
        '[2001:db8::2]:61000')
    assert destination.connect_address('[2001:db8::2]', 61000) == (
        '[2001:db8::2]:61000')
    assert destination.connect_address('compute-2', 61000) == (
        'compute-2:61000')


def test_destination_session_leases_and_releases(tmp_path):
    leases = leases_lib.PortLeases(str(tmp_path), [range(62000, 62002)])
    first = destination.DestinationSession(None, 'm-1', leases=leases)
    second = destination.DestinationSession(None, 'm-2', leases=leases)
    ports = {first.prepare(), second.prepare()}
    assert ports == {62000, 62001}
    with pytest.raises(exception.PortsExhausted):
        destination.DestinationSession(None, 'm-3', leases=leases).prepare()
    first.release()
    first.release()
    assert set(leases.leases()) == {'m-2'}
    assert os.path.exists(leases.path)


def test_expected_rates_follow_the_policy():
    kwargs = {'min_rate': 2.0, 'max_rate': 2.0, 'start_rate': 2.0}
    rates = source.expected_rates('constant', kwargs)
    assert len(rates) == source.LOOKAHEAD_TICKS // 10
    assert rates == pytest.approx(2.0 * source.MIB)
