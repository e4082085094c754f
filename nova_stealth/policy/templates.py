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
"""Template libraries: envelopes of real long flows, read from a file.

An envelope is the bytes a real flow sent in each bin of ``bin_ms``
milliseconds, from its first packet to its last, with where it came from.
``nova-stealth-audit --build-templates`` writes libraries
(:mod:`nova_stealth.analysis.templates`); this module only reads and
checks them, with the standard library and numpy, so that nova-compute
can load one without the analysis extras.

The file is JSON (optionally gzip-compressed, by a ``.gz`` name)::

    {"format": "nova-stealth-envelopes", "version": 1, "bin_ms": 1.0,
     "envelopes": [
        {"id": "mlab-ndt/ndt-....pcap#0",
         "capture": "mlab-ndt/ndt-....pcap",
         "licence": "CC0-1.0",
         "flow": {"proto": "tcp", "src": "...", "sport": 443,
                  "dst": "...", "dport": 51234},
         "start": "2021-07-10T06:39:59.123456Z",
         "duration_s": 10.6, "bytes": 23390000, "mean_rate": 2206000.0,
         "bins": [1514, 0, 2962, ...]}]}

``bins`` are non-negative integers summing to ``bytes``; ``mean_rate`` is
``bytes`` over ``duration_s``, in bytes per second. Any other ``version``
is refused: a reader must not guess at a format it does not know.
"""

import dataclasses
import gzip
import json

import numpy as np

from nova_stealth import exception

FORMAT = 'nova-stealth-envelopes'
VERSION = 1
PROVENANCE_FIELDS = ('id', 'capture', 'licence', 'flow', 'start',
                     'duration_s', 'bytes', 'mean_rate')
FLOW_FIELDS = ('proto', 'src', 'sport', 'dst', 'dport')


@dataclasses.dataclass
class Envelope(object):
    """One real flow's bytes per bin, and its provenance."""

    id: str
    capture: str
    licence: str
    flow: dict
    start: str
    duration_s: float
    bytes: int
    mean_rate: float
    bins: np.ndarray

    def provenance(self):
        """Everything but the bins, as the file spells it."""
        return {name: getattr(self, name) for name in PROVENANCE_FIELDS}


@dataclasses.dataclass
class Library(object):
    """A template library: envelopes at one bin width."""

    bin_s: float
    envelopes: list
    path: str = None

    def to_dict(self):
        """The library as the file holds it."""
        return {'format': FORMAT, 'version': VERSION,
                'bin_ms': self.bin_s * 1000.0,
                'envelopes': [dict(envelope.provenance(),
                                   bins=np.asarray(envelope.bins).astype(
                                       np.int64).tolist())
                              for envelope in self.envelopes]}


def _open(path, mode):
    if str(path).endswith('.gz'):
        return gzip.open(path, mode + 't', encoding='utf-8')
    return open(path, mode, encoding='utf-8')


def write(library, path):
    """Write ``library`` to ``path`` (gzip-compressed if it ends in .gz)."""
    with _open(path, 'w') as out:
        json.dump(library.to_dict(), out, separators=(',', ':'))
        out.write('\n')


def load(path):
    """Read and check the library at ``path``.

    :raises nova_stealth.exception.TemplateLibraryError: naming the file
        and what is wrong with it
    """
    try:
        with _open(path, 'r') as source:
            data = json.load(source)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:
        raise exception.TemplateLibraryError(
            path=path, reason='cannot be read as JSON: %s' % e) from e
    return from_dict(data, path)


def from_dict(data, path='<memory>'):
    """Check a library's parsed JSON and return the :class:`Library`.

    :raises nova_stealth.exception.TemplateLibraryError: naming ``path``
    """
    def fail(reason):
        raise exception.TemplateLibraryError(path=path, reason=reason)

    if not isinstance(data, dict) or data.get('format') != FORMAT:
        fail('not a template library (no "format": "%s")' % FORMAT)
    if data.get('version') != VERSION:
        fail('unknown version %r (this nova_stealth reads version %d)'
             % (data.get('version'), VERSION))
    bin_ms = data.get('bin_ms')
    if not isinstance(bin_ms, (int, float)) or not 0 < bin_ms <= 1000:
        fail('bin_ms must be a number in (0, 1000], got %r' % (bin_ms,))
    entries = data.get('envelopes')
    if not isinstance(entries, list) or not entries:
        fail('"envelopes" must be a non-empty list')
    envelopes = []
    seen = set()
    for index, entry in enumerate(entries):
        envelopes.append(_envelope(entry, index, fail))
        if envelopes[-1].id in seen:
            fail('envelope %d: duplicate id %r' % (index, envelopes[-1].id))
        seen.add(envelopes[-1].id)
    return Library(bin_s=bin_ms / 1000.0, envelopes=envelopes, path=path)


def _envelope(entry, index, fail):
    where = 'envelope %d' % index
    if not isinstance(entry, dict):
        fail('%s is not an object' % where)
    missing = [name for name in PROVENANCE_FIELDS + ('bins',)
               if name not in entry]
    if missing:
        fail('%s lacks %s' % (where, ', '.join(missing)))
    flow = entry['flow']
    if not isinstance(flow, dict) or any(f not in flow for f in FLOW_FIELDS):
        fail('%s: "flow" must name %s' % (where, ', '.join(FLOW_FIELDS)))
    bins = entry['bins']
    if (not isinstance(bins, list) or not bins or
            not all(isinstance(b, int) and b >= 0 for b in bins)):
        fail('%s: "bins" must be a non-empty list of non-negative integers'
             % where)
    total = sum(bins)
    if total != entry['bytes'] or total <= 0:
        fail('%s: its bins sum to %d bytes, not the %r it declares'
             % (where, total, entry['bytes']))
    duration = entry['duration_s']
    if not isinstance(duration, (int, float)) or duration <= 0:
        fail('%s: duration_s must be positive' % where)
    if abs(entry['mean_rate'] * duration - total) > 0.01 * total:
        fail('%s: mean_rate %r is not bytes / duration_s' % (
            where, entry['mean_rate']))
    return Envelope(
        id=str(entry['id']), capture=str(entry['capture']),
        licence=str(entry['licence']), flow=dict(flow),
        start=str(entry['start']), duration_s=float(duration),
        bytes=int(total), mean_rate=float(entry['mean_rate']),
        bins=np.asarray(bins, dtype=np.float64))
