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
"""nova_stealth's share of one nova-compute: its migrations, both ways.

One :class:`StealthNode` per driver: Nova's functional harness runs two
compute services in one process over one configuration, so nothing here
is global. Its state lives in a subdirectory of ``[stealth] state_dir``
named after the host, but for the records of the shaping trees, which are
the kernel's: every service on one kernel shares them in
``<state_dir>/kernels/<kernel id>``, where each session names its service.
"""

import ipaddress
import os
import socket
import threading
import time

from oslo_log import log as logging

from nova_stealth import backends
from nova_stealth.engine import destination
from nova_stealth.engine import source
from nova_stealth.ports import leases as leases_lib
from nova_stealth.shaping import tc_lib

LOG = logging.getLogger(__name__)
#: A lease whose incoming domain has not appeared this long after it was
#: taken belongs to a migration that ended without telling us.
INCOMING_GRACE_SECONDS = 600
#: The subdirectory of ``[stealth] state_dir`` that holds, per kernel, the
#: device records shared by the compute services on it.
KERNELS_DIR = 'kernels'
#: How often an outgoing migration's progress is read from libvirt.
PROGRESS_INTERVAL = 0.25


def peer_address(address):
    """An IP address for ``address``, resolving a host name."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return socket.getaddrinfo(address, None,
                                  type=socket.SOCK_STREAM)[0][4][0]


def sweep_while_disabled(group, host):
    """Remove what an earlier run of ``host`` left, with stealth turned off.

    ``[stealth] enabled = false`` stops shaping new migrations, but a run
    that crashed with it on may have left shaping and port leases: they
    are removed all the same. A host that never ran nova_stealth (no
    directory of its own under ``state_dir``) is left untouched: nothing
    is made and no privsep daemon starts.

    :returns: (sessions removed, leases ended)
    """
    if not os.path.isdir(os.path.join(group.state_dir, host)):
        return [], {}
    return StealthNode(group, host).sweep()


class StealthNode(object):
    """Outgoing sessions and incoming port leases of one compute host.

    :param group: the loaded [stealth] option group
    :param host: the compute host's name
    :param backend: a kernel backend (``[stealth] backend`` if None)
    :param clock: seconds since the epoch
    """

    def __init__(self, group, host, backend=None, clock=time.time):
        self.group = group
        self.host = host
        self.clock = clock
        self.state_dir = os.path.join(group.state_dir, host)
        os.makedirs(self.state_dir, exist_ok=True)
        self.backend = backend or backends.load(group.backend, host=host)
        # Every service on one kernel shares its devices' records there.
        self.records_dir = os.path.join(group.state_dir, KERNELS_DIR,
                                        self.backend.kernel_id())
        self.shaper = tc_lib.Shaper.from_conf(
            group, kernel=self.backend, state_dir=self.state_dir,
            records_dir=self.records_dir)
        self.leases = leases_lib.PortLeases(
            self.state_dir, group.migration_port_ranges,
            group.port_lease_seconds, clock=clock,
            excluded=group.chaff_ports)
        self.outgoing = {}
        #: Sessions past finish() whose chaff still ramps down, and those
        #: whose abort left something behind: theirs until the sweep.
        self._ending = {}
        self._seen_incoming = set()
        self._lock = threading.Lock()

    def _legacy_shaper(self):
        # Records from before they were shared per kernel.
        return tc_lib.Shaper.from_conf(self.group, kernel=self.backend,
                                       state_dir=self.state_dir)

    def recorded_outgoing(self):
        """Ids of the outgoing migrations an earlier run left shaped.

        Called as the service starts, before :meth:`sweep`: these
        migrations may still be running, unhidden since the earlier run
        died.
        """
        return sorted(set(self.shaper.sessions()) |
                      set(self._legacy_shaper().sessions()))

    def sweep(self):
        """Remove all that a previous run of this service left behind.

        Called as the service starts, when none of it can be in use.
        :returns: (sessions removed, leases ended)
        """
        removed = self.shaper.sweep(everything=True)
        removed += self._legacy_shaper().sweep(everything=True)
        ended = self.leases.release_all()
        if removed or ended:
            LOG.warning('Removed shaping of migrations %s and port leases '
                        'of instances %s left by an earlier run',
                        sorted(removed), sorted(ended))
        return removed, ended

    # Destination side ----------------------------------------------------

    def lease(self, instance_uuid):
        """Lease the data port of an incoming migration."""
        return destination.DestinationSession(
            self.group, instance_uuid, leases=self.leases).prepare()

    def release(self, instance_uuid):
        """Release an incoming migration's port; idempotent."""
        port = self.leases.release(instance_uuid)
        if port:
            LOG.info('Released migration port %d of instance %s', port,
                     instance_uuid)
        return port

    def release_abandoned(self, present_uuids):
        """Release leases whose incoming domain is gone or never came.

        Nova does not call the destination's rollback after every failed
        migration; the periodic resource update calls this instead.

        :param present_uuids: uuids of the domains on this host now
        :returns: the instance uuids whose leases were released
        """
        deadline = self.clock() - INCOMING_GRACE_SECONDS
        abandoned = []
        for uuid, since in self.leases.leased_since().items():
            if uuid in present_uuids:
                self._seen_incoming.add(uuid)
            elif uuid in self._seen_incoming or since < deadline:
                abandoned.append(uuid)
        for uuid in abandoned:
            self._seen_incoming.discard(uuid)
            LOG.warning('Releasing the migration port of instance %s: its '
                        'migration ended without the destination being told',
                        uuid)
            self.leases.release(uuid)
        return abandoned

    # Source side ---------------------------------------------------------

    def start_outgoing(self, instance_uuid, address, port, memory_bytes,
                       abort_migration=None):
        """Shape and hide an instance's migration; return when it may go.

        :param abort_migration: aborts the migration if its defence cannot
            hold (see ``[stealth] on_defence_failure``)
        """
        session = source.SourceSession(
            self.group, instance_uuid, peer_address(address), port,
            memory_bytes, shaper=self.shaper,
            chaff_sender=self.backend.chaff_sender,
            abort_migration=abort_migration)
        with self._lock:
            self.outgoing[instance_uuid] = session
        try:
            session.start()
        except BaseException:
            with self._lock:
                self.outgoing.pop(instance_uuid, None)
            raise
        return session

    def follow_outgoing(self, instance_uuid, remaining,
                        interval=PROGRESS_INTERVAL):
        """Tell an outgoing session what libvirt says is left to send.

        A daemon thread calls ``remaining()`` (bytes, from libvirt's job
        stats; None while there is no job) every ``interval`` seconds and
        hands it to the session, until the session has asked for its
        switch-over floor or is gone. libvirt continues QEMU from its
        pre-switchover pause by itself, so the floor must be in force
        before QEMU decides: the session's lead sees to that.
        """
        with self._lock:
            session = self.outgoing.get(instance_uuid)
        if session is None:
            return None

        def run():
            while True:
                with self._lock:
                    if self.outgoing.get(instance_uuid) is not session:
                        return
                try:
                    left = remaining()
                except Exception:
                    LOG.warning('Could not read the progress of instance '
                                '%s\'s migration: its switch-over floor '
                                'is put in force at once', instance_uuid,
                                exc_info=True)
                    session.switchover()
                    return
                if left is not None and session.progress(left) is not None:
                    return
                time.sleep(interval)

        thread = threading.Thread(target=run, daemon=True,
                                  name='nova-stealth-progress')
        thread.start()
        return thread

    def switchover_rates(self, instance_uuid):
        """(guaranteed, to tell QEMU), bytes/s, of an outgoing session.

        None if the instance has no outgoing session here.
        """
        with self._lock:
            session = self.outgoing.get(instance_uuid)
        if session is None:
            return None
        return (session.switchover_bandwidth,
                session.avail_switchover_bandwidth)

    def finish_outgoing(self, instance_uuid):
        """Drain, then ramp the chaff down and unshape in the background."""
        with self._lock:
            session = self.outgoing.pop(instance_uuid, None)
            if session is not None:
                # In one step, so that no sweep sees it owned by nobody.
                self._ending[instance_uuid] = session
        if session is not None:
            try:
                session.finish()
            except BaseException:
                session.abort()
                raise

    def abort_outgoing(self, instance_uuid):
        """Remove an outgoing migration's shaping and chaff now.

        Each step is tried on its own; what fails is logged and left to
        :meth:`sweep_unowned`.
        """
        with self._lock:
            session = self.outgoing.pop(instance_uuid, None)
        if session is not None:
            if session.abort():
                LOG.info('Removed the shaping and chaff of instance %s',
                         instance_uuid)
            else:
                with self._lock:
                    self._ending[instance_uuid] = session

    def sweep_unowned(self):
        """Remove shaping that no live migration of this service owns.

        The periodic backstop (the driver's resource update calls it): a
        teardown that failed part-way (a dead privsep daemon, a netlink
        error) is retried, and sessions whose chaff ramp-down is over are
        forgotten.

        :returns: the ids of the sessions whose shaping was removed
        """
        with self._lock:
            ending = list(self._ending.items())
        for uuid, session in ending:
            # Once its ramp-down is over, a session's abort only retries
            # what failed (stopping the chaff or the modulator).
            if session.close(timeout=0) and session.abort():
                with self._lock:
                    self._ending.pop(uuid, None)
        with self._lock:
            owned = set(self.outgoing) | set(self._ending)
        removed = self.shaper.sweep(keep=owned)
        if removed:
            LOG.warning('Removed shaping that no live migration owned: %s',
                        sorted(removed))
        return removed
