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
"""Where the tests find the real captures of ../shared/traces."""

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def traces():
    """The shared traces: $NOVA_STEALTH_TRACES, or shared/ beside the tree."""
    path = pathlib.Path(os.environ.get('NOVA_STEALTH_TRACES') or
                        ROOT.parent / 'shared' / 'traces')
    if not path.is_dir():
        raise FileNotFoundError(
            'the real captures are expected in %s (shared/ beside this '
            'tree); set NOVA_STEALTH_TRACES to where they are' % path)
    return path
