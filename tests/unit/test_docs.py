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
"""The documentation builds and says what the code does.

Every console script has a man page and a page documenting each of its
options; every log line the administrator guide quotes is one the code
writes, at that level, from that logger.
"""

import ast
import importlib.util
import pathlib
import re
import runpy
import subprocess
import sys

import pytest

from nova_stealth.cmd import audit
from nova_stealth.cmd import chaff_responder
from nova_stealth.cmd import cleanup
from nova_stealth.cmd import status
from nova_stealth.cmd import testbed
from nova_stealth import exception
from tests.unit import test_layers
from tests.unit import test_version

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / 'doc' / 'source'
#: Pages that quote log lines, as ``LEVEL logger [instance: <uuid>] text``.
LOG_PAGES = ('admin/troubleshooting.rst', 'admin/verify.rst')
LOG_LINE = re.compile(r'^    (DEBUG|INFO|WARNING|ERROR|CRITICAL) '
                      r'(nova_stealth[\w.]*) (\[instance: <uuid>\] )?(.+)$',
                      re.M)
EXCEPTION_LINE = re.compile(r'^    nova_stealth\.exception\.(\w+): (.+)$',
                            re.M)
#: oslo.log's level of each logger method.
LEVELS = {'debug': 'DEBUG', 'info': 'INFO', 'warning': 'WARNING',
          'error': 'ERROR', 'exception': 'ERROR', 'critical': 'CRITICAL'}
#: A printf conversion, ``%s``, ``%.2f``, ``%(name)s``...
CONVERSION = re.compile(r'%(\([a-z_]+\))?[-+ #0]*\d*(\.\d+)?[sdfgrx]')
#: Each command's main() and the argument lists whose help it prints.
COMMANDS = {
    'nova-stealth-audit': (audit.main, [[]]),
    'nova-stealth-chaff-responder': (chaff_responder.main, [[]]),
    'nova-stealth-cleanup': (cleanup.main, [[]]),
    'nova-stealth-status': (status.main, [[], ['upgrade']]),
    'nova-stealth-testbed': (testbed.main,
                             [[], ['run'], ['lab'], ['cleanup']]),
}


def test_a_man_page_for_every_command():
    conf = runpy.run_path(str(DOC / 'conf.py'))
    pages = {(source, name) for source, name, _, _, section
             in conf['man_pages'] if section == 1}
    assert pages == {('cli/%s' % name, name)
                     for name, _ in test_version.console_scripts()}
    assert set(COMMANDS) == {name for _, name in pages}


def _help(main, argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv + ['--help'])
    assert done.value.code in (0, None)
    return capsys.readouterr().out


def _flags(help_text):
    """The option strings (and subcommand words) a help text lists."""
    flags = set()
    for line in help_text.splitlines():
        if re.match(r'^  -', line):
            flags.update(re.findall(r'(?<![\w-])(--?[A-Za-z][\w-]*)',
                                    line.split('  ', 2)[1]))
    return flags


def _documented(page):
    """{program: option strings} of a page's ``.. option::`` lines."""
    found, program = {}, None
    for line in page.read_text().splitlines():
        if line.startswith('.. program:: '):
            program = line.split(':: ', 1)[1].strip()
        elif line.startswith('.. option:: '):
            # Sphinx's own separator: ', ' (a metavar may hold a comma).
            for spec in line.split(':: ', 1)[1].split(', '):
                found.setdefault(program, set()).add(spec.split()[0])
    return found


@pytest.mark.parametrize('name', sorted(COMMANDS))
def test_every_option_is_documented(name, capsys):
    main, argvs = COMMANDS[name]
    documented = _documented(DOC / 'cli' / ('%s.rst' % name))
    for argv in argvs:
        program = ' '.join([name] + argv)
        flags = _flags(_help(main, argv, capsys))
        assert '--help' in flags
        assert flags <= documented.get(program, set()), (
            '%s: options not in doc/source/cli/%s.rst' % (program, name))
        # Nothing documented that the command does not take.
        assert documented[program] - flags <= {'check', 'CAPTURE'}


