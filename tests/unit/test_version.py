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
"""Every console script prints nova_stealth's version and exits 0."""

import configparser
import importlib.metadata
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def console_scripts():
    """The console scripts setup.cfg declares, as ``(name, target)``."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / 'setup.cfg')
    lines = setup['entry_points']['console_scripts'].strip().splitlines()
    return [tuple(part.strip() for part in line.split('=', 1))
            for line in lines]


def test_every_command_is_found():
    names = [name for name, _ in console_scripts()]
    assert 'nova-stealth-status' in names and len(names) >= 5


@pytest.mark.parametrize('name,target', console_scripts())
def test_version_is_printed(name, target):
    # The installed script, as an operator runs it: the one beside this
    # Python (the virtualenv's bin/).
    script = os.path.join(os.path.dirname(sys.executable), name)
    done = subprocess.run([script, '--version'], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == importlib.metadata.version('nova_stealth')
    assert done.stderr == ''
