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
"""The source host's side of a stealthed migration, run in its namespace.

``python -m nova_stealth.testbed.agent`` runs the engine's
:class:`~nova_stealth.engine.source.SourceSession` exactly as the Nova
driver does, inside the source host's network namespace (the privsep
daemon it starts lives there too). It talks over its standard streams:
it prints one JSON line when the migration may start, reads ``end`` when
QEMU says the migration is done, and prints a last JSON line with what the
session did. End of input or SIGTERM before ``end`` aborts the session.
"""

import argparse
import json
import signal
import sys

from oslo_config import cfg

from nova_stealth import conf as stealth_conf
from nova_stealth.engine import source

PRIVSEP_GROUP = 'nova_stealth_privileged'


def options(args):
    """The [stealth] group the session runs with."""
    if args.schedule == 'none':
        chaff = {'chaff_enabled': False}
    else:
        chaff = {'chaff_schedule': args.schedule}
    return stealth_conf.load_group(
        [args.config_file] if args.config_file else [],
        state_dir=args.state_dir, rate_policy=args.policy, **chaff)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='nova-stealth-testbed-agent')
    parser.add_argument('--config-file')
    parser.add_argument('--state-dir', required=True)
    parser.add_argument('--policy', default='paper')
    parser.add_argument('--schedule', default='ramp',
                        help='chaff schedule, or none')
    parser.add_argument('--peer', required=True)
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--memory-bytes', type=int, required=True)
    parser.add_argument('--seed', type=int)
    args = parser.parse_args(argv)
    cfg.CONF.set_override('helper_command',
                          '%s/bin/privsep-helper' % sys.prefix,
                          group=PRIVSEP_GROUP)
    session = source.SourceSession(
        options(args), 'testbed-migration', args.peer, args.port,
        args.memory_bytes, seed=args.seed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        session.start()
        print(json.dumps({'ready': True,
                          'lead_s': session.chaff.schedule.lead
                          if session.chaff else 0.0}), flush=True)
        if sys.stdin.readline().strip() != 'end':
            raise SystemExit('no end: aborting')
        session.finish()
        session.close(120.0)
        report = session.report or {}
        print(json.dumps({
            'chaff_bytes': session.chaff_bytes,
            'tail_s': session.chaff.schedule.tail if session.chaff else 0.0,
            'modulator_error': report.get('error'),
            'ticks': report.get('ticks', 0),
            'mean_rate_mib_s': report.get('mean_rate'),
        }), flush=True)
    finally:
        session.abort()


if __name__ == '__main__':
    main()