def _log_calls(module_name):
    """{(level, has_instance): [message templates]} of a module's LOG."""
    # Found, not imported: nova_stealth.virt.driver needs Nova.
    origin = importlib.util.find_spec(module_name).origin
    tree = ast.parse(pathlib.Path(origin).read_text())
    calls = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and
                isinstance(node.func, ast.Attribute) and
                node.func.attr in LEVELS and
                isinstance(node.func.value, ast.Name) and
                node.func.value.id == 'LOG' and node.args and
                isinstance(node.args[0], ast.Constant) and
                isinstance(node.args[0].value, str)):
            key = (LEVELS[node.func.attr],
                   any(k.arg == 'instance' for k in node.keywords))
            calls.setdefault(key, []).append(node.args[0].value)
    return calls


def _matches(template, quoted):
    """True if ``quoted`` (with <...> for values) fits ``template``.

    Every conversion of the template stands for one value or more (a
    module constant passed as ``%s`` included); the rest is literal.
    """
    pieces = CONVERSION.split(template)
    literal = [p for i, p in enumerate(pieces) if i % 3 == 0]
    pattern = '.+?'.join(re.escape(p.replace('%%', '%')) for p in literal)
    return re.fullmatch(pattern, quoted) is not None


def _quoted(pattern):
    found = []
    for page in LOG_PAGES:
        found += [(page,) + m.groups()
                  for m in pattern.finditer((DOC / page).read_text())]
    return found


def test_quoted_log_lines_are_the_codes():
    quoted = _quoted(LOG_LINE)
    assert len(quoted) >= 25
    for page, level, logger, instance, text in quoted:
        calls = _log_calls(logger)
        templates = calls.get((level, instance is not None), [])
        assert any(_matches(t, text) for t in templates), (
            '%s quotes a %s line of %s%s that it does not log: %s' % (
                page, level, logger,
                ' with an instance' if instance else '', text))


def test_quoted_exceptions_are_the_codes():
    quoted = _quoted(EXCEPTION_LINE)
    assert len(quoted) >= 4
    for page, name, text in quoted:
        template = getattr(exception, name).msg_fmt
        assert _matches(template, text), (
            '%s quotes %s as %r, but it says %r' % (
                page, name, text, template))


def test_a_changed_message_is_caught():
    # The check itself: a word changed, a conversion dropped, another
    # level or logger.
    template = 'Migration %s goes WITHOUT chaff, so its start and end ' \
        'show on the wire: %s'
    assert _matches(template, 'Migration <uuid> goes WITHOUT chaff, so its '
                              'start and end show on the wire: <error>')
    assert not _matches(template, 'Migration <uuid> goes without chaff, so '
                                  'its start and end show on the wire: <e>')
    assert not _matches(template, 'Migration goes WITHOUT chaff, so its '
                                  'start and end show on the wire: <error>')
    text = 'Removed shaping that no live migration owned: <sessions>'
    node = _log_calls('nova_stealth.virt.node')
    assert any(_matches(t, text) for t in node[('WARNING', False)])
    assert not any(_matches(t, text) for t in node.get(('ERROR', False), []))
    assert not any(_matches(t, text) for templates in
                   _log_calls('nova_stealth.statefile').values()
                   for t in templates)


def test_the_design_lists_the_layers_the_test_holds():
    text = (DOC / 'reference' / 'design.rst').read_text()
    listed = re.search(r'\n1\. the leaves.*?\n\n', text, re.S).group(0)
    items = re.split(r'\n\d\. ', '\n' + listed.strip())[1:]
    layers = [sorted(re.findall(r'``([a-z_.]+)``', item)) for item in items]
    assert layers == [sorted(names) for names in test_layers.LAYERS]


def test_docs_build_without_warnings(tmp_path):
    # HTML and the man pages, sharing one doctree cache, as tox -e docs.
    doctrees = tmp_path / 'doctrees'
    for builder in ('html', 'man'):
        done = subprocess.run(
            [sys.executable, '-m', 'sphinx', '-W', '-q', '-b', builder,
             '-d', str(doctrees), str(DOC), str(tmp_path / builder)],
            capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    pages = sorted(p.name for p in (tmp_path / 'man').iterdir())
    assert pages == sorted('%s.1' % name for name in COMMANDS)
