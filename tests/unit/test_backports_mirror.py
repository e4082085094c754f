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
"""tools/backports-mirror.py: the mirror a suite comes from, read from apt."""

import importlib.util
import os

import pytest

TOOL = os.path.join(os.path.dirname(__file__), '..', '..', 'tools',
                    'backports-mirror.py')


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('backports_mirror', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sources(tmp_path, listing='', **parts):
    (tmp_path / 'sources.list.d').mkdir()
    (tmp_path / 'sources.list').write_text(listing)
    for name, text in parts.items():
        (tmp_path / 'sources.list.d' / name.replace('_', '.')).write_text(
            text)
    return str(tmp_path)


def test_deb822_sources_disabled_and_source_stanzas_skipped(tool, tmp_path):
    root = sources(tmp_path, debian_sources='''Types: deb-src
URIs: http://src.example.invalid/debian
Suites: bookworm

Types: deb
URIs: http://off.example.invalid/debian
Suites: bookworm
Enabled: no

# a comment
Types: deb
URIs: http://mirror.example.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
''')
    assert tool.mirror('bookworm', root) == (
        'http://mirror.example.invalid/debian',
        '/usr/share/keyrings/debian-archive-keyring.gpg')
    assert tool.mirror('trixie', root) is None


def test_one_line_sources_with_options(tool, tmp_path):
    root = sources(tmp_path, listing='\n'.join([
        '# deb http://old.example.invalid/debian bookworm main',
        'deb-src http://src.example.invalid/debian bookworm main',
        'deb [arch=amd64 signed-by=/etc/apt/k.gpg] '
        'http://m.example.invalid/d bookworm main', '']))
    assert tool.mirror('bookworm', root) == ('http://m.example.invalid/d',
                                             '/etc/apt/k.gpg')
