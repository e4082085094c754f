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
"""Multi-scale features of a flow, kept while the capture streams by.

What a stronger attacker than the paper's looks at: how the flow's bytes
vary from 1 ms to 10 s (relative Allan deviation and the CV of bytes per
bin, i.e. a variance-time plot), its ON/OFF periods, its inter-packet-time
quantiles, spectral peaks at QEMU's 10 Hz and the modulator's 100 Hz tick
grid, how often the rate sits at its lowest and highest levels (a clamped
rate shows there), and its size and duration.

Memory is bounded per flow: bytes per 1 ms, 10 ms and 100 ms bin, each
kept only for the first :data:`SERIES` bins of the flow (8 s, 82 s and
819 s: at most 96 KiB), grown as the flow lasts; inter-packet times in a
fixed log-spaced histogram from 1 microsecond to 100 s. Every packet counts
with its original (wire) length.
"""

import math

import numpy as np

#: (bin in ns, bins kept): the series every feature is computed from.
SERIES = ((1000000, 1 << 13), (10000000, 1 << 13), (100000000, 1 << 13))
#: Time scales of the Allan deviation and the variance-time plot, in ms.
SCALES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
#: Edges of the inter-packet-time histogram: 20 bins per decade from
#: 1 microsecond to 100 s, plus one bin below and one above.
IPT_EDGES_US = np.logspace(0, 8, 161)
IPT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: Spectral lines: QEMU's 100 ms limiter (10 Hz and its harmonic) and the
#: modulator's 10 ms tick (100 Hz).
PEAKS_HZ = (10.0, 20.0, 100.0)
#: Fewer complete blocks than this make no Allan deviation or CV.
MIN_BLOCKS = 4

FEATURE_NAMES = (
    ['cv_w%d' % w for w in (100, 200, 300, 500, 1000, 2000, 3000)] +
    ['allan_%dms' % s for s in SCALES_MS] +
    ['vt_cv_%dms' % s for s in SCALES_MS] +
    ['%s_%dms' % (name, b) for b in (1, 10)
     for name in ('on_mean', 'off_mean', 'on_cv', 'off_cv', 'on_share')] +
    ['ipt_q%02d_log_us' % round(100 * q) for q in IPT_QUANTILES] +
    ['peak_%dhz' % f for f in PEAKS_HZ] +
    ['%s_%dms' % (name, b) for b in (10, 100)
     for name in ('low_share', 'high_share')] +
    ['log_bytes', 'duration_s', 'log_packets', 'log_rate', 'mean_size'])


