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
"""Payload that looks like TLS 1.2/1.3 application data on the wire.

Records are a 5-byte header (type 23, version 3.3, length) and random
bytes, as encrypted application data is. Sizes follow what TLS stacks
send for bulk data: mostly full records (16 KiB plus 22 bytes of AEAD
overhead), some shorter ones at the end of writes.
"""

import os
import random
import struct

FULL_RECORD = 16384 + 22
HEADER = struct.Struct('!BHH')
RANDOM_BYTES = 1 << 20


class RecordSource(object):
    """Makes records from one shared buffer of random bytes.

    Slicing a random buffer at random offsets costs no allocation per
    record and looks as random on the wire as fresh bytes.
    """

    def __init__(self, rng=None):
        self.rng = rng or random.Random()
        self.noise = memoryview(os.urandom(RANDOM_BYTES))

    def size(self):
        """A record length: full most of the time, else 1 byte to full."""
        if self.rng.random() < 0.8:
            return FULL_RECORD
        return self.rng.randint(1, FULL_RECORD)

    def record(self, size=None):
        """One record of ``size`` payload bytes (random if None)."""
        size = size or self.size()
        start = self.rng.randrange(0, RANDOM_BYTES - size)
        return HEADER.pack(23, 0x0303, size) + self.noise[start:start + size]
