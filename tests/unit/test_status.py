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
"""nova-stealth-status upgrade check, on real files and a real listener."""

import socket

import pytest

from nova_stealth.cmd import status

GOOD = {'DEFAULT': {'compute_driver': 'stealth.StealthLibvirtDriver'},
        'libvirt': {'live_migration_bandwidth': '0'},
        'stealth': {'chaff_peer_networks': '198.18.0.0/24'}}


@pytest.fixture
def listener():
    """A TCP socket listening on a free port (nothing connects to it)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen()
        yield sock.getsockname()[1]


def check(tmp_path, capsys, sections, with_filter=True):
    """Write nova.conf; return the exit status and the report."""
    lines = []
    for section, options in sections.items():
        lines.append('[%s]' % section)
        lines += ['%s = %s' % item for item in options.items()]
    (tmp_path / 'nova.conf').write_text('\n'.join(lines) + '\n')
    if with_filter:
        (tmp_path / 'rootwrap.d').mkdir()
        (tmp_path / 'rootwrap.d' / 'nova-stealth.filters').write_text(
            '[Filters]\n')
    code = status.main(['--config-file', str(tmp_path / 'nova.conf'),
                        'upgrade', 'check'])
    return code, capsys.readouterr().out


def flat(out):
    """The report's text without its table's borders and line breaks."""
    return ' '.join(out.replace('|', ' ').split())


def with_options(**stealth):
    sections = {name: dict(options) for name, options in GOOD.items()}
    sections['stealth'].update(stealth)
    return sections


def test_a_ready_node_passes(tmp_path, capsys, listener):
    code, out = check(tmp_path, capsys,
                      with_options(chaff_ports=str(listener)))
    assert code == 0, out
    assert out.count('Result: Success') == 5


def test_no_responder_is_a_warning(tmp_path, capsys, listener):
    code, out = check(tmp_path, capsys,
                      with_options(chaff_ports='%d-%d' % (listener,
                                                          listener + 1)))
    assert code == 1, out
    assert 'nothing listens on chaff ports %d here' % (listener + 1) in out


def test_a_bad_option_fails_naming_it(tmp_path, capsys, listener):
    code, out = check(tmp_path, capsys, with_options(
        chaff_ports=str(listener), chaff_max_rate='nan'))
    assert code == 2, out
    assert '[stealth] chaff_max_rate' in flat(out)


def test_a_bad_port_range_fails_the_checks_that_read_it(tmp_path, capsys):
    code, out = check(tmp_path, capsys, with_options(chaff_ports='0-3'))
    assert code == 2, out
    text = flat(out)
    assert 'Traceback' not in out
    assert 'option [stealth] chaff_ports' in text
    assert text.count('not checked: Value for option chaff_ports') == 1


def test_qemus_limiter_fails(tmp_path, capsys, listener):
    sections = with_options(chaff_ports=str(listener))
    sections['libvirt']['live_migration_bandwidth'] = '10'
    code, out = check(tmp_path, capsys, sections)
    assert code == 2, out
    assert 'live_migration_bandwidth is 10' in flat(out)


def test_a_missing_filter_and_the_plain_driver(tmp_path, capsys, listener):
    sections = with_options(chaff_ports=str(listener))
    sections['DEFAULT']['compute_driver'] = 'libvirt.LibvirtDriver'
    code, out = check(tmp_path, capsys, sections, with_filter=False)
    assert code == 2, out
    text = flat(out)
    assert 'compute_driver is libvirt.LibvirtDriver' in text
    assert 'no rootwrap.d/nova-stealth.filters' in text
