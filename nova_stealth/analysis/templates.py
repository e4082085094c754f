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
"""Build a template library from captures of real traffic.

The long flows of the captures (those the attacker's filtering keeps, that
last at least ``min_duration`` seconds and send at least ``min_rate``
bytes per second on average) become envelopes: their bytes per bin of
``bin_ms``, from their first packet to their last, with the capture, its
licence and the flow's 5-tuple. The file format is that of
:mod:`nova_stealth.policy.templates`.
"""

import datetime
import os

import numpy as np

from nova_stealth.analysis import capture
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.policy import templates

#: Envelopes shorter than this say little about a flow's slow time scales.
MIN_DURATION_S = 3.0
#: 512 KiB/s: slower flows are far below any migration's order of rate
#: (and a bulk flow's ACKs stay below it).
MIN_RATE = 512 * 1024


def long_flows(flows, min_duration=MIN_DURATION_S, min_rate=MIN_RATE):
    """The flows that can serve as envelopes, largest first."""
    kept = [flow for flow in flows if flow.duration >= min_duration and
            flow.bytes / flow.duration >= min_rate]
    return sorted(kept, key=lambda flow: -flow.bytes)


def _columns(key):
    proto = {'tcp': capture.IPPROTO_TCP, 'udp': capture.IPPROTO_UDP}.get(
        key.proto, None)
    proto = int(key.proto) if proto is None else proto
    src_hi, src_lo = flow_lib.address_halves(key.src)
    dst_hi, dst_lo = flow_lib.address_halves(key.dst)
    return proto, key.sport, key.dport, src_hi, src_lo, dst_hi, dst_lo


def flow_bins(path, flows, bin_s):
    """Bytes per bin of each flow of ``flows`` (all from ``path``)."""
    wanted = {flow.key: (_columns(flow.key), flow.first_ns,
                         np.zeros(int((flow.last_ns - flow.first_ns) /
                                      (bin_s * 1e9)) + 1, np.int64))
              for flow in flows}
    bin_ns = int(round(bin_s * 1e9))
    for batch in capture.CaptureReader(path):
        for columns, first_ns, bins in wanted.values():
            proto, sport, dport, shi, slo, dhi, dlo = columns
            match = ((batch.proto == proto) & (batch.sport == sport) &
                     (batch.dport == dport) & (batch.src_lo == slo) &
                     (batch.src_hi == shi) & (batch.dst_lo == dlo) &
                     (batch.dst_hi == dhi))
            if match.any():
                index = (batch.time_ns[match] - first_ns) // bin_ns
                np.add.at(bins, index, batch.wire_len[match])
    return {key: bins for key, (_, _, bins) in wanted.items()}


def build(captures, licences, bin_ms=1.0, options=None,
          min_duration=MIN_DURATION_S, min_rate=MIN_RATE, root=None):
    """Read ``captures`` and return a :class:`templates.Library`.

    :param captures: capture paths
    :param licences: the licence of each capture, in the same order
    :param bin_ms: width of an envelope's bins
    :param options: :class:`flows.FlowOptions` (the attacker's filtering)
    :param root: capture names in the library are relative to it (default:
        the file's own name)
    """
    bin_s = bin_ms / 1000.0
    envelopes = []
    for path, licence in zip(captures, licences):
        flows, _ = flow_lib.read_flows([path], options)
        chosen = long_flows(flows, min_duration, min_rate)
        if not chosen:
            continue
        name = (os.path.relpath(path, root) if root
                else os.path.basename(path))
        bins = flow_bins(path, chosen, bin_s)
        for number, flow in enumerate(chosen):
            start = datetime.datetime.fromtimestamp(
                flow.first_ns / 1e9, datetime.timezone.utc)
            envelopes.append(templates.Envelope(
                id='%s#%d' % (name, number), capture=name, licence=licence,
                flow=flow.key.as_dict(),
                start=start.isoformat().replace('+00:00', 'Z'),
                duration_s=flow.duration, bytes=int(flow.bytes),
                mean_rate=flow.bytes / flow.duration,
                bins=bins[flow.key]))
    return templates.Library(bin_s=bin_s, envelopes=envelopes)
