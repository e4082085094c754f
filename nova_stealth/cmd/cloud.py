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
"""What the cloud says of a compute node's peers, for nova-stealth-status.

Placement's resource providers that carry the trait ``CUSTOM_NOVA_STEALTH``
(the compute nodes whose nova-compute shapes migrations) and the compute
API's flavors that require it. Both are asked through keystoneauth with
nova.conf's ``[placement]`` credentials, the nova service user's, as
nova-compute itself reaches placement.
"""

from keystoneauth1 import adapter
from keystoneauth1 import loading as ks_loading

from nova_stealth import virt

GROUP = 'placement'
#: The flavor extra spec (or image property) that makes the scheduler
#: pick only nodes with the trait.
REQUIRED_SPEC = 'trait:%s' % virt.TRAIT
#: ``required=`` on GET /resource_providers.
PLACEMENT_VERSION = '1.18'
#: Flavors with their extra specs in GET /flavors/detail.
COMPUTE_VERSION = '2.61'


class NotConfigured(Exception):
    """nova.conf has no credentials to ask the cloud with."""


def register_opts(conf):
    """Register Nova's ``[placement]`` keystoneauth options on ``conf``."""
    ks_loading.register_session_conf_options(conf, GROUP)
    ks_loading.register_auth_conf_options(conf, GROUP)
    ks_loading.register_adapter_conf_options(conf, GROUP)
    # Nova's defaults for its placement client.
    conf.set_default('service_type', 'placement', group=GROUP)
    conf.set_default('valid_interfaces', ['internal', 'public'], group=GROUP)


def _session(conf):
    auth = ks_loading.load_auth_from_conf_options(conf, GROUP)
    if auth is None:
        raise NotConfigured('[placement] has no auth_type, so placement '
                            'and the compute API cannot be asked')
    return ks_loading.load_session_from_conf_options(conf, GROUP,
                                                     auth=auth), auth


def compute_providers(conf):
    """``{name: has the trait}`` of placement's root resource providers.

    :raises NotConfigured: without ``[placement]`` credentials
    :raises keystoneauth1.exceptions.ClientException: when placement
        cannot be reached or refuses
    """
    session, auth = _session(conf)
    placement = ks_loading.load_adapter_from_conf_options(
        conf, GROUP, session=session, auth=auth)

    def names(**params):
        providers = placement.get('/resource_providers', params=params,
                                  microversion=PLACEMENT_VERSION).json()
        return {p['name'] for p in providers['resource_providers']
                if p.get('parent_provider_uuid') is None}

    stealth = names(required=virt.TRAIT)
    return {name: name in stealth for name in names() | stealth}


def flavors_not_requiring_the_trait(conf):
    """Names of the flavors (public and private) that do not require it.

    :raises NotConfigured: without ``[placement]`` credentials
    :raises keystoneauth1.exceptions.ClientException: when the compute
        API cannot be reached or refuses (listing private flavors needs
        the admin role)
    """
    session, auth = _session(conf)
    group = conf[GROUP]
    compute = adapter.Adapter(session, auth=auth, service_type='compute',
                              interface=group.valid_interfaces,
                              region_name=group.region_name)
    flavors = compute.get('/flavors/detail', params={'is_public': 'None'},
                          microversion=COMPUTE_VERSION).json()['flavors']
    return sorted(f['name'] for f in flavors
                  if (f.get('extra_specs') or {}).get(REQUIRED_SPEC) !=
                  'required')
