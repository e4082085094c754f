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
it prints one JSON line when the migration may start (with the rate the
session guarantees for the switch-over), then reads commands, one a line:
``progress BYTES`` (QEMU's remaining data), ``switchover`` (QEMU has
decided; answered with a JSON line once the rate is held) and ``end``
(QEMU says the migration is done), after which it prints a last JSON line
with what the session did. End of input or SIGTERM before ``end`` aborts
the session.
"""

import argparse
import json
import signal
import sys
import time

from oslo_config import cfg

from nova_stealth import conf as stealth_conf
from nova_stealth.engine import source
from nova_stealth import privileged


def options(args):
    """The [stealth] group the session runs with."""
    if args.schedule == 'none':
        chaff = {'chaff_enabled': False}
    else:
        chaff = {'chaff_schedule': args.schedule}
    return stealth_conf.load_group(
        [args.config_file] if args.config_file else [],
        state_dir=args.state_dir, rate_policy=args.policy,
        chaff_tls_x509_dir=args.tls_dir, chaff_peers=args.chaff_peers,
        **chaff)


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
    parser.add_argument('--chaff-peer', action='append', default=[],
                        dest='chaff_peers', metavar='ADDRESS',
                        help='another host chaff may go to (repeat)')
    parser.add_argument('--tls-dir', required=True,
                        help='x509 credentials of the chaff')
    parser.add_argument('--seed', type=int)
    args = parser.parse_args(argv)
    cfg.CONF.set_override('helper_command',
                          '%s/bin/privsep-helper' % sys.prefix,
                          group=privileged.CONFIG_SECTION)
    session = source.SourceSession(
        options(args), 'testbed-migration', args.peer, args.port,
        args.memory_bytes, seed=args.seed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        session.start()
        print(json.dumps({'ready': True,
                          'lead_s': session.chaff.schedule.lead
                          if session.chaff else 0.0,
                          'switchover_bandwidth':
                          session.switchover_bandwidth,
                          'avail_switchover_bandwidth':
                          session.avail_switchover_bandwidth,
                          'switchover_share':
                          session.group.switchover_bandwidth_share}),
              flush=True)
        switchover = follow(session)
        # The guest runs on the destination: the ticks up to now cover
        # its stop-and-copy.
        trace = session.shaper.modulator_trace(session.modulator) or {}
        session.finish()
        session.close(120.0)
        report = session.report or {}
        print(json.dumps(dict(switchover, **{
            'chaff_bytes': session.chaff_bytes,
            'tail_s': session.chaff.schedule.tail if session.chaff else 0.0,
            'modulator_error': report.get('error'),
            'ticks': report.get('ticks', 0),
            'mean_rate_mib_s': report.get('mean_rate'),
            'floor_mib_s': report.get('floor'),
            'floor_since_s': report.get('floor_since'),
            'floor_low_mib_s': report.get('floor_low'),
            'rates_since_floor': rates_since(trace,
                                             report.get('floor_since')),
        })), flush=True)
    finally:
        session.abort()


def follow(session):
    """Pass QEMU's progress to the session until ``end``.

    Returns when and at what the switch-over floor came, in seconds since
    the session's modulator started.
    """
    seen = {'floor_asked_s': None, 'switchover_s': None}
    for line in sys.stdin:
        words = line.split()
        if words == ['end']:
            return seen
        if len(words) == 2 and words[0] == 'progress':
            if session.progress(int(words[1])) and (
                    seen['floor_asked_s'] is None):
                seen['floor_asked_s'] = time.monotonic() - session.started_at
        elif words == ['switchover']:
            seen['switchover_s'] = time.monotonic() - session.started_at
            rate = session.switchover()
            print(json.dumps({'guaranteed': rate}), flush=True)
        else:
            raise SystemExit('unknown command %r: aborting' % line)
    raise SystemExit('no end: aborting')


def rates_since(trace, since):
    """The rates (MiB/s) the modulator's trace holds from ``since`` s on."""
    if since is None or not trace.get('times'):
        return []
    return [rate for at, rate in zip(trace['times'], trace['rates'])
            if at >= since]


if __name__ == '__main__':
    main()
