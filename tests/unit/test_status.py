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

import json
import os
import socket

import pytest

from nova_stealth.cmd import status
from nova_stealth.testbed import x509

GOOD = {'DEFAULT': {'compute_driver': 'stealth.StealthLibvirtDriver'},
        'libvirt': {'live_migration_bandwidth': '0',
                    'live_migration_with_native_tls': 'true'},
        'stealth': {'chaff_peer_networks': '198.18.0.0/24'},
        # The daemon cannot start here (tests/functional starts it for
        # real, in a namespace); the checks that need it say so.
        'nova_stealth_privileged': {'helper_command': 'false'}}
#: The checks that read only files and this process's sockets.
LOCAL = ('[stealth] options', 'Driver', '[libvirt] options',
         'Rootwrap filter', 'Chaff responder', 'Chaff TLS credentials')


@pytest.fixture
def listener():
    """A TCP socket listening on a free port (nothing connects to it)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(scope='module')
def credentials(tmp_path_factory):
    """QEMU's credential directory for chaff, made with openssl."""
    root = tmp_path_factory.mktemp('pki')
    return x509.make_credentials(str(root / 'host'),
                                 x509.make_ca(str(root / 'ca')))


def check(tmp_path, capsys, sections, with_filter=True):
    """Write nova.conf, run the checks; the exit status and each result.

    :returns: (status, {check name: (code, details)})
    """
    lines = []
    for section, options in sections.items():
        lines.append('[%s]' % section)
        lines += ['%s = %s' % item for item in options.items()]
    (tmp_path / 'nova.conf').write_text('\n'.join(lines) + '\n')
    if with_filter and not (tmp_path / 'rootwrap.d').exists():
        (tmp_path / 'rootwrap.d').mkdir()
        (tmp_path / 'rootwrap.d' / 'nova-stealth.filters').write_text(
            '[Filters]\n')
    code = status.main(['--config-file', str(tmp_path / 'nova.conf'),
                        'upgrade', 'check', '--json'])
    report = json.loads(capsys.readouterr().out)
    return code, {c['check']: (c['result'], c['details'])
                  for c in report['checks']}


def with_options(credentials, **stealth):
    sections = {name: dict(options) for name, options in GOOD.items()}
    sections['stealth']['chaff_tls_x509_dir'] = credentials
    sections['stealth'].update(stealth)
    return sections


def test_a_ready_node_passes_the_local_checks(tmp_path, capsys, listener,
                                              credentials):
    code, results = check(tmp_path, capsys, with_options(
        credentials, chaff_ports=str(listener)))
    assert {name: results[name][0] for name in LOCAL} == dict.fromkeys(
        LOCAL, 0), results


def test_a_daemon_that_cannot_start_fails_naming_why(tmp_path, capsys,
                                                     listener, credentials):
    code, results = check(tmp_path, capsys, with_options(
        credentials, chaff_ports=str(listener), egress_device='s0'))
    assert code == 2
    result, details = results['Privsep daemon']
    assert result == 2
    assert 'did not start (FailedToDropPrivileges: privsep helper command ' \
        'exited non-zero (1))' in details
    assert details.endswith('as nova-compute would: false')
    # The qdiscs could not be read: said, not guessed.
    assert results['Egress qdiscs'] == (1, (
        'not checked: the privsep daemon did not start (FailedToDropPrivi'
        'leges: privsep helper command exited non-zero (1))'))


def test_the_daemon_starts_as_nova_computes_by_default(tmp_path, capsys,
                                                       credentials):
    # Without helper_command, oslo.privsep runs Nova's root helper.
    sections = with_options(credentials)
    del sections['nova_stealth_privileged']
    sections['DEFAULT']['rootwrap_config'] = '/nonexistent/rootwrap.conf'
    code, results = check(tmp_path, capsys, sections)
    assert results['Privsep daemon'][1].endswith(
        'as nova-compute would: sudo nova-rootwrap '
        '/nonexistent/rootwrap.conf privsep-helper')
    sections['workarounds'] = {'disable_rootwrap': 'true'}
    code, results = check(tmp_path, capsys, sections)
    assert results['Privsep daemon'][1].endswith(
        'as nova-compute would: sudo privsep-helper')


def test_no_responder_is_a_warning(tmp_path, capsys, listener, credentials):
    code, results = check(tmp_path, capsys, with_options(
        credentials, chaff_ports='%d-%d' % (listener, listener + 1)))
    assert results['Chaff responder'] == (1, (
        'nothing listens on chaff ports %d here: is '
        'nova-stealth-chaff-responder running?' % (listener + 1)))


