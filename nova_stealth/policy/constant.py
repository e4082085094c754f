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
"""The BuFLO-style baseline: one fixed rate for the whole migration."""

from nova_stealth.policy import base


class ConstantRatePolicy(base.RatePolicy):
    """Always return ``start_rate``.

    A constant-rate shaper removes QEMU's 100 ms bursts but leaves a flow
    whose throughput barely varies, which is what the paper's attacks look
    for; it is here as the baseline the other policies are measured against.
    """

    def next_rate(self):
        """Return ``start_rate``, every tick."""
        return self.start_rate
