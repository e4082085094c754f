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
"""nova-stealth-chaff-responder: answer chaff streams from known peers."""

import argparse
import asyncio
import json
import signal
import sys

from nova_stealth.chaff import responder as responder_lib
from nova_stealth.cmd import arguments
from nova_stealth.conf import chaff as chaff_conf


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='nova-stealth-chaff-responder',
        description='Serve chaff streams to the peers of this compute node.')
    parser.add_argument('--address', default='::',
                        help='address to listen on (default all)')
    parser.add_argument('--ports', required=True, type=_ports,
                        help='ports, as LOW-HIGH or a comma-separated list')
    # A host address with a prefix (devstack's $HOST_IP/24) is its network.
    parser.add_argument('--peer-network', action='append', required=True,
                        dest='peer_networks', metavar='CIDR',
                        type=arguments.argument_type(chaff_conf.peer_network),
                        help='a network peers may connect from (repeat)')
    parser.add_argument('--max-connections', type=int, default=128)
    parser.add_argument('--max-per-peer', type=int, default=16)
    parser.add_argument('--peer-rate-mib', type=float, default=4.0,
                        help='most MiB/s one peer receives (default 4)')
    return parser.parse_args(argv)


def _ports(text):
    try:
        return parse_ports(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            '%r: ports are LOW-HIGH or a comma-separated list' % text)


def parse_ports(text):
    """'61000-61003' or '61000,61005' as a list of ports."""
    ports = []
    for part in text.split(','):
        low, _, high = part.partition('-')
        ports.extend(range(int(low), int(high or low) + 1))
    if not ports or not all(0 < port < 65536 for port in ports):
        raise ValueError('bad port list %r' % text)
    return ports


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    responder = responder_lib.ChaffResponder(
        args.address, args.ports, args.peer_networks,
        max_connections=args.max_connections,
        max_per_peer=args.max_per_peer,
        peer_rate=int(args.peer_rate_mib * (1 << 20)))

    async def serve():
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await responder.start()
        print('ready', flush=True)
        await stopping.wait()
        await responder.close()

    asyncio.run(serve())
    print(json.dumps({'stats': dict(responder.stats),
                      'sent': dict(responder.sent)}), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
