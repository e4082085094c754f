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
"""A real QEMU VM and its migration, driven over QMP.

Two guests. ``ram``: no operating system, its memory filled with random
bytes from a file mapped privately (so every page is sent in full), KVM
when /dev/kvm is there. ``linux``: Debian's kernel and an initramfs of
busybox that dirties memory at a set rate (see :mod:`.guest`), under TCG.
QEMU's own figures (total time, downtime, bytes, dirty syncs) are read
from ``query-migrate`` when the migration ends.

The QEMU binary is ``$NOVA_STEALTH_QEMU``, else the one on PATH, unless
a run names another: a QEMU unpacked under a prefix
(``PREFIX/usr/bin/qemu-system-x86_64``) is given that prefix's firmware
directory. A stealthed migration can follow the
switch-over as libvirt does: ``pause-before-switchover`` on, the engine
told QEMU's progress, and QEMU continued only once the engine guarantees
the stop-and-copy's rate, which QEMU >= 8.2 is told as
``avail-switchover-bandwidth``.
"""

import collections
import json
import os
import select
import socket
import subprocess
import time

import numpy as np

from nova_stealth.testbed import x509

QEMU = os.environ.get('NOVA_STEALTH_QEMU') or 'qemu-system-x86_64'
#: The first QEMU with ``avail-switchover-bandwidth``.
SWITCHOVER_BANDWIDTH_SINCE = (8, 2)
#: Where tools/setup-host.sh unpacks the backports' QEMU when the
#: release's own is older than that.
BACKPORTS_QEMU = '/opt/qemu-backports/usr/bin/qemu-system-x86_64'
#: How often a migration's progress is read, in seconds.
POLL_S = 0.05
#: Seconds QEMU has to answer a QMP command: a hung QEMU would otherwise
#: hang the testbed with it.
REPLY_TIMEOUT_S = 30.0
#: The port range libvirt hands out for migrations by default.
LIBVIRT_PORTS = range(49152, 49216)


class QmpError(RuntimeError):
    """QEMU answered a QMP command with an error."""


class QmpTimeout(TimeoutError):
    """QEMU did not answer on its QMP socket in time (a hung QEMU)."""


