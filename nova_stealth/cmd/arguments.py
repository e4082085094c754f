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
"""What the commands share: argument types that refuse bad values.

Each type raises ``argparse.ArgumentTypeError``, so argparse prints the
usage and one line naming the argument and what is wrong, and exits with
status 2, instead of a traceback from deep inside the run.
"""

import argparse
import math
import sys

from nova_stealth import version


def integer(low, high=None):
    """An argparse type: an integer within [low, high]."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError('%r is not an integer' % text)
        _check_bounds(value, low, high)
        return value
    return parse


def number(low, high=None):
    """An argparse type: a finite number within [low, high]."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError('%r is not a number' % text)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError('%r is not finite' % text)
        _check_bounds(value, low, high)
        return value
    return parse


def _check_bounds(value, low, high):
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(
            '%s is out of range: must be at least %s%s' % (
                value, low, '' if high is None else ' and at most %s' % high))


def argument_type(parse):
    """An argparse type from ``parse``, whose ValueError says what is wrong."""
    def wrapped(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))
    return wrapped


def choices(allowed):
    """An argparse type: a comma-separated list of ``allowed`` names."""
    def parse(text):
        names = [item.strip() for item in text.split(',') if item.strip()]
        unknown = [name for name in names if name not in allowed]
        if not names or unknown:
            raise argparse.ArgumentTypeError(
                '%r: choose from %s' % (text, ', '.join(sorted(allowed))))
        return text
    return parse


def numbers(low, high=None):
    """An argparse type: a comma-separated list of finite numbers."""
    one = number(low, high)

    def parse(text):
        items = [item.strip() for item in text.split(',') if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError('%r: no numbers' % text)
        for item in items:
            one(item)
        return text
    return parse


def fail(prog, error):
    """Print ``prog: error`` on one line to stderr; return exit status 2."""
    print('%s: %s' % (prog, error), file=sys.stderr)
    return 2


def add_version(parser):
    """Give ``parser`` a ``--version`` that prints the version, exits 0."""
    parser.add_argument('--version', action='version',
                        version=version.version_string(),
                        help="print nova_stealth's version and exit")
