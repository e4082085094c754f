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
"""A TCP client that sends like QEMU's rate limiter, as a process of its own.

Every period it hands the period's budget to the kernel in one send, then
sleeps to the next deadline. It runs apart from the test process, as QEMU
does, so that the test's own threads cannot delay its bursts.

Usage: python -m tests.functional.paced_sender ADDRESS PORT BUDGET PERIOD
It prints ``connected`` once connected and stops, closing normally, on
SIGTERM.
"""

import os
import signal
import socket
import sys
import time

#: Not in Python's socket module; root may exceed net.core.wmem_max.
SO_SNDBUFFORCE = getattr(socket, 'SO_SNDBUFFORCE', 32)


def main(argv):
    address, port, budget, period = (argv[0], int(argv[1]), int(argv[2]),
                                     float(argv[3]))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    family = socket.AF_INET6 if ':' in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Room for a whole period's budget in the kernel, so that one
        # send hands it over and the burst leaves at the link's pace.
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 * budget)
        sock.connect((address, port))
        print('connected', flush=True)
        chunk = os.urandom(budget)
        deadline = time.monotonic()
        while not stopping:
            try:
                sock.sendall(chunk)
            except InterruptedError:
                continue
            except OSError:
                return 1
            deadline += period
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