def test_unreadable_credentials_fail_naming_the_file(tmp_path, capsys,
                                                     listener, credentials):
    copy = tmp_path / 'pki'
    copy.mkdir()
    for name in os.listdir(credentials):
        if name != 'client-key.pem':
            (copy / name).write_bytes(
                open(os.path.join(credentials, name), 'rb').read())
    code, results = check(tmp_path, capsys, with_options(
        str(copy), chaff_ports=str(listener)))
    result, details = results['Chaff TLS credentials']
    assert result == 2
    assert 'cannot read %s/client-key.pem' % copy in details
    # Without chaff they are not needed.
    code, results = check(tmp_path, capsys, with_options(
        str(copy), chaff_ports=str(listener), chaff_enabled='false'))
    assert results['Chaff TLS credentials'] == (0, None)


def test_a_bad_option_fails_naming_it(tmp_path, capsys, listener,
                                      credentials):
    code, results = check(tmp_path, capsys, with_options(
        credentials, chaff_ports=str(listener), chaff_max_rate='nan'))
    assert code == 2
    assert results['[stealth] options'][0] == 2
    assert '[stealth] chaff_max_rate' in results['[stealth] options'][1]


def test_a_bad_port_range_fails_the_checks_that_read_it(tmp_path, capsys,
                                                        credentials):
    code, results = check(tmp_path, capsys, with_options(
        credentials, chaff_ports='0-3'))
    assert code == 2
    assert 'option [stealth] chaff_ports' in results['[stealth] options'][1]
    assert results['Chaff responder'][1].startswith(
        'not checked: Value for option chaff_ports')


def test_qemus_limiter_fails(tmp_path, capsys, listener, credentials):
    sections = with_options(credentials, chaff_ports=str(listener))
    sections['libvirt']['live_migration_bandwidth'] = '10'
    code, results = check(tmp_path, capsys, sections)
    assert results['[libvirt] options'][0] == 2
    assert 'live_migration_bandwidth is 10' in results['[libvirt] options'][1]


def test_plain_tcp_is_a_warning_and_a_failure_when_required(
        tmp_path, capsys, listener, credentials):
    sections = with_options(credentials, chaff_ports=str(listener))
    sections['libvirt']['live_migration_with_native_tls'] = 'false'
    code, results = check(tmp_path, capsys, sections)
    result, details = results['[libvirt] options']
    assert result == 1
    assert details.startswith('[libvirt] live_migration_with_native_tls '
                              'is false')
    sections['stealth']['require_stealth'] = 'true'
    code, results = check(tmp_path, capsys, sections)
    result, details = results['[libvirt] options']
    assert result == 2
    assert 'with [stealth] require_stealth every migration' in details


def test_a_missing_filter_and_the_plain_driver(tmp_path, capsys, listener,
                                               credentials):
    sections = with_options(credentials, chaff_ports=str(listener))
    sections['DEFAULT']['compute_driver'] = 'libvirt.LibvirtDriver'
    code, results = check(tmp_path, capsys, sections, with_filter=False)
    assert code == 2
    assert 'compute_driver is libvirt.LibvirtDriver' in results['Driver'][1]
    assert results['Rootwrap filter'][0] == 2
    assert 'no rootwrap.d/nova-stealth.filters' in \
        results['Rootwrap filter'][1]


def test_without_placement_credentials_the_cloud_checks_say_so(
        tmp_path, capsys, credentials):
    code, results = check(tmp_path, capsys, with_options(
        credentials, require_stealth='true'))
    said = ('not checked: [placement] has no auth_type, so placement and '
            'the compute API cannot be asked')
    assert results['Stealth peers'] == (1, said)
    assert results['Flavors'] == (1, said)


def test_an_unreachable_placement_is_a_warning(tmp_path, capsys,
                                               credentials):
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        closed = sock.getsockname()[1]
    sections = with_options(credentials, require_stealth='true')
    sections['placement'] = {'auth_type': 'admin_token', 'token': 'admin',
                             'endpoint': 'http://127.0.0.1:%d/' % closed}
    code, results = check(tmp_path, capsys, sections)
    for name in ('Stealth peers', 'Flavors'):
        result, details = results[name]
        assert result == 1
        assert details.startswith('not checked: Unable to establish '
                                  'connection to http://127.0.0.1:%d/' %
                                  closed), details
    # Without require_stealth, flavors need not require the trait.
    del sections['stealth']['require_stealth']
    code, results = check(tmp_path, capsys, sections)
    assert results['Flavors'] == (0, None)
