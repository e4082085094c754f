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
"""A stealthed migration of a real QEMU holds the switch-over's rate.

A RAM-only guest migrates from the source namespace to the destination
through the engine's shaping, with the switch-over followed as libvirt
does (pause before it, continue once the engine holds its rate). On QEMU
>= 8.2 QEMU is told that rate (``avail-switchover-bandwidth``) and the
modulator's record shows the class at or above it from before the
stop-and-copy until the guest runs on the destination. The QEMU is the
testbed's (``$NOVA_STEALTH_QEMU``, else the one on PATH) if it is 8.2 or
later, else the backports' one that tools/setup-host.sh unpacks.
"""

import contextlib
import time

import pytest

from nova_stealth import conf as stealth_conf
from nova_stealth.engine import source
from nova_stealth.testbed import qemu

MIB = 1 << 20
MEMORY_MIB = 32
PORT = 61234
BINARY = qemu.recent_binary()


def test_switchover_rate_is_told_and_held(link, shaper, tmp_path):
    assert BINARY, ('no QEMU >= 8.2 here, neither %s nor %s: '
                    'tools/setup-host.sh unpacks the backports\' one' % (
                        qemu.QEMU, qemu.BACKPORTS_QEMU))
    image = qemu.random_image(str(tmp_path / 'ram.img'), MEMORY_MIB, 5)
    group = stealth_conf.load_group(
        state_dir=str(tmp_path / 'state'), chaff_enabled=False,
        rate_policy='paper', switchover_lead_seconds=2.0,
        switchover_ramp_seconds=1.0)
    with contextlib.ExitStack() as cleanup:
        target = qemu.Vm(link.dst, str(tmp_path), 'dst', MEMORY_MIB, 'ram',
                         image, incoming=True, binary=BINARY)
        cleanup.callback(target.stop)
        origin = qemu.Vm(link.src, str(tmp_path), 'src', MEMORY_MIB, 'ram',
                         image, binary=BINARY)
        cleanup.callback(origin.stop)
        target.listen(link.DST_V4, PORT)
        session = source.SourceSession(group, 'switchover', link.DST_V4,
                                       PORT, MEMORY_MIB * MIB, shaper=shaper,
                                       seed=11)
        cleanup.callback(session.abort)
        session.start()
        guaranteed = session.switchover_bandwidth
        told = session.avail_switchover_bandwidth
        decided = []

        def switched():
            session.switchover()
            decided.append(time.monotonic() - session.started_at)

        figures = origin.migrate(
            link.DST_V4, PORT, source.hypervisor_max_bandwidth(group) * MIB,
            switchover=qemu.Switchover(told, session.progress, switched))
        set_in_qemu = origin.migrate_parameters()[
            'avail-switchover-bandwidth']
        target.wait_running(30)
        # The guest runs on the destination: the trace so far covers the
        # stop-and-copy.
        trace = shaper.modulator_trace(session.modulator)
        session.finish()
    report = session.report
    assert set_in_qemu == int(told) == figures['avail_switchover_bandwidth']
    assert told == pytest.approx(
        guaranteed * group.switchover_bandwidth_share)
    assert group.min_rate * MIB < guaranteed < group.max_rate * MIB
    assert len(decided) == 1 and 'switchover_wait_ms' in figures
    assert report['error'] is None
    assert report['floor'] * MIB == pytest.approx(guaranteed)
    # The whole floor ran before QEMU was let go on to the stop-and-copy
    # (the modulator's clock starts after the session's), and no rate set
    # from then on fell below it.
    since = report['floor_since']
    assert since is not None and since <= decided[0]
    held = [rate for at, rate in zip(trace['times'], trace['rates'])
            if at >= since]
    assert held and min(held) >= report['floor']
    assert report['floor_low'] == min(held)
    # The policy still chose: the floor is no constant sprint.
    assert max(held) > report['floor']
    assert MEMORY_MIB * MIB <= figures['transferred_bytes']
