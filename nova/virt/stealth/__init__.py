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
"""The package Nova loads ``compute_driver = stealth.StealthLibvirtDriver``
from (Nova imports drivers only as ``nova.virt.<name>``).

nova_stealth installs this package alone, never Nova's own
``nova/__init__.py`` or ``nova/virt/__init__.py``.
"""

from nova_stealth.virt.driver import StealthLibvirtDriver

__all__ = ['StealthLibvirtDriver']
