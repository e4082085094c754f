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
"""nova_stealth inside nova-compute (the driver is in :mod:`.driver`)."""

#: The placement trait of a compute node whose nova-compute shapes live
#: migrations (``[stealth] enabled``): operators see it with ``openstack
#: resource provider trait list``, and a flavor or the scheduler can ask
#: for it.
TRAIT = 'CUSTOM_NOVA_STEALTH'
