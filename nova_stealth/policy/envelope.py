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
"""Shape a migration to the envelopes of real long flows."""

import math
import os

from nova_stealth import exception
from nova_stealth.policy import base
from nova_stealth.policy import templates
from nova_stealth import units

#: The library shipped with nova_stealth (see data/PROVENANCE.rst).
DEFAULT_LIBRARY = os.path.join(os.path.dirname(__file__), 'data',
                               'envelopes-mlab-ndt.json')
#: Seconds over which the local rate of a join point is measured.
JOIN_WINDOW_S = 0.1
#: Candidate join points drawn for each join.
JOIN_CANDIDATES = 16
#: How sharply joins prefer a local rate like the current one (in log).
JOIN_SPREAD = 0.25
#: Pieces after the first come from envelopes whose mean, as played, is
#: within this factor of the first's.
LEVEL_SPREAD = 1.25
#: The shortest piece of an envelope played between two joins.
MIN_PIECE_S = 0.2
#: Seconds of the floor's rate a migration may fall behind before the
#: floor lifts its rate.
FLOOR_SLACK_S = 1.0

_LIBRARIES = {}


def read_library(path):
    """The library at ``path``, read once per version of the file."""
    path = path or DEFAULT_LIBRARY
    try:
        stat = os.stat(path)
    except OSError as e:
        raise exception.TemplateLibraryError(
            path=path, reason='cannot be read: %s' % e) from e
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _LIBRARIES:
        _LIBRARIES.clear()
        _LIBRARIES[key] = templates.load(path)
    return _LIBRARIES[key]


def body(cumulative, bin_s):
    """(start, end) seconds of an envelope past its start and before its end.

    A flow's first and last moments (slow start, the last ACKs) belong at
    a migration's own start and end, where the chaff hands over, not in
    its middle: the body runs from the first to the last 100 ms in which
    the flow sent at least half its mean rate.
    """
    step = max(int(round(JOIN_WINDOW_S / bin_s)), 1)
    levels = [cumulative[i + step] - cumulative[i]
              for i in range(0, len(cumulative) - step, step)]
    if not levels:
        return 0.0, (len(cumulative) - 1) * bin_s
    half = 0.5 * (cumulative[-1] - cumulative[0]) / len(levels)
    busy = [i for i, level in enumerate(levels) if level >= half]
    return busy[0] * step * bin_s, (busy[-1] + 1) * step * bin_s


class _Segment(object):
    """Where in which envelope the migration is, and at what scale."""

    def __init__(self, envelope, cumulative, bin_s, scale, start, end):
        self.envelope = envelope
        self.cumulative = cumulative
        self.bin_s = bin_s
        self.scale = scale
        self.start = self.position = start
        self.end = end

    def bytes_between(self, start, stop):
        """Envelope bytes from ``start`` to ``stop`` seconds, scaled."""
        return self.scale * (self._at(stop / self.bin_s) -
                             self._at(start / self.bin_s))

    def _at(self, index):
        # The cumulative bytes, linear within a bin: a tick's edges fall
        # anywhere, never on the bins' grid.
        cumulative = self.cumulative
        whole = min(max(int(index), 0), len(cumulative) - 2)
        fraction = min(max(index - whole, 0.0), 1.0)
        return cumulative[whole] + fraction * (cumulative[whole + 1] -
                                               cumulative[whole])


