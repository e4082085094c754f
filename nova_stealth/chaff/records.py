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
"""What chaff streams write into their TLS connections.

Random bytes in writes sized as bulk transfers write them: mostly a full
TLS record's worth (16 KiB, which TLS sends as one record of 16 KiB plus
its AEAD overhead), some shorter ones. TLS frames and encrypts them, so on
the wire they are records of application data like the migration's.
"""

import os
import random

#: The most plaintext one TLS record carries.
FULL_RECORD = 16384
RANDOM_BYTES = 1 << 20


class RecordSource(object):
    """Makes writes from one shared buffer of random bytes.

    Slicing a random buffer at random offsets costs no allocation per
    write; encrypted, it looks like any other data.
    """

    def __init__(self, rng=None):
        self.rng = rng or random.Random()
        self.noise = memoryview(os.urandom(RANDOM_BYTES))

    def size(self):
        """A write's length: a full record most of the time, else less."""
        if self.rng.random() < 0.8:
            return FULL_RECORD
        return self.rng.randint(1, FULL_RECORD)

    def chunk(self, size=None):
        """``size`` random bytes (a random size if None)."""
        size = size or self.size()
        start = self.rng.randrange(0, RANDOM_BYTES - size)
        return self.noise[start:start + size]
