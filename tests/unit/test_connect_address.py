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
"""A migration's target_connect_addr, written and read."""

import pytest

from nova_stealth.engine import destination
from nova_stealth import exception


@pytest.mark.parametrize('text, expected', [
    ('198.18.1.2:61000', ('198.18.1.2', 61000)),
    ('[2001:db8::2]:61001', ('2001:db8::2', 61001)),
    ('dest.example:61002', ('dest.example', 61002)),
    # Nova's own destinations hand back an address alone.
    ('198.18.1.2', ('198.18.1.2', None)),
    ('2001:db8::2', ('2001:db8::2', None)),
    ('[2001:db8::2]', ('2001:db8::2', None)),
    ('dest.example', ('dest.example', None)),
    (None, (None, None)),
    ('', (None, None)),
])
def test_parse(text, expected):
    assert destination.parse_connect_address(text) == expected


@pytest.mark.parametrize('address', ['198.18.1.2', '2001:db8::2',
                                     '[2001:db8::2]', 'dest.example'])
def test_parse_reads_what_connect_address_writes(address):
    text = destination.connect_address(address, 61003)
    assert destination.parse_connect_address(text) == (
        address.strip('[]'), 61003)


@pytest.mark.parametrize('text, reason', [
    ('198.18.1.2:port', 'not ADDRESS:PORT, [IPV6]:PORT, or an address '
     'alone'),
    ('[2001:db8::2', 'not ADDRESS:PORT, [IPV6]:PORT, or an address alone'),
    ('[2001:db8::2]:', 'not ADDRESS:PORT, [IPV6]:PORT, or an address '
     'alone'),
    (':61000', 'no address'),
    ('198.18.1.2:70000', 'port 70000 is not from 1 to 65535'),
    ('[2001:db8::2]:0', 'port 0 is not from 1 to 65535'),
])
def test_a_bad_address_is_named_with_what_is_wrong(text, reason):
    with pytest.raises(exception.InvalidConnectAddress) as raised:
        destination.parse_connect_address(text)
    assert str(raised.value) == (
        'Invalid migration connect address %r: %s' % (text, reason))
