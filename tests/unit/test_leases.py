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
"""Port leases taken by two processes at once."""

import random

from nova_stealth.ports import leases as leases_lib
from tests.unit import interleaving

PORTS = [range(62000, 62010)]


class PausingRandom(random.Random):
    """Shuffles as ``random.Random(0)``, after stopping at ``pause``.

    The lease file is read before the free ports are shuffled: a process
    stopped here holds what it read.
    """

    def __init__(self, pause):
        super().__init__(0)
        self.pause = pause

    def shuffle(self, ports):
        self.pause()
        super().shuffle(ports)


def test_two_processes_lease_in_turn(tmp_path):
    def allocate(owner, rng=None):
        return leases_lib.PortLeases(str(tmp_path), PORTS,
                                     rng=rng).allocate(owner)

    first, second = interleaving.contend(
        lambda pause: allocate('m-1', PausingRandom(pause)),
        lambda: allocate('m-2'))
    assert first != second
    assert leases_lib.PortLeases(str(tmp_path), PORTS).leases() == {
        'm-1': first, 'm-2': second}
