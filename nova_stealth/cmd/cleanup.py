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
"""nova-stealth-cleanup: remove all shaping and leases nova_stealth left.

For a compute node whose nova-compute is stopped (devstack's unstack, or
by hand after a crash): nova-compute's own start does the same for its
host. Reads ``[stealth]`` from the given configuration files.
"""

import argparse
import os
import sys

from oslo_config import cfg

from nova_stealth.cmd import arguments
from nova_stealth import conf as stealth_conf
from nova_stealth import exception
from nova_stealth import privileged
from nova_stealth.virt import node


PROG = 'nova-stealth-cleanup'


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Remove the shaping and port leases every nova-compute '
                    'of this node left (run with nova-compute stopped).')
    arguments.add_version(parser)
    parser.add_argument('--config-file', action='append', default=[],
                        dest='config_files', metavar='PATH',
                        help='nova.conf or nova-cpu.conf (repeat)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        group = stealth_conf.load_group(args.config_files)
    except (exception.InvalidOption, cfg.Error) as e:
        return arguments.fail(PROG, e)
    if group.backend == 'pyroute2' and os.geteuid() == 0:
        # Already root: change traffic control in this process rather
        # than through a privsep daemon.
        privileged.net_admin.set_client_mode(False)
    removed, ended = [], {}
    if os.path.isdir(group.state_dir):
        for host in sorted(os.listdir(group.state_dir)):
            if host != node.KERNELS_DIR and os.path.isdir(
                    os.path.join(group.state_dir, host)):
                host_removed, host_ended = node.StealthNode(
                    group, host).sweep()
                removed += host_removed
                ended.update(host_ended)
    print('removed shaping of %d migrations, ended %d port leases' % (
        len(removed), len(ended)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
