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
"""nova-stealth-status with the real privsep daemon, in a test namespace.

The daemon starts inside the source namespace through ``helper_command``
(read from the nova.conf the command is given), and the egress check reads
the qdiscs of ``s0`` there, the device of the route to the peer.
"""

import json

import pytest

from nova_stealth.cmd import status
from nova_stealth import exception
from tests.functional import conftest
from tests.functional import netlab

QDISCS = {
    'kernel default': [],
    'tbf root': [['qdisc', 'add', 'dev', 's0', 'root', 'handle', '10:',
                  'tbf', 'rate', '1gbit', 'burst', '1mb', 'latency',
                  '50ms']],
    'bfifo root': [['qdisc', 'add', 'dev', 's0', 'root', 'handle', '30:',
                    'bfifo', 'limit', '300000']],
    'pfifo_fast root': [['qdisc', 'add', 'dev', 's0', 'root', 'handle',
                         '40:', 'pfifo_fast']],
}


def run_checks(tmp_path, capsys, link, daemon_ns=None, **stealth):
    """The results of ``upgrade check`` on the source namespace's node.

    :param daemon_ns: where the privsep daemon starts (the source's)
    :returns: the exit status, {check: (code, details)} and stderr
    """
    options = {'chaff_peers': link.DST_V4, 'chaff_enabled': 'false'}
    options.update(stealth)
    conf = tmp_path / 'nova.conf'
    conf.write_text(
        '[DEFAULT]\ncompute_driver = stealth.StealthLibvirtDriver\n'
        '[libvirt]\nlive_migration_with_native_tls = true\n'
        '[nova_stealth_privileged]\nhelper_command = %s\n[stealth]\n' % (
            conftest.privsep_helper_in(daemon_ns or link.src)) +
        ''.join('%s = %s\n' % item for item in options.items()))
    (tmp_path / 'rootwrap.d').mkdir(exist_ok=True)
    (tmp_path / 'rootwrap.d' / 'nova-stealth.filters').write_text(
        '[Filters]\n')
    code = status.main(['--config-file', str(conf), 'upgrade', 'check',
                        '--json'])
    out = capsys.readouterr()
    checks = json.loads(out.out)['checks']
    return code, {c['check']: (c['result'], c['details'])
                  for c in checks}, out.err


def test_a_ready_node_passes(tmp_path, capsys, link):
    code, results, _err = run_checks(tmp_path, capsys, link)
    assert results['Privsep daemon'] == (0, None)
    assert results['Egress qdiscs'] == (0, (
        's0 (route to %s): no qdisc an operator configured' % link.DST_V4))
    # No placement here: the cloud's checks say so; every other passes.
    cloud = ('Stealth peers', 'Flavors')
    assert results['Stealth peers'][1].startswith('not checked: ')
    assert code == 1
    assert all(result == 0 for name, (result, _) in results.items()
               if name not in cloud), results


def test_a_helper_that_fails_is_named(tmp_path, capsys, link):
    # The daemon's namespace does not exist.
    missing = netlab.unique_name('nsgone')
    code, results, _err = run_checks(tmp_path, capsys, link, missing,
                                     egress_device='s0')
    assert code == 2
    result, details = results['Privsep daemon']
    assert result == 2
    assert 'exited non-zero (255)' in details
    assert 'ip netns exec %s ' % missing in details
    assert results['Egress qdiscs'][0] == 1
    assert results['Egress qdiscs'][1].startswith(
        'not checked: the privsep daemon did not start')


@pytest.mark.parametrize('name,allow', [
    ('kernel default', False), ('tbf root', False), ('tbf root', True),
    ('bfifo root', False), ('pfifo_fast root', False)])
def test_the_qdisc_check_says_what_the_shaper_does(tmp_path, capsys, link,
                                                   shaper, name, allow):
    for command in QDISCS[name]:
        netlab.run('tc', '-n', link.src, *command)
    code, results, _err = run_checks(
        tmp_path, capsys, link, allow_replace_root_qdisc=str(allow).lower())
    result, details = results['Egress qdiscs']
    assert details.startswith('s0 (route to %s): ' % link.DST_V4)
    shaper.allow_replace_root_qdisc = allow
    try:
        shaper.install('mig', link.DST_V4, 61001, 4.0)
    except exception.ExistingRootQdisc as e:
        refused = str(e)
    else:
        refused = None
        shaper.remove('mig')
    assert (result == 2) == (refused is not None), details
    if refused:
        assert details.endswith(refused)
    else:
        assert result == 0, details
    if name == 'tbf root':
        assert refused is None if allow else 'tbf 10:0' in refused
        if allow:
            assert details.endswith('qdisc tbf 10:0 is replaced during '
                                    'migrations and put back '
                                    '(allow_replace_root_qdisc)')


def test_a_migration_in_progress_is_fine(tmp_path, capsys, link, shaper):
    shaper.install('mig', link.DST_V4, 61001, 4.0)
    try:
        code, results, _err = run_checks(tmp_path, capsys, link)
    finally:
        shaper.remove('mig')
    assert results['Egress qdiscs'] == (0, (
        "s0 (route to %s): nova_stealth's tree is installed" % link.DST_V4))


def test_a_device_that_is_not_there_fails(tmp_path, capsys, link):
    code, results, _err = run_checks(tmp_path, capsys, link,
                                     egress_device='s9')
    assert results['Egress qdiscs'] == (
        2, "s9 (egress_device): no network device 's9'")


def test_no_device_to_check_is_a_warning(tmp_path, capsys, link):
    code, results, _err = run_checks(tmp_path, capsys, link, chaff_peers='')
    assert results['Egress qdiscs'] == (1, (
        'not checked: neither [stealth] egress_device nor chaff_peers says '
        'which device migrations leave by'))
