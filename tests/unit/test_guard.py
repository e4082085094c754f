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
"""The privsep daemon's safety checks, without the daemon."""

import pytest

from nova_stealth.privileged import guard
from nova_stealth.shaping import tree


def test_our_classes_and_no_other():
    for minor in (1, 2, 3, 0x100, 0x10FF):
        assert guard.class_handle(tree.handle(minor)) == tree.handle(minor)
    for handle in (0x10001, tree.handle(4), tree.handle(0x1100),
                   tree.ROOT_HANDLE, -1, True, '5ea1:100'):
        with pytest.raises(guard.Refused):
            guard.class_handle(handle)
    with pytest.raises(guard.Refused, match='a migration class'):
        guard.class_handle(tree.handle(tree.DEFAULT_MINOR),
                           sessions_only=True)


def test_shapes_as_the_tree_builds_them():
    shape = tree.htb_shape(tree.mib_to_bytes(8), 1500)
    assert guard.htb_shape(shape) == shape
    for wrong in (dict(shape, rate=0), dict(shape, ceil=1),
                  dict(shape, prio=9), dict(shape, quantum=2.5),
                  dict(shape, extra=1), [1, 2]):
        with pytest.raises(guard.Refused):
            guard.htb_shape(wrong)


def test_modulator_bounds():
    rates = {'min_rate': 1.0, 'max_rate': 16.0, 'start_rate': 4.0}
    guard.modulator(0.01, 2.0, 1500, rates, 0)
    guard.modulator(0.01, 0.0, 1500, dict(rates, other='kept'), 0)
    for args in ((1e-9, 0.0, 1500, rates, 0),
                 (0.01, float('inf'), 1500, rates, 0),
                 (0.01, 0.0, 10, rates, 0),
                 (0.01, 0.0, 1500, dict(rates, max_rate=float('nan')), 0),
                 (0.01, 0.0, 1500, dict(rates, start_rate=0), 0),
                 (0.01, 0.0, 1500, rates, guard.MAX_MODULATORS)):
        with pytest.raises(guard.Refused):
            guard.modulator(*args)
