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
"""Sphinx configuration of nova_stealth's documentation.

``tox -e docs`` builds the HTML pages and the man pages (``-b man``), both
with ``-W``: a warning fails the build.
"""

extensions = [
    'openstackdocstheme',
    'oslo_config.sphinxext',
]

# openstackdocstheme: the version comes from pbr (openstackdocs_auto_version),
# the repository and the bug tracker are this project's.
openstackdocs_repo_name = 'nova_stealth/nova_stealth'
openstackdocs_bug_project = 'nova_stealth'
openstackdocs_bug_tag = 'doc'
openstackdocs_auto_name = False

project = 'nova_stealth'
copyright = '2026, The nova_stealth Authors'
master_doc = 'index'
exclude_patterns = []
pygments_style = 'native'
html_theme = 'openstackdocs'

# One man page per console script of setup.cfg (section 1: user commands),
# built from the page of that command in cli/.
_COMMANDS = [
    ('nova-stealth-audit',
     "run the stealth migration paper's attacks over packet captures"),
    ('nova-stealth-chaff-responder',
     'serve chaff streams to the other compute nodes'),
    ('nova-stealth-cleanup',
     'remove the shaping and port leases nova_stealth left on a node'),
    ('nova-stealth-status',
     "check a compute node's nova_stealth set-up (upgrade check)"),
    ('nova-stealth-testbed',
     'live-migrate real QEMU VMs between namespaced hosts and score them'),
]
man_pages = [('cli/%s' % name, name, summary,
              ['The nova_stealth Authors'], 1)
             for name, summary in _COMMANDS]
