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
"""JSON state files: written whole and atomically, read defensively.

A record on disk outlives the process that wrote it and may come back
empty, truncated or in a shape no code writes (a full disk, an editor, a
crash of the file system). A reader then moves the file aside, with a
timestamp suffix so an operator can look at it, says so loudly, and goes on
as if it had not been there; the caller rebuilds what it can from what the
kernel shows.
"""

import json
import os
import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


def write_json(path, data):
    """Write ``data`` to ``path`` as JSON, atomically, and fsync it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = path + '.tmp'
    with open(temporary, 'w') as state_file:
        json.dump(data, state_file, indent=1, sort_keys=True)
        state_file.flush()
        os.fsync(state_file.fileno())
    os.replace(temporary, path)


def quarantine(path, reason):
    """Move a bad state file aside; return the path it now has."""
    aside = '%s.corrupt-%s' % (path, time.strftime('%Y%m%dT%H%M%SZ',
                                                   time.gmtime()))
    suffix = 0
    while os.path.exists(aside + ('.%d' % suffix if suffix else '')):
        suffix += 1
    aside += '.%d' % suffix if suffix else ''
    os.replace(path, aside)
    LOG.error('State file %s is unusable (%s); moved it to %s and going on '
              'without it', path, reason, aside)
    return aside


def read_json(path, check):
    """Return the JSON in ``path``, or None if there is none.

    :param check: called with the parsed data; returns a reason (text)
        when its shape is wrong, None when it is right
    :returns: the data, or None when the file is missing or was bad (then
        it has been moved aside by :func:`quarantine`)
    """
    try:
        with open(path) as state_file:
            text = state_file.read()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as e:
        quarantine(path, 'not JSON: %s' % e)
        return None
    reason = check(data)
    if reason:
        quarantine(path, reason)
        return None
    return data