class ScaleState(object):
    """Binned bytes and the IPT histogram of one flow or flow segment."""

    def __init__(self, first_ns):
        self.first_ns = first_ns
        self.last_ns = None
        self.previous_ns = None
        self.packets = 0
        self.bytes = 0
        self.series = [np.zeros(0, np.float32) for _ in SERIES]
        self.ipt_hist = np.zeros(len(IPT_EDGES_US) + 1, np.int64)

    def update(self, times, sizes):
        """Fold in packets (times in ns, wire lengths), in time order."""
        if self.last_ns is None:
            gaps = np.diff(times)
        else:
            gaps = np.diff(times, prepend=np.int64(self.previous_ns))
        if len(gaps):
            bins = np.searchsorted(IPT_EDGES_US,
                                   np.maximum(gaps, 0) / 1000.0, 'right')
            self.ipt_hist += np.bincount(bins, minlength=len(self.ipt_hist))
        # Captures are not always in time order: a packet stamped before
        # the first one counts in the first bin.
        offsets = np.maximum(times - self.first_ns, 0)
        for number, (bin_ns, cap) in enumerate(SERIES):
            index = offsets // bin_ns
            inside = index < cap
            if not inside.any():
                continue
            index = index[inside]
            series = self.series[number]
            needed = int(index.max()) + 1
            if needed > len(series):
                grown = np.zeros(min(cap, max(needed, 2 * len(series), 16)),
                                 np.float32)
                grown[:len(series)] = series
                series = self.series[number] = grown
            first = int(index.min())
            series[first:needed] += np.bincount(
                index - first, weights=sizes[inside]).astype(np.float32)
        self.packets += len(times)
        self.bytes += int(np.sum(sizes))
        self.previous_ns = int(times[-1])
        self.last_ns = max(int(times.max()), self.last_ns or 0)

    def nbytes(self):
        """Bytes held by the series (bounded by :data:`SERIES`)."""
        return sum(series.nbytes for series in self.series)

    def complete(self, number):
        """The complete bins of a series: the last, partial one left out."""
        bin_ns, cap = SERIES[number]
        if self.last_ns is None:
            return self.series[number][:0]
        count = min(cap, (self.last_ns - self.first_ns) // bin_ns)
        series = self.series[number]
        if count > len(series):
            series = np.concatenate((series, np.zeros(count - len(series),
                                                      np.float32)))
        return series[:count].astype(float)

    def vector(self, window_cvs):
        """The feature vector, in :data:`FEATURE_NAMES` order (NaN: n/a)."""
        fine, middle, coarse = (self.complete(n) for n in range(3))
        values = list(window_cvs)
        blocks = [_blocks(fine, middle, coarse, scale) for scale in
                  SCALES_MS]
        values += [_allan(b) for b in blocks]
        values += [_cv(b) for b in blocks]
        values += _on_off(fine, 0.001) + _on_off(middle, 0.01)
        values += ipt_quantiles(self.ipt_hist)
        values += [_peak(fine, f) for f in PEAKS_HZ]
        values += _occupancy(middle) + _occupancy(coarse)
        duration = ((self.last_ns or self.first_ns) - self.first_ns) / 1e9
        values += [math.log10(max(self.bytes, 1)), duration,
                   math.log10(max(self.packets, 1)),
                   math.log10(max(self.bytes / max(duration, 1e-6), 1.0)),
                   self.bytes / max(self.packets, 1)]
        return np.array(values, dtype=float)


def _blocks(fine, middle, coarse, scale_ms):
    """Bytes per block of ``scale_ms``, from the coarsest series that has it.

    A coarser series covers more of a long flow (the 1 ms one holds only
    its first 8 s), so each scale uses the largest bin that divides it.
    """
    for series, bin_ms in ((coarse, 100), (middle, 10), (fine, 1)):
        if scale_ms % bin_ms == 0:
            step = scale_ms // bin_ms
            usable = len(series) // step * step
            return series[:usable].reshape(-1, step).sum(axis=1)
    return np.zeros(0)


def _allan(blocks):
    """Relative Allan deviation: sqrt(mean(diff^2) / 2) / mean."""
    if len(blocks) < MIN_BLOCKS or blocks.mean() <= 0:
        return float('nan')
    return float(math.sqrt(np.mean(np.diff(blocks) ** 2) / 2.0) /
                 blocks.mean())


def _cv(blocks):
    if len(blocks) < MIN_BLOCKS or blocks.mean() <= 0:
        return float('nan')
    return float(blocks.std() / blocks.mean())


def _runs(active):
    """Lengths of the runs of True and of False in a boolean series."""
    if not len(active):
        return np.zeros(0), np.zeros(0)
    edges = np.flatnonzero(np.diff(active.astype(np.int8))) + 1
    bounds = np.concatenate(([0], edges, [len(active)]))
    lengths = np.diff(bounds)
    starts_on = active[bounds[:-1]]
    return lengths[starts_on], lengths[~starts_on]


def _on_off(series, bin_s):
    """Mean and CV of ON and OFF period lengths (s), and the ON share."""
    if len(series) < MIN_BLOCKS:
        return [float('nan')] * 5
    on, off = _runs(series > 0)
    result = []
    for lengths in (on, off):
        result.append(float(lengths.mean() * bin_s) if len(lengths)
                      else 0.0)
    for lengths in (on, off):
        result.append(float(lengths.std() / lengths.mean())
                      if len(lengths) >= 2 else float('nan'))
    return result + [float(np.mean(series > 0))]


def ipt_quantiles(hist):
    """IPT quantiles (log10 of microseconds) from the histogram's counts.

    Interpolated in log space within a bin; the bin below 1 microsecond
    counts as 0.1 microsecond, the one above 100 s as 100 s.
    """
    total = hist.sum()
    if total == 0:
        return [float('nan')] * len(IPT_QUANTILES)
    logs = np.concatenate(([-1.0], np.log10(IPT_EDGES_US), [8.0]))
    cumulative = np.cumsum(hist) / total
    result = []
    for q in IPT_QUANTILES:
        index = int(np.searchsorted(cumulative, q))
        below = cumulative[index - 1] if index else 0.0
        share = (q - below) / max(cumulative[index] - below, 1e-12)
        low = logs[index]
        high = logs[min(index + 1, len(logs) - 1)]
        result.append(float(low + share * (high - low)))
    return result


def _peak(series, frequency):
    """log10 of the power near ``frequency`` over that of its neighbours.

    Power within 0.5 Hz of the line against the mean power from 2 to 5 Hz
    either side, on the 1 ms series; NaN under 4 s of it.
    """
    if len(series) < 4000:
        return float('nan')
    power = np.abs(np.fft.rfft(series - series.mean())) ** 2
    hz = np.fft.rfftfreq(len(series), 0.001)
    distance = np.abs(hz - frequency)
    line = power[distance <= 0.5].mean()
    around = power[(distance >= 2.0) & (distance <= 5.0)].mean()
    if not around > 0:
        return float('nan')
    return float(math.log10(max(line, 1e-12) / around))


def _occupancy(series, margin=0.05):
    """Share of bins within ``margin`` of the lowest and highest rate."""
    if len(series) < MIN_BLOCKS or series.max() <= 0:
        return [float('nan')] * 2
    low, high = series.min(), series.max()
    return [float(np.mean(series <= low + margin * high)),
            float(np.mean(series >= (1 - margin) * high))]
