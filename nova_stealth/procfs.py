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
"""What /proc tells about a process."""

#: States of /proc/<pid>/stat's third field for a process that has ended
#: but is not reaped yet (zombie) or is being reaped (dead).
ENDED_STATES = ('Z', 'X')


def start_time(pid):
    """When process ``pid`` started, in clock ticks since boot.

    With the pid, it names one process: a reused pid has another start
    time, and it does not change when ``ip netns exec`` becomes the program
    it runs, as the command line does.

    :returns: an int, or None if the process is gone or has ended (a
        zombie)
    """
    try:
        with open('/proc/%d/stat' % pid) as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the
    # fields after it follow the last ')'. There, index 0 is field 3 (the
    # state) and index 19 is field 22 (the start time).
    fields = stat.rpartition(')')[2].split()
    if fields[0] in ENDED_STATES:
        return None
    return int(fields[19])
