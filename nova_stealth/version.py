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
"""nova_stealth's version, as pbr reads it from the installed package.

A wheel built from a release tag is that tag (``0.1.0``); one built
between tags is the next version with a ``.devN`` suffix.
"""

import pbr.version

version_info = pbr.version.VersionInfo('nova_stealth')


def version_string():
    """The full version: ``0.1.0``, or ``0.1.1.dev80`` between tags."""
    return version_info.release_string()
