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
"""nova-stealth-chaff-responder: answer chaff streams from known peers.

It reads the [stealth] options of nova.conf (``--config-file``, as
nova-compute does) and logs through oslo.log as OpenStack services do;
its flags override single options (for the testbed and tests).
"""

import argparse
import asyncio
import json
import signal
import sys

from oslo_config import cfg
from oslo_log import log as logging

from nova_stealth.chaff import responder as responder_lib
from nova_stealth.chaff import tls
from nova_stealth.cmd import arguments
from nova_stealth import conf as stealth_conf
from nova_stealth.conf import chaff as chaff_conf
from nova_stealth.conf import ports as ports_conf
from nova_stealth import exception
from nova_stealth import units

LOG = logging.getLogger(__name__)
PROG = 'nova-stealth-chaff-responder'
#: Flags and the [stealth] options they override.
OVERRIDES = {'address': 'chaff_responder_address',
             'ports': 'chaff_ports',
             'peer_networks': 'chaff_peer_networks',
             'tls_dir': 'chaff_tls_x509_dir',
             'max_connections': 'chaff_responder_max_connections',
             'max_per_peer': 'chaff_responder_max_per_peer',
             'peer_rate_mib': 'chaff_responder_peer_rate',
             'total_rate_mib': 'chaff_responder_total_rate',
             'stall_seconds': 'chaff_responder_stall_seconds',
             'stall_penalty_seconds': 'chaff_responder_stall_penalty_seconds'}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Serve chaff streams to the peers of this compute node.')
    arguments.add_version(parser)
    parser.add_argument('--config-file', action='append', default=[],
                        dest='config_files', metavar='PATH',
                        help='nova.conf or another file with a [stealth] '
                             'group (repeat; later files win)')
    parser.add_argument('--address', help='address to listen on')
    parser.add_argument('--ports', type=arguments.argument_type(_port_range),
                        help='ports, as LOW-HIGH')
    # A host address with a prefix (devstack's $HOST_IP/24) is its network.
    parser.add_argument('--peer-network', action='append',
                        dest='peer_networks', metavar='CIDR',
                        type=arguments.argument_type(chaff_conf.peer_network),
                        help='a network peers may connect from (repeat)')
    parser.add_argument('--tls-dir', metavar='DIR',
                        help='directory of the x509 credentials')
    parser.add_argument('--max-connections', type=arguments.integer(1))
    parser.add_argument('--max-per-peer', type=arguments.integer(1))
    parser.add_argument('--peer-rate-mib', type=arguments.number(0.01),
                        help='most MiB/s one peer receives')
    parser.add_argument('--total-rate-mib', type=arguments.number(0.01),
                        help='most MiB/s all peers receive')
    parser.add_argument('--stall-seconds', type=arguments.number(0.1))
    parser.add_argument('--stall-penalty-seconds',
                        type=arguments.number(0.0))
    return parser.parse_args(argv)


def _port_range(text):
    try:
        ports = ports_conf.PortRange()(text)
    except ValueError:
        ports = None
    if not ports or ports.step != 1:
        raise ValueError('%r: ports are LOW-HIGH with LOW <= HIGH' % text)
    return text


def load(argv):
    """The [stealth] group and oslo.log set up from the arguments.

    :raises nova_stealth.exception.InvalidOption: naming the bad option
    """
    args = parse_args(argv)
    conf = cfg.ConfigOpts()
    logging.register_options(conf)
    # Standard output carries 'ready' and the final counters.
    conf.set_default('use_stderr', True)
    overrides = {option: getattr(args, flag)
                 for flag, option in OVERRIDES.items()
                 if getattr(args, flag) is not None}
    group = stealth_conf.load_group(args.config_files, conf=conf,
                                    **overrides)
    logging.setup(conf, PROG)
    return group


def build(group):
    """The responder the options describe."""
    return responder_lib.ChaffResponder(
        group.chaff_responder_address, group.chaff_ports,
        group.chaff_peer_networks,
        tls.server_context(group.chaff_tls_x509_dir,
                           group.chaff_tls_priority),
        max_connections=group.chaff_responder_max_connections,
        max_per_peer=group.chaff_responder_max_per_peer,
        peer_rate=int(group.chaff_responder_peer_rate * units.MIB),
        total_rate=int(group.chaff_responder_total_rate * units.MIB),
        stall_timeout=group.chaff_responder_stall_seconds,
        stall_penalty=group.chaff_responder_stall_penalty_seconds)


def main(argv=None):
    try:
        group = load(sys.argv[1:] if argv is None else argv)
        if not group.chaff_peer_networks:
            raise exception.InvalidOption(
                option='chaff_peer_networks', value="''",
                reason='the responder would serve nobody: list the '
                       'networks of the other compute nodes')
        responder = build(group)
    except (exception.InvalidOption, cfg.Error) as e:
        print('%s: %s' % (PROG, e), file=sys.stderr)
        return 2

    async def serve():
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await responder.start()
        LOG.info('Serving chaff on [%s] ports %s to %s',
                 responder.address, ','.join(map(str, responder.ports)),
                 ', '.join(map(str, responder.networks)))
        print('ready', flush=True)
        await stopping.wait()
        await responder.close()

    asyncio.run(serve())
    LOG.info('Stopped: %s', dict(responder.stats))
    print(json.dumps({'stats': dict(responder.stats),
                      'sent': dict(responder.sent)}), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
