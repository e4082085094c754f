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
"""Options of the chaff traffic that hides where a migration starts."""

from oslo_config import cfg

from nova_stealth.conf import base

chaff_opts = [
    cfg.BoolOpt(
        'chaff_enabled',
        default=True,
        help="""
Send chaff (dummy TCP streams in their own shaping class) around each
migration so that its start and end do not show as steps in this host's
egress.
"""),
    cfg.FloatOpt(
        'chaff_budget_fraction',
        default=0.25,
        min=0.0,
        max=10.0,
        help="""
Most chaff bytes a migration may cause, as a fraction of the migration's own
bytes.
"""),
    cfg.FloatOpt(
        'chaff_max_rate',
        default=2.0,
        min=0.0,
        help='Highest total chaff rate, in MiB/s, a migration may cause.'),
]


def register_opts(conf):
    """Register the chaff options in the [stealth] group."""
    conf.register_opts(chaff_opts, group=base.stealth_group)


def list_opts():
    """Return the chaff options for the sample generator."""
    return {base.stealth_group: chaff_opts}


def validate(group):
    """Check the chaff options; their bounds are all per option."""
