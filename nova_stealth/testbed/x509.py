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
"""x509 credentials made with the openssl command, in QEMU's layout.

A directory as QEMU's ``tls-creds-x509`` object and the chaff read it:
``ca-cert.pem``, ``server-cert.pem``/``server-key.pem`` and
``client-cert.pem``/``client-key.pem``, all signed by one CA made here.
For the testbed and the tests: an operator uses the CA of the cloud.
"""

import os
import subprocess

from nova_stealth.chaff import tls

DAYS = '30'
#: The common name of a host's certificates (QEMU's tls-hostname).
HOST_NAME = 'compute'


def _openssl(*args):
    subprocess.run(('openssl',) + args, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def _key(path):
    _openssl('genpkey', '-algorithm', 'EC', '-pkeyopt',
             'ec_paramgen_curve:P-256', '-out', path)
    os.chmod(path, 0o600)


def make_ca(directory, name='nova-stealth test CA'):
    """A self-signed CA in ``directory`` (ca-cert.pem, ca-key.pem)."""
    os.makedirs(directory, exist_ok=True)
    key = os.path.join(directory, 'ca-key.pem')
    _key(key)
    _openssl('req', '-x509', '-new', '-key', key, '-subj', '/CN=' + name,
             '-days', DAYS, '-addext', 'basicConstraints=critical,CA:TRUE',
             '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
             '-out', os.path.join(directory, tls.CA))
    return directory


def issue(ca_dir, cert_path, key_path, name, usage):
    """A certificate for ``name`` signed by the CA in ``ca_dir``.

    :param usage: ``serverAuth`` or ``clientAuth``
    """
    _key(key_path)
    request = cert_path + '.csr'
    extensions = cert_path + '.ext'
    with open(extensions, 'w') as ext:
        ext.write('basicConstraints=CA:FALSE\nextendedKeyUsage=%s\n'
                  'keyUsage=digitalSignature,keyEncipherment\n' % usage)
    _openssl('req', '-new', '-key', key_path, '-subj', '/CN=' + name,
             '-out', request)
    _openssl('x509', '-req', '-in', request, '-CA',
             os.path.join(ca_dir, tls.CA), '-CAkey',
             os.path.join(ca_dir, 'ca-key.pem'), '-CAcreateserial',
             '-days', DAYS, '-extfile', extensions, '-out', cert_path)
    os.unlink(request)
    os.unlink(extensions)


def make_credentials(directory, ca_dir, name=HOST_NAME):
    """QEMU's credential directory for one host, signed by ``ca_dir``.

    Returns ``directory``, which then holds the CA's certificate and the
    host's server and client certificates and keys.
    """
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(ca_dir, tls.CA)) as ca, open(
            os.path.join(directory, tls.CA), 'w') as copy:
        copy.write(ca.read())
    issue(ca_dir, os.path.join(directory, tls.SERVER_CERT),
          os.path.join(directory, tls.SERVER_KEY), name, 'serverAuth')
    issue(ca_dir, os.path.join(directory, tls.CLIENT_CERT),
          os.path.join(directory, tls.CLIENT_KEY), name, 'clientAuth')
    return directory
