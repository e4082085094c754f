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
"""No module of nova_stealth imports from a layer above its own.

Read from the source (every import statement, those inside functions
too), not from what an import happens to load.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / 'nova_stealth'

#: From the bottom up. A module may import its own layer and those below;
#: the longest name listed that a module's name starts with gives its
#: layer.
LAYERS = [
    # Leaves: they import no other part of nova_stealth but each other.
    ['exception', 'plugins', 'procfs', 'rtnl', 'statefile', 'units',
     'version'],
    # Plugins and pure logic.
    ['policy', 'chaff', 'ports', 'shaping.tree'],
    # Options: oslo.config, the leaves and, to check a template library
    # at start-up, the policy that reads it.
    ['conf'],
    # The unprivileged shaping: the tree, its records, the tick loop; the
    # kernel backend is given to it.
    ['shaping'],
    # What runs inside the privsep daemon.
    ['privileged'],
    # The ways to the kernel: the privsep entrypoints, or in memory.
    ['backends'],
    # One migration on one host; the adversary's analysis.
    ['engine', 'analysis'],
    # Nova's driver and the testbed.
    ['virt', 'testbed'],
    # Commands.
    ['cmd'],
]


def layer_of(module):
    """The index in LAYERS of a dotted name below nova_stealth."""
    found = [(len(prefix), index) for index, names in enumerate(LAYERS)
             for prefix in names
             if module == prefix or module.startswith(prefix + '.')]
    assert found, 'nova_stealth.%s is in no layer of LAYERS' % module
    return max(found)[1]


def module_name(path):
    parts = list(path.relative_to(PACKAGE).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def imported(source):
    """Names below nova_stealth that a module's source imports."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # "from nova_stealth.shaping import tree" imports a module,
            # "from nova_stealth.shaping.tree import x" a name of one.
            found = [node.module + '.' + alias.name
                     if is_module(node.module + '.' + alias.name)
                     else node.module for alias in node.names]
        else:
            continue
        names.update(name[len('nova_stealth.'):] for name in found
                     if name.startswith('nova_stealth.'))
    return names


def is_module(dotted):
    """True for a module or package of nova_stealth, by its full name."""
    path = PACKAGE.parent.joinpath(*dotted.split('.'))
    return path.with_suffix('.py').exists() or path.is_dir()


def upward_imports(name, source):
    """What the module ``name`` imports from layers above its own."""
    return sorted(other for other in imported(source)
                  if layer_of(other) > layer_of(name))


MODULES = [path for path in sorted(PACKAGE.rglob('*.py'))
           if module_name(path)]


@pytest.mark.parametrize('path', MODULES, ids=module_name)
def test_imports_go_down_the_layers(path):
    name = module_name(path)
    upward = upward_imports(name, path.read_text())
    assert not upward, 'nova_stealth.%s imports from above its layer: %s' % (
        name, ', '.join('nova_stealth.' + other for other in upward))


def test_the_check_sees_an_upward_import():
    # The two that tc_lib had: a backend for a default (in a function
    # here, as a lazy import would be), the codec from privileged/.
    source = (PACKAGE / 'shaping' / 'tc_lib.py').read_text() + (
        '\n\ndef default():\n    from nova_stealth import backends\n'
        '    from nova_stealth.privileged import tc\n'
        '    return backends, tc\n')
    assert upward_imports('shaping.tc_lib', source) == [
        'backends', 'privileged.tc']
    assert upward_imports('shaping.tree', 'from nova_stealth.shaping '
                          'import modulator\n') == ['shaping.modulator']
