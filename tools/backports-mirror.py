#!/usr/bin/env python3
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
"""Print the mirror this machine's apt sources use for a Debian suite.

``backports-mirror.py bookworm`` reads /etc/apt/sources.list and
/etc/apt/sources.list.d/ (one-line ``.list`` files and deb822 ``.sources``
files) and prints the first URI of a ``deb`` source whose suites include
``bookworm``, signed-by option included if the source has one, as
``URI<TAB>SIGNED-BY``. Exits 1 with a message when there is none: the
set-up then stays on the suites the machine already has.
"""

import glob
import os
import sys

ROOT = os.environ.get('APT_SOURCES_ROOT', '/etc/apt')


def one_line(path):
    """(types, uris, suites, signed_by) of each entry of a .list file."""
    with open(path) as listing:
        for line in listing:
            words = line.split('#', 1)[0].split()
            if not words or words[0] != 'deb':
                continue
            words, options = words[1:], {}
            if words and words[0].startswith('['):
                text = []
                while words:
                    word = words.pop(0)
                    text.append(word.strip('[]'))
                    if word.endswith(']'):
                        break
                options = dict(o.split('=', 1) for o in text if '=' in o)
            if len(words) >= 2:
                yield (['deb'], [words[0]], [words[1]],
                       options.get('signed-by', ''))


def deb822(path):
    """(types, uris, suites, signed_by) of each stanza of a .sources file."""
    with open(path) as sources:
        stanzas = sources.read().split('\n\n')
    for stanza in stanzas:
        fields, key = {}, None
        for line in stanza.splitlines():
            if line.startswith('#') or not line.strip():
                continue
            if line[0] in ' \t' and key:
                fields[key] += ' ' + line.strip()
                continue
            key, _, value = line.partition(':')
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get('enabled', 'yes').lower() == 'no':
            continue
        yield (fields.get('types', '').split(), fields.get('uris', '').split(),
               fields.get('suites', '').split(), fields.get('signed-by', ''))


def mirror(suite, root=ROOT):
    """The (uri, signed_by) that serves ``suite`` here, or None."""
    files = [os.path.join(root, 'sources.list')]
    files += sorted(glob.glob(os.path.join(root, 'sources.list.d', '*.list')))
    sources = sorted(glob.glob(os.path.join(root, 'sources.list.d',
                                            '*.sources')))
    for path in files + sources:
        if not os.path.isfile(path):
            continue
        reader = deb822 if path.endswith('.sources') else one_line
        for types, uris, suites, signed_by in reader(path):
            if 'deb' in types and suite in suites and uris:
                return uris[0], signed_by
    return None


def main(argv):
    if len(argv) != 2:
        sys.exit('usage: backports-mirror.py SUITE')
    found = mirror(argv[1])
    if found is None:
        sys.exit('no apt source here serves %s' % argv[1])
    print('%s\t%s' % found)


if __name__ == '__main__':
    main(sys.argv)