class Qmp(object):
    """A QMP client over a UNIX socket.

    :param path: the QMP socket
    :param timeout: seconds to wait for QEMU to make the socket
    :param reply_timeout: seconds to wait for the greeting and for each
        command's reply, before :class:`QmpTimeout`
    """

    def __init__(self, path, timeout=30.0, reply_timeout=REPLY_TIMEOUT_S):
        self.path = path
        self.reply_timeout = reply_timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        # Also bounds sendall(), should QEMU stop reading.
        self.sock.settimeout(reply_timeout)
        self._buffer = b''
        self.events = collections.deque(maxlen=1000)
        try:
            json.loads(self._reply_line(
                'no greeting', time.monotonic() + reply_timeout))
            self.execute('qmp_capabilities')
        except BaseException:
            self.sock.close()
            raise

    def _readline(self, timeout=None):
        """One line from QEMU; None if none came within ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b'\n' not in self._buffer:
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([self.sock], [], [], left)
                if not ready:
                    return None
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError('QEMU closed its QMP socket %s' % self.path)
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b'\n', 1)
        return line

    def _reply_line(self, missing, deadline):
        line = self._readline(max(0.0, deadline - time.monotonic()))
        if line is None:
            raise QmpTimeout('QEMU sent %s on its QMP socket %s within %g s'
                             % (missing, self.path, self.reply_timeout))
        return line

    def execute(self, command, **arguments):
        """Run a command; return its ``return`` value.

        Events that arrive meanwhile are kept for :meth:`event`.

        :raises QmpTimeout: naming the socket and the command, when no
            reply comes within ``reply_timeout`` (events do not count)
        """
        request = {'execute': command}
        if arguments:
            request['arguments'] = arguments
        try:
            self.sock.sendall(json.dumps(request).encode() + b'\n')
        except socket.timeout as e:
            raise QmpTimeout('QEMU did not read command %r on its QMP socket '
                             '%s within %g s' % (command, self.path,
                                                 self.reply_timeout)) from e
        deadline = time.monotonic() + self.reply_timeout
        while True:
            reply = json.loads(self._reply_line(
                'no reply to command %r' % command, deadline))
            if 'event' in reply:
                self.events.append(reply)
                continue
            if 'error' in reply:
                raise QmpError('%s: %s' % (command, reply['error']['desc']))
            return reply['return']

    def event(self, timeout):
        """The next event, waiting up to ``timeout`` s; None if none came."""
        if self.events:
            return self.events.popleft()
        line = self._readline(timeout)
        if line is None:
            return None
        reply = json.loads(line)
        if 'event' in reply:
            return reply
        raise QmpError('unexpected QMP reply %r' % (reply,))

    def close(self):
        self.sock.close()


class Vm(object):
    """One QEMU process in a host's namespace.

    :param ns: the namespace it runs in
    :param workdir: where its QMP socket and log go
    :param name: ``source`` or ``destination``
    :param memory_mib: guest memory
    :param guest: ``ram`` or ``linux``
    :param image: for ``ram``, the file of random bytes that backs memory;
        for ``linux``, (kernel, initramfs)
    :param incoming: wait for an incoming migration
    :param spawned: called with the process as soon as it exists, before
        its QMP socket is up (to record it for a crash's cleanup)
    :param binary: the QEMU to run (default: qemu-system-x86_64 on PATH)
    :param tls_dir: x509 credentials in QEMU's layout
        (:mod:`nova_stealth.testbed.x509`): the migration runs over TLS,
        each end verifying the other, as libvirt's native TLS does
    """

    def __init__(self, ns, workdir, name, memory_mib, guest, image,
                 incoming=False, kvm=None, spawned=None, binary=QEMU,
                 tls_dir=None):
        self.name = name
        self.tls = tls_dir is not None
        self.qmp_path = os.path.join(workdir, 'qmp-%s.sock' % name)
        self.log_path = os.path.join(workdir, 'qemu-%s.log' % name)
        self.console_path = os.path.join(workdir, 'console-%s.log' % name)
        kvm = os.path.exists('/dev/kvm') if kvm is None else kvm
        args = [binary, '-name', 'nova-stealth-%s' % name, '-nodefaults',
                '-display', 'none', '-m', '%dM' % memory_mib,
                '-qmp', 'unix:%s,server=on,wait=off' % self.qmp_path]
        args += firmware_args(binary)
        if guest == 'ram' and kvm:
            # The default CPU model: ``host`` and ``max`` ask for MSRs the
            # nested KVM of these machines refuses.
            args += ['-machine', 'q35,accel=kvm']
        else:
            args += ['-machine', 'q35,accel=tcg']
        if guest == 'ram':
            args += ['-object', 'memory-backend-file,id=ram0,size=%dM,'
                     'mem-path=%s,share=off' % (memory_mib, image),
                     '-machine', 'memory-backend=ram0',
                     '-bios', halt_firmware(os.path.join(workdir,
                                                         'halt.bin'))]
        else:
            kernel, initrd = image
            args += ['-kernel', kernel, '-initrd', initrd,
                     '-append', 'console=ttyS0 quiet',
                     '-serial', 'file:%s' % self.console_path]
        if incoming:
            args += ['-incoming', 'defer']
        if tls_dir is not None:
            args += ['-object', 'tls-creds-x509,id=%s,dir=%s,endpoint=%s,'
                     'verify-peer=on' % (TLS_CREDS, tls_dir,
                                         'server' if incoming else 'client')]
        if os.path.exists(self.qmp_path):
            os.unlink(self.qmp_path)
        self.log = open(self.log_path, 'w')
        self.process = subprocess.Popen(
            ['ip', 'netns', 'exec', ns] + args, stdout=self.log,
            stderr=subprocess.STDOUT)
        if spawned:
            spawned(self.process)
        try:
            self.qmp = Qmp(self.qmp_path)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self):
        return self.process.pid

    def version(self):
        """QEMU's (major, minor, micro) and its package string."""
        found = self.qmp.execute('query-version')
        number = found['qemu']
        return ((number['major'], number['minor'], number['micro']),
                found.get('package', '').strip())

    def listen(self, address, port):
        """Destination: accept the incoming migration on address:port."""
        if self.tls:
            self.qmp.execute('migrate-set-parameters', **{
                'tls-creds': TLS_CREDS})
        self.qmp.execute('migrate-incoming',
                         uri='tcp:%s:%d' % (address, port))

    def migrate(self, address, port, max_bandwidth, downtime_ms=300,
                timeout=3600.0, started=None, switchover=None):
        """Source: migrate to address:port; return QEMU's figures.

        :param max_bandwidth: QEMU's limiter, bytes per second
        :param started: called once the migration has been asked for
        :param switchover: None, or what follows the switch-over (see
            :class:`Switchover`): QEMU pauses before it and continues once
            ``switchover.decided()`` has returned
        """
        parameters = {'max-bandwidth': int(max_bandwidth),
                      'downtime-limit': downtime_ms}
        if self.tls:
            # The certificates name the host, not its address.
            parameters.update({'tls-creds': TLS_CREDS,
                               'tls-hostname': x509.HOST_NAME})
        figures = {}
        if switchover is not None:
            figures = self._prepare_switchover(switchover, parameters)
        self.qmp.execute('migrate-set-parameters', **parameters)
        self.qmp.execute('migrate', uri='tcp:%s:%d' % (address, port))
        if started:
            started()
        deadline = time.monotonic() + timeout
        while True:
            state = self.qmp.execute('query-migrate')
            status = state.get('status')
            if status in ('completed', 'failed', 'cancelled'):
                break
            if time.monotonic() > deadline:
                self.qmp.execute('migrate_cancel')
                raise TimeoutError('migration took over %ds' % timeout)
            if switchover is None:
                time.sleep(POLL_S)
                continue
            if status == 'pre-switchover' and (
                    'switchover_wait_ms' not in figures):
                # The guest is stopped: continue as soon as the engine
                # holds the rate QEMU was told.
                decided = time.monotonic()
                switchover.decided()
                figures['switchover_wait_ms'] = (
                    time.monotonic() - decided) * 1000.0
                self.qmp.execute('migrate-continue', state='pre-switchover')
                continue
            if status == 'active':
                switchover.progress(
                    int(state.get('ram', {}).get('remaining', 0)))
            # A status change (pre-switchover) wakes the wait at once.
            self.qmp.event(POLL_S)
        if state['status'] != 'completed':
            raise RuntimeError('migration %s: %s' % (
                state['status'], state.get('error-desc', '')))
        # QEMU sets "completed" a moment before it computes the total time
        # and downtime: a query in between reads zeros.
        settle = time.monotonic() + 5.0
        while not state.get('total-time') and time.monotonic() < settle:
            time.sleep(0.05)
            state = self.qmp.execute('query-migrate')
        if not state.get('total-time'):
            raise RuntimeError('QEMU reported no total time for a completed '
                               'migration')
        ram = state.get('ram', {})
        figures.update({
            'total_time_s': state['total-time'] / 1000.0,
            'downtime_ms': float(state.get('downtime', 0)),
            'transferred_bytes': int(ram.get('transferred', 0)),
            'dirty_sync_count': int(ram.get('dirty-sync-count', 0))})
        return figures

    def _prepare_switchover(self, switchover, parameters):
        """Pause before the switch-over; tell QEMU >= 8.2 the rate."""
        self.qmp.execute('migrate-set-capabilities', capabilities=[
            {'capability': 'events', 'state': True},
            {'capability': 'pause-before-switchover', 'state': True}])
        version, _ = self.version()
        figures = {'avail_switchover_bandwidth': None,
                   'downtime_limit_ms': parameters['downtime-limit']}
        if version[:2] >= SWITCHOVER_BANDWIDTH_SINCE:
            parameters['avail-switchover-bandwidth'] = int(
                switchover.bandwidth)
            figures['avail_switchover_bandwidth'] = int(switchover.bandwidth)
        else:
            parameters['downtime-limit'] = max(1, int(round(
                parameters['downtime-limit'] * switchover.share)))
            figures['downtime_limit_ms'] = parameters['downtime-limit']
        return figures

    def migrate_parameters(self):
        """QEMU's migration parameters now (query-migrate-parameters)."""
        return self.qmp.execute('query-migrate-parameters')

    def wait_console(self, text, timeout):
        """Wait until the guest's serial console has said ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError('QEMU %s exited: see %s'
                                   % (self.name, self.log_path))
            try:
                with open(self.console_path, errors='replace') as console:
                    if text in console.read():
                        return
            except FileNotFoundError:
                pass
            time.sleep(0.5)
        raise TimeoutError('the guest did not say %r in %ds (see %s)'
                           % (text, timeout, self.console_path))

    def wait_running(self, timeout):
        """Wait until the VM runs (the destination, after the migration)."""
        deadline = time.monotonic() + timeout
        while self.status() != 'running':
            if time.monotonic() > deadline:
                raise TimeoutError('VM %s is %s, not running, after %ds'
                                   % (self.name, self.status(), timeout))
            time.sleep(0.1)

    def status(self):
        """The VM's run state (``running``, ``inmigrate``, ...)."""
        return self.qmp.execute('query-status')['status']

    def stop(self):
        """End QEMU; idempotent."""
        if getattr(self, 'qmp', None):
            try:
                self.qmp.execute('quit')
            except (OSError, ValueError, QmpError):
                pass
            self.qmp.close()
            self.qmp = None
        if self.process.poll() is None:
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Switchover(object):
    """What a migration tells the engine about its switch-over.

    :param bandwidth: bytes/s QEMU >= 8.2 is told as its
        ``avail-switchover-bandwidth`` (a share of what the engine
        guarantees for the stop-and-copy)
    :param progress: called with QEMU's remaining bytes while it copies
    :param decided: called when QEMU has decided to switch over (paused
        before it); returns once the engine holds its rate
    :param share: on QEMU < 8.2, which decides at the bandwidth it
        measures (about the rate guaranteed, once the floor holds),
        ``downtime-limit`` is scaled by this instead
    """

    def __init__(self, bandwidth, progress, decided, share=1.0):
        self.bandwidth = bandwidth
        self.progress = progress
        self.decided = decided
        self.share = share


#: The id of the tls-creds-x509 object of a Vm that migrates over TLS.
TLS_CREDS = 'tls0'


def firmware_args(binary):
    """``-L DIR`` for a QEMU unpacked under a prefix, else nothing.

    ``PREFIX/usr/bin/qemu-system-x86_64`` finds its own firmware (newer
    than the system's) in ``PREFIX/usr/share/qemu``; QEMU still searches
    its built-in directories after it, for what the prefix lacks.
    """
    path = os.path.realpath(binary) if os.sep in binary else None
    if path is None:
        return []
    prefix = os.path.dirname(os.path.dirname(path))
    share = os.path.join(prefix, 'share', 'qemu')
    if prefix in ('/usr', '/usr/local') or not os.path.isdir(share):
        return []
    return ['-L', share]


def recent_binary():
    """A QEMU with ``avail-switchover-bandwidth``, None if there is none.

    The testbed's, else the one tools/setup-host.sh unpacked from the
    release's backports.
    """
    for binary in (QEMU, BACKPORTS_QEMU):
        try:
            if binary_version(binary)[:2] >= SWITCHOVER_BANDWIDTH_SINCE:
                return binary
        except (OSError, subprocess.CalledProcessError, ValueError):
            continue
    return None


def binary_version(binary):
    """``(major, minor, micro)`` of a QEMU binary, from ``--version``."""
    done = subprocess.run([binary, '--version'], capture_output=True,
                          text=True, check=True)
    words = done.stdout.split()
    number = words[words.index('version') + 1]
    return tuple(int(part) for part in number.split('.')[:3])


def halt_firmware(path):
    """A 64 KiB firmware whose reset vector halts the CPU for good.

    SeaBIOS, finding nothing to boot, rewrites the whole of a RAM-only
    guest's memory (measured: a 48 MiB guest sent 94 MiB); this one touches
    nothing, so QEMU sends the random contents once.
    """
    if not os.path.exists(path):
        image = bytearray(b'\xf4' * 65536)
        image[-16:-12] = b'\xfa\xf4\xeb\xfd'  # cli; hlt; jmp back to hlt
        with open(path, 'wb') as firmware:
            firmware.write(bytes(image))
    return path


def random_image(path, memory_mib, seed):
    """A file of random bytes the size of the guest's memory."""
    if os.path.exists(path) and os.path.getsize(path) == memory_mib << 20:
        return path
    rng = np.random.default_rng(seed)
    with open(path, 'wb') as image:
        for _ in range(memory_mib):
            image.write(rng.bytes(1 << 20))
    return path