class EnvelopeRatePolicy(base.RatePolicy):
    """Send, tick by tick, what a real long flow of the link sent.

    The library (``template_library``, or the one shipped with
    nova_stealth) holds envelopes: bytes per millisecond of real flows.
    Each migration draws its own. An envelope is never slowed down or sped
    up (that would change its time scales); it is played at its own rate,
    its amplitude scaled only to bring its mean within [``min_mean_rate``,
    ``max_rate``], and by no more than a factor ``max_scale`` either way.
    Envelopes of about the migration's expected bytes are preferred (a
    Gaussian weight in log bytes); given the link's headroom now (bytes/s
    the host's other traffic leaves free, which the engine measures on the
    egress device over the chaff's lead), only envelopes whose mean fits
    in it are drawn, if any do. When a piece of the envelope runs out
    the next is drawn the same way, among the envelopes whose mean (as
    played) is within ``LEVEL_SPREAD`` of the first's (so a migration
    keeps one level, as one flow does), and joined at a point whose rate
    over 100 ms is like the recent rate, chosen among random points; the
    first piece starts at a point like the chaff's hand-over rate
    (``start_rate``).

    Ticks are not on a grid: each lasts ``tick_s`` times a factor drawn
    uniformly from [1 - ``tick_jitter``, 1 + ``tick_jitter``], and the
    rate set for it is the envelope's bytes over exactly that span over
    its length (:meth:`hold_seconds` tells the modulator how long).

    Bounds: every rate is clamped to [``min_rate``, ``max_rate``] (so an
    envelope's silences become ``min_rate``); and once the migration has
    been granted less than ``min_mean_rate`` on average by more than a
    second's worth of it, the rate is lifted to what brings it back, so
    that a migration cannot be stretched without bound. Where the floor
    lifts the rate the envelope is no longer followed.

    Reading the library is the only I/O, once per file, when the policy is
    built; :meth:`next_rate` is pure.
    """

    def __init__(self, min_rate, max_rate, start_rate,
                 template_library=None, min_mean_rate=0.0, tick_s=0.01,
                 tick_jitter=0.5, max_scale=2.0, expected_bytes=None,
                 link_headroom=None, seed=None):
        super().__init__(min_rate, max_rate, start_rate, seed=seed)
        if not 0 <= tick_jitter < 1:
            raise ValueError('tick_jitter must lie in [0, 1)')
        if max_scale < 1:
            raise ValueError('max_scale must be at least 1')
        if min_mean_rate > max_rate:
            raise ValueError('min_mean_rate must not exceed max_rate')
        self.library = read_library(template_library)
        self.min_mean_rate = float(min_mean_rate)
        self.tick_s = float(tick_s)
        self.tick_jitter = float(tick_jitter)
        self.max_scale = float(max_scale)
        self.expected_bytes = expected_bytes
        self.link_headroom = link_headroom
        self.candidates = self.choices = self._choices()
        self.granted = 0.0
        self.elapsed = 0.0
        self.hold = self.tick_s
        self.rate = self.recent = self.start_rate
        self.segments = []
        self.segment = self._draw()

    @classmethod
    def conf_kwargs(cls, group):
        """Return the constructor arguments taken from the [stealth] group."""
        kwargs = super().conf_kwargs(group)
        kwargs.update(template_library=group.template_library or None,
                      min_mean_rate=group.min_mean_rate,
                      tick_s=group.tick_interval_ms / 1000.0)
        return kwargs

    @classmethod
    def migration_kwargs(cls, memory_bytes, link_headroom=None):
        """The migration's bytes and the link's load steer the choice."""
        kwargs = {'expected_bytes': int(memory_bytes)}
        if link_headroom is not None:
            kwargs['link_headroom'] = float(link_headroom)
        return kwargs

    def _scale(self, mean):
        wanted = min(max(mean, self.min_mean_rate), self.max_rate)
        return min(max(wanted / mean, 1.0 / self.max_scale), self.max_scale)

    def _choices(self):
        """(envelope, cumulative bytes, body, scale, weight) that fit."""
        choices, nearest = [], None
        for envelope in self.library.envelopes:
            mean = envelope.mean_rate / units.MIB
            scale = self._scale(mean)
            played = mean * scale
            miss = max(self.min_mean_rate / played, played / self.max_rate)
            if miss > 1.0001:
                if nearest is None or miss < nearest[0]:
                    nearest = (miss, envelope, scale)
                continue
            weight = 1.0
            if self.expected_bytes:
                weight = max(math.exp(-0.5 * math.log(
                    envelope.bytes * scale / self.expected_bytes) ** 2),
                    1e-12)
            choices.append((envelope, scale, weight))
        if not choices:
            # Nothing fits the bounds: the nearest envelope, at the most
            # scale allowed; the floor makes up the rest.
            choices = [(nearest[1], nearest[2], 1.0)]
        if self.link_headroom is not None:
            # The link's load now: flows that fit in what the host's other
            # traffic leaves, if any do (a loaded link's flows are slower).
            fitting = [choice for choice in choices if
                       choice[0].mean_rate * choice[1] <= self.link_headroom]
            choices = fitting or choices
        result = []
        for envelope, scale, weight in choices:
            cumulative = [0.0] + envelope.bins.cumsum().tolist()
            result.append((envelope, cumulative,
                           body(cumulative, self.library.bin_s), scale,
                           weight))
        return result

    def _draw(self):
        """Draw the next envelope, the piece of it to play, where to join.

        The piece is a window of a random length (a third of the body to
        all of it) at a random place, cut at the body's ends: every moment
        of the body is as likely to be played, so the pieces together keep
        the envelope's statistics. Among candidate places, one whose rate
        over its first 100 ms is like the recent rate is preferred.
        """
        weights = [choice[4] for choice in self.choices]
        total = sum(weights)
        picked = self.choices[
            self.rng.choice(len(weights), p=[w / total for w in weights])]
        if not self.segments:
            # The migration's one choice: later pieces come from envelopes
            # played at about its mean, as one flow keeps its level.
            level = picked[0].mean_rate * picked[3]
            self.choices = [choice for choice in self.choices if abs(
                math.log(choice[0].mean_rate * choice[3] / level)) <=
                math.log(LEVEL_SPREAD)]
        envelope, cumulative, (first, last), scale, _ = picked
        length = (last - first) * self.rng.uniform(1.0 / 3.0, 1.0)
        shortest = min(MIN_PIECE_S, last - first)
        offsets = self.rng.uniform(first - length, last - shortest,
                                   JOIN_CANDIDATES)
        pieces = []
        for offset in offsets:
            start = max(offset, first)
            end = max(min(offset + length, last), start + shortest)
            piece = _Segment(envelope, cumulative, self.library.bin_s,
                             scale, start, end)
            local = max(piece.bytes_between(start, start + JOIN_WINDOW_S) /
                        JOIN_WINDOW_S / units.MIB, self.min_rate)
            pieces.append((piece, math.exp(
                -abs(math.log(local / self.recent)) / JOIN_SPREAD)))
        total = sum(closeness for _, closeness in pieces)
        chosen = (self.rng.choice(JOIN_CANDIDATES,
                                  p=[c / total for _, c in pieces])
                  if total > 0 else 0)
        piece = pieces[chosen][0]
        self.segments.append((envelope.id, scale, piece.start, piece.end))
        return piece

    def hold_seconds(self):
        """Seconds the last rate returned holds: this tick's length."""
        return self.hold

    def next_rate(self):
        """Return the envelope's rate over the next (jittered) tick."""
        hold = self.tick_s * (1.0 + self.tick_jitter *
                              (2.0 * self.rng.random() - 1.0))
        segment = self.segment
        stop = segment.position + hold
        if stop <= segment.end:
            sent = segment.bytes_between(segment.position, stop)
            segment.position = stop
        else:
            sent = segment.bytes_between(segment.position, segment.end)
            rest = stop - segment.end
            self.segment = segment = self._draw()
            sent += segment.bytes_between(segment.position,
                                          segment.position + rest)
            segment.position += rest
        rate = self.clamp(sent / hold / units.MIB)
        if self.min_mean_rate:
            behind = (self.min_mean_rate * (self.elapsed + hold -
                                            FLOOR_SLACK_S) - self.granted)
            if behind > rate * hold:
                rate = self.clamp(behind / hold)
        self.granted += rate * hold
        self.elapsed += hold
        self.hold = hold
        self.rate = rate
        self.recent += (rate - self.recent) * (
            1.0 - math.exp(-hold / JOIN_WINDOW_S))
        return rate
