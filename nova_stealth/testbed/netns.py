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
"""Network namespaces, commands in them, and captures.

Shared by the testbed and the functional tests.
"""

import contextlib
import ctypes
import subprocess

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def run(*args, check=True):
    """Run a command; return its standard output."""
    result = subprocess.run(args, capture_output=True, text=True)
    if check and result.returncode:
        raise RuntimeError('%s failed: %s' % (' '.join(args),
                                              result.stderr.strip()))
    return result.stdout


@contextlib.contextmanager
def in_netns(name):
    """Run the body with this thread in network namespace ``name``.

    A socket made in the body stays in that namespace afterwards.
    """
    with open('/proc/thread-self/ns/net') as own, \
            open('/run/netns/' + name) as target:
        if _libc.setns(target.fileno(), CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), 'setns to %s failed' % name)
        try:
            yield
        finally:
            if _libc.setns(own.fileno(), CLONE_NEWNET):
                raise OSError(ctypes.get_errno(), 'setns back failed')


def offloads_off(ns, dev):
    """Make the kernel hand tcpdump wire-sized packets on ``dev``."""
    run('ip', 'netns', 'exec', ns, 'ethtool', '-K', dev, 'tso', 'off', 'gso',
        'off', 'gro', 'off')


class Tcpdump(object):
    """A tcpdump process in a namespace, writing a capture file.

    :param spawned: called with the process as soon as it exists, before
        tcpdump is listening (to record it for a crash's cleanup)
    """

    def __init__(self, ns, path, *args, spawned=None):
        self.path = path
        # -Z root: stay root, to write into private directories.
        self.process = subprocess.Popen(
            ['ip', 'netns', 'exec', ns, 'tcpdump', '-n', '-U', '-Z', 'root',
             '-w', path] + list(args), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        if spawned:
            spawned(self.process)
        said = []
        while not said or 'listening on' not in said[-1]:
            said.append(self.process.stderr.readline())
            if not said[-1]:
                self.process.kill()
                self.process.wait()
                raise RuntimeError('tcpdump did not start: %s'
                                   % ''.join(said))

    def stop(self):
        """Stop capturing and flush the file; idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stderr.close()
        return self.path
