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
"""The truth file: which flows of a capture are what.

Format (JSON)::

    {"flows": [{"proto": "tcp", "src": "198.18.1.1", "sport": 40000,
                "dst": "198.18.2.1", "dport": 61234,
                "label": "migration", "kind": "native"}, ...]}

Each 5-tuple is in the direction the data flows. ``label`` is one of
``migration``, ``chaff``, ``background``; ``kind`` is free text (native,
paper, web, video, bulk...). The testbed writes one for every run.
"""

import ipaddress
import json

from nova_stealth.analysis import flows as flow_lib

LABELS = ('migration', 'chaff', 'background')
#: What a flow of the capture is called when the truth file does not name
#: it: the reverse direction of a named flow, or anything else.
REVERSE = 'reverse'
UNLABELLED = ('background', 'unlabelled')


class TruthError(ValueError):
    """A truth file that does not follow the format."""


def _entry_key(index, entry):
    def field(name, kind):
        value = entry.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TruthError('flows[%d].%s: expected %s, got %r'
                             % (index, name, kind.__name__, value))
        return value

    proto = field('proto', str).lower()
    if proto not in flow_lib.PROTOCOL_NUMBERS:
        raise TruthError('flows[%d].proto: %r is not tcp or udp'
                         % (index, proto))
    addresses = []
    for name in ('src', 'dst'):
        try:
            addresses.append(str(ipaddress.ip_address(field(name, str))))
        except ValueError:
            raise TruthError('flows[%d].%s: %r is not an IP address'
                             % (index, name, entry[name]))
    ports = []
    for name in ('sport', 'dport'):
        port = field(name, int)
        if not 0 <= port <= 65535:
            raise TruthError('flows[%d].%s: %d is not a port'
                             % (index, name, port))
        ports.append(port)
    return flow_lib.FlowKey(proto, addresses[0], ports[0], addresses[1],
                            ports[1])


def parse(data):
    """Return {FlowKey: (label, kind)} from the truth file's content."""
    if not isinstance(data, dict) or not isinstance(data.get('flows'), list):
        raise TruthError('a truth file is an object with a "flows" list')
    labels = {}
    for index, entry in enumerate(data['flows']):
        if not isinstance(entry, dict):
            raise TruthError('flows[%d]: expected an object' % index)
        key = _entry_key(index, entry)
        label = entry.get('label')
        if label not in LABELS:
            raise TruthError('flows[%d].label: %r is not one of %s'
                             % (index, label, ', '.join(LABELS)))
        kind = entry.get('kind', '')
        if not isinstance(kind, str):
            raise TruthError('flows[%d].kind: expected text' % index)
        labels[key] = (label, kind)
    return labels


def load(path):
    """Read a truth file; errors name the file and the bad entry."""
    try:
        with open(path) as truth_file:
            return parse(json.load(truth_file))
    except (OSError, ValueError) as e:
        raise TruthError('%s: %s' % (path, e)) from e


def dump(path, entries):
    """Write a truth file from (FlowKey, label, kind) triples."""
    flows = []
    for key, label, kind in entries:
        if label not in LABELS:
            raise TruthError('label %r is not one of %s'
                             % (label, ', '.join(LABELS)))
        flows.append(dict(key.as_dict(), label=label, kind=kind))
    with open(path, 'w') as truth_file:
        json.dump({'flows': flows}, truth_file, indent=1)


def label_of(key, labels):
    """(label, kind) of a capture flow; see :data:`REVERSE`."""
    if key in labels:
        return labels[key]
    if key.reverse() in labels:
        return REVERSE, labels[key.reverse()][1]
    return UNLABELLED
