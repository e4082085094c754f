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
"""Two processes at one critical section: does the second wait?

One process is stopped inside the section (at a :class:`Pause` the test
puts there, such as a backend call or a random draw the code makes while
it holds its lock); another then tries to enter. With the lock, the second
cannot finish until the first is released, however long the test looks;
without it, the second finishes at once. Only that direction depends on
time (:data:`UNLOCKED_SECONDS`), so a loaded machine can make the test
miss a missing lock, never fail a lock that works.
"""

import multiprocessing
import traceback

#: Forked: the children run the test's own closures and objects.
CONTEXT = multiprocessing.get_context('fork')
#: How long a second process is given to get through a section that has
#: no lock; what it does there takes milliseconds.
UNLOCKED_SECONDS = 1.0
#: How long anything that must happen may take.
TIMEOUT = 20.0


class Pause(object):
    """Called in a child, stops it until the test releases it."""

    def __init__(self):
        self._reached = CONTEXT.Event()
        self._released = CONTEXT.Event()

    def __call__(self, *args, **kwargs):
        self._reached.set()
        if not self._released.wait(TIMEOUT):
            raise RuntimeError('the test never released its pause')

    def wait_reached(self):
        """True once a child is stopped here."""
        return self._reached.wait(TIMEOUT)

    def release(self):
        """Let the stopped child go on."""
        self._released.set()


class Child(object):
    """``function(*args)`` in a forked process; its result comes back.

    ``started`` is set just before the call, so that the test knows when
    the child is at the section's door.
    """

    def __init__(self, function, *args):
        self.started = CONTEXT.Event()
        self._receive, send = CONTEXT.Pipe(duplex=False)
        self.process = CONTEXT.Process(target=self._run,
                                       args=(send, function, args))
        self.process.start()
        send.close()

    def _run(self, send, function, args):
        self.started.set()
        try:
            send.send((True, function(*args)))
        except BaseException:
            send.send((False, traceback.format_exc()))

    def finishes_within(self, seconds):
        """True if the child's call returns (or fails) within ``seconds``."""
        return self._receive.poll(seconds)

    def result(self):
        """The call's return value; its error, re-raised, if it failed."""
        if not self._receive.poll(TIMEOUT):
            raise AssertionError('the child did not finish in %d s' %
                                 TIMEOUT)
        try:
            succeeded, value = self._receive.recv()
        except EOFError:
            raise AssertionError('the child died with exit code %s' %
                                 self.process.exitcode)
        self.process.join(TIMEOUT)
        if not succeeded:
            raise AssertionError('the child failed:\n' + value)
        return value

    def end(self):
        """Kill the child if it still runs (a failed test's cleanup)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(TIMEOUT)


def contend(holder, contender):
    """Run ``holder`` until it pauses, then ``contender``; check it waits.

    :param holder: called with a :class:`Pause` to call inside the section
    :param contender: called with no argument; enters the same section
    :returns: (holder's result, contender's result) once both are done
    :raises AssertionError: when the contender got through while the
        holder was inside
    """
    pause = Pause()
    children = [Child(holder, pause)]
    try:
        assert pause.wait_reached(), 'the holder never reached its pause'
        children.append(Child(contender))
        assert children[1].started.wait(TIMEOUT)
        assert not children[1].finishes_within(UNLOCKED_SECONDS), (
            'a second process got through while the first was inside')
        pause.release()
        return children[0].result(), children[1].result()
    finally:
        pause.release()
        for child in children:
            child.end()
