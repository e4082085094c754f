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
"""Run under Nova's functional harness, in a process of their own.

``NOVA_STEALTH_CONCURRENCY`` picks Nova's concurrency mode for the whole
process: ``threading`` (nova-compute's default in Nova 34) or
``eventlet``. It must be chosen before Nova is first imported.
"""

import os
import sys

CONCURRENCY = os.environ.setdefault('NOVA_STEALTH_CONCURRENCY', 'threading')
if CONCURRENCY not in ('threading', 'eventlet'):
    raise SystemExit('NOVA_STEALTH_CONCURRENCY=%s: use threading or '
                     'eventlet' % CONCURRENCY)
os.environ['OS_NOVA_DISABLE_EVENTLET_PATCHING'] = (
    '1' if CONCURRENCY == 'threading' else '0')
# Nova's fixtures look for etc/nova/api-paste.ini under $state_path, which
# is the source tree in Nova's own runs; the wheel installs it under the
# environment's prefix.
os.environ.setdefault('OS_DEFAULT__STATE_PATH', sys.prefix)

# Nova's functional package applies (or forbids) eventlet's monkey patching
# as it is imported; nothing may import eventlet before it.
import nova.tests.functional  # noqa: E402,F401,H306
