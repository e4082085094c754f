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
"""The commands refuse bad arguments with one line, never a traceback."""

import signal

import pytest

from nova_stealth.cmd import audit
from nova_stealth.cmd import chaff_responder
from nova_stealth.cmd import cleanup
from nova_stealth.cmd import testbed

CAPTURE = 'capture.pcap'

BAD_ARGUMENTS = [
    (audit, ['--out', 'o', '--min-packets', '-3', CAPTURE],
     'argument --min-packets: -3 is out of range: must be at least 1'),
    (audit, ['--out', 'o', '--folds', '1', CAPTURE],
     'argument --folds: 1 is out of range: must be at least 2'),
    (audit, ['--out', 'o', '--burst-gap-ms', 'inf', CAPTURE],
     "argument --burst-gap-ms: 'inf' is not finite"),
    (audit, ['--out', 'o', '--burst-gap-ms', 'nan', CAPTURE],
     "argument --burst-gap-ms: 'nan' is not finite"),
    (audit, ['--out', 'o', '--seed', 'x', CAPTURE],
     "argument --seed: 'x' is not an integer"),
    (audit, ['--out', '/proc/version/out', CAPTURE],
     "nova-stealth-audit: [Errno 20] Not a directory: '/proc/version/out'"),
    (audit, ['--out', 'o', '--model', '/proc/version', CAPTURE],
     'nova-stealth-audit: /proc/version: not a model written by '
     '--save-model'),
    (testbed, ['run', '--speeds', '4,x'], "argument --speeds: 'x' is not a"),
    (testbed, ['run', '--speeds', '0'], 'argument --speeds: 0.0 is out'),
    (testbed, ['run', '--runs', '0'], 'argument --runs: 0 is out of range'),
    (testbed, ['run', '--modes', 'native,buflo'],
     "argument --modes: 'native,buflo': choose from constant, "),
    (testbed, ['run', '--guest', 'floppy'],
     "argument --guest: 'floppy': choose from linux, ram"),
    (testbed, ['run', '--loads', 'S,XL'],
     "argument --loads: 'S,XL': choose from H, M, S"),
    (testbed, ['run', '--schedule', 'steps'],
     "argument --schedule: invalid choice: 'steps'"),
    (testbed, ['run', '--memory-mib', '-1'],
     'argument --memory-mib: -1 is out of range'),
    (testbed, ['run', '--out', '/proc/version/out'],
     "nova-stealth-testbed: [Errno 20] Not a directory: "
     "'/proc/version/out'"),
    (chaff_responder, ['--ports', '61500-61503', '--peer-network',
                       '127.0.0.1/33'], "'127.0.0.1/33' is not a network"),
    (chaff_responder, ['--ports', '61500-x', '--peer-network',
                       '198.18.0.0/24'], "'61500-x'"),
    (cleanup, ['--config-file', '/nonexistent/nova.conf'],
     'nova-stealth-cleanup: Failed to find some config files: '
     '/nonexistent/nova.conf'),
    (cleanup, ['--config-file', '{bad_conf}'],
     'nova-stealth-cleanup: Invalid value nan for option [stealth] '
     'min_rate: must be a finite number'),
]


@pytest.mark.parametrize('command,argv,error', BAD_ARGUMENTS)
def test_bad_arguments_give_one_line(command, argv, error, capsys, tmp_path,
                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad_conf = tmp_path / 'bad.conf'
    bad_conf.write_text('[stealth]\nmin_rate = nan\n')
    argv = [arg.format(bad_conf=bad_conf) for arg in argv]
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        status = command.main(argv)
    except SystemExit as e:
        status = e.code
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    err = capsys.readouterr().err
    assert status == 2
    assert 'Traceback' not in err
    assert error in err.strip().splitlines()[-1]
    # Nothing was run: no output directory, no namespaces, no report.
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bad.conf']
