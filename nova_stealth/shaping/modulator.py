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
"""The rate modulator: the loop that drives the migration class.

Every tick it asks the rate policy for the next rate and changes the class
in place (never delete-then-add, which would open an unshaped window), then
records the rate it set and the bytes the class had sent. Deadlines are
computed from the start time, so sleeping late on one tick does not shift
the next ones; ticks missed entirely are counted and skipped.
"""

import array
import threading
import time

from nova_stealth import policy as rate_policies
from nova_stealth.privileged import rtnl
from nova_stealth.shaping import tree

#: A day of 10 ms ticks; past that the oldest records are dropped.
MAX_RECORDS = 8640000


class Modulator(object):
    """Run ``policy`` every ``tick_s`` seconds in a thread of its own.

    :param policy: a :class:`nova_stealth.policy.base.RatePolicy`
    :param apply_rate: called with the rate in bytes/s; returns the bytes
        the class has sent so far (or None)
    :param tick_s: seconds between two ticks
    :param ramp_s: seconds over which the rate may rise at most from the
        policy's start rate to its maximum, geometrically (0: no ramp); the
        chaff fills in the rest, so the migration's start is no step
    """

    def __init__(self, policy, apply_rate, tick_s, ramp_s=0.0,
                 clock=time.monotonic, sleep=time.sleep):
        self.policy = policy
        self.apply_rate = apply_rate
        self.tick_s = tick_s
        self.ramp_s = ramp_s
        self.clock = clock
        self.sleep = sleep
        self.times = array.array('d')
        self.lateness = array.array('d')
        self.applied = array.array('d')
        self.rates = array.array('d')
        self.sent = array.array('d')
        self.skipped = 0
        self.error = None
        self.last_rate = policy.start_rate
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='nova-stealth-modulator')

    def start(self):
        """Start ticking."""
        self._thread.start()

    def stop(self, timeout=5.0):
        """Stop after the current tick; the class keeps its last rate."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self):
        """True while the loop runs."""
        return self._thread.is_alive()

    def ceiling(self, elapsed):
        """The most the rate may be, ``elapsed`` seconds after the start."""
        if elapsed >= self.ramp_s:
            return self.policy.max_rate
        growth = self.policy.max_rate / self.policy.start_rate
        return self.policy.start_rate * growth ** (elapsed / self.ramp_s)

    def sent_rate(self, ticks=3):
        """Bytes per second the class sent over the last ``ticks`` ticks.

        None until the kernel has reported the byte counter that long.
        """
        count = len(self.sent)
        if count <= ticks or self.sent[count - 1] < 0 or (
                self.sent[count - 1 - ticks] < 0):
            return None
        return ((self.sent[count - 1] - self.sent[count - 1 - ticks]) /
                (self.times[count - 1] - self.times[count - 1 - ticks]))

    def _record(self, started, deadline, now, rate, sent):
        # Called right after the change: ``applied`` is how long after its
        # deadline the new rate was in force.
        if len(self.times) >= MAX_RECORDS:
            for series in (self.times, self.lateness, self.applied,
                           self.rates, self.sent):
                del series[:len(series) // 2]
        self.times.append(deadline - started)
        self.lateness.append(now - deadline)
        self.applied.append(self.clock() - deadline)
        self.rates.append(rate)
        self.sent.append(-1.0 if sent is None else float(sent))

    def _run(self):
        started = self.clock()
        tick = 0
        while not self._stopping.is_set():
            deadline = started + tick * self.tick_s
            now = self.clock()
            if deadline > now:
                self.sleep(deadline - now)
                now = self.clock()
            try:
                rate = min(self.policy.next_rate(),
                           self.ceiling(deadline - started))
                sent = self.apply_rate(tree.mib_to_bytes(rate))
            except Exception as e:
                self.error = '%s: %s' % (type(e).__name__, e)
                return
            self.last_rate = rate
            self._record(started, deadline, now, rate, sent)
            tick += 1
            # Deadlines already past are skipped, not run late in a burst.
            behind = int((self.clock() - started) / self.tick_s) + 1 - tick
            if behind > 0:
                self.skipped += behind
                tick += behind

    def report(self):
        """Return what the loop did, as plain lists (rates in MiB/s).

        ``times`` are the deadlines since start, ``lateness`` how late
        each tick ran, ``rates`` the rates set and ``sent`` the class's
        byte counter after each change (-1 where the kernel gave none).
        """
        return {
            'running': self.running,
            'error': self.error,
            'tick_s': self.tick_s,
            'skipped': self.skipped,
            'last_rate': self.last_rate,
            'times': self.times.tolist(),
            'lateness': self.lateness.tolist(),
            'applied': self.applied.tolist(),
            'rates': self.rates.tolist(),
            'sent': self.sent.tolist(),
        }


class ClassModulator(Modulator):
    """A modulator driving one HTB class over its own netlink socket.

    The socket is opened once, in the caller's network namespace, when the
    modulator is made.
    """

    def __init__(self, ifindex, handle, parent, mtu, policy_name,
                 policy_kwargs, seed, tick_s, ramp_s=0.0):
        policy_cls = rate_policies.policy_class(policy_name)
        policy = policy_cls(seed=seed, **policy_kwargs)
        self.socket = rtnl.RtnlSocket()

        def apply_rate(rate):
            options = rtnl.htb_class_options(**tree.htb_shape(rate, mtu))
            return self.socket.change_htb_class(ifindex, handle, parent,
                                                options)

        super().__init__(policy, apply_rate, tick_s, ramp_s)

    def _run(self):
        try:
            super()._run()
        finally:
            self.socket.close()
