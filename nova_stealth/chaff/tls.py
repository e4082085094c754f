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
"""TLS for chaff streams: mutual TLS with the migration's credentials.

Chaff is meant to be the same kind of traffic as a migration over QEMU's
native TLS, so it uses the same x509 credentials in the same layout as
QEMU's ``tls-creds-x509`` directory (libvirt's
``default_tls_x509_cert_dir``, ``/etc/pki/qemu``): ``ca-cert.pem``,
``server-cert.pem`` and ``server-key.pem`` for the responder,
``client-cert.pem`` and ``client-key.pem`` for the sender. Each end
requires the other's certificate to be signed by the CA.

And it shakes hands as QEMU does: both ends are GnuTLS sessions
(:mod:`.gnutls`) made as QEMU makes its own, with the priority string
QEMU uses (``chaff_tls_priority``; QEMU's built-in default is
``NORMAL``), so the client hello, the server's answer and the handshake's
record sizes are a migration's. Where libgnutls cannot be loaded, OpenSSL
stands in, with an error logged: its hello is OpenSSL's, which an
observer who fingerprints hellos tells from QEMU's
(``benchmarks/client_hello.py`` prints them field by field).
"""

import os
import ssl
import warnings

from oslo_log import log as logging

from nova_stealth.chaff import gnutls
from nova_stealth import exception

LOG = logging.getLogger(__name__)

CA = 'ca-cert.pem'
SERVER_CERT, SERVER_KEY = 'server-cert.pem', 'server-key.pem'
CLIENT_CERT, CLIENT_KEY = 'client-cert.pem', 'client-key.pem'
#: QEMU's built-in priority string (its ``tls-priority`` build option),
#: what its tls-creds objects use unless given a ``priority``.
QEMU_PRIORITY = 'NORMAL'

#: GnuTLS 3.7's NORMAL suites for TLS 1.2 and below, in its order, in
#: OpenSSL's names. OpenSSL puts its TLS 1.3 suites first as GnuTLS does
#: (all but TLS_AES_128_CCM_SHA256, which Python cannot add) and adds the
#: renegotiation SCSV. Only TLS 1.3 is ever negotiated (the responder
#: accepts nothing else), so the older suites are offered, never used.
GNUTLS_NORMAL_TLS12 = ':'.join([
    'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305',
    'ECDHE-ECDSA-AES256-CCM', 'ECDHE-ECDSA-AES256-SHA',
    'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES128-CCM',
    'ECDHE-ECDSA-AES128-SHA', 'ECDHE-RSA-AES256-GCM-SHA384',
    'ECDHE-RSA-CHACHA20-POLY1305', 'ECDHE-RSA-AES256-SHA',
    'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-SHA',
    'AES256-GCM-SHA384', 'AES256-CCM', 'AES256-SHA', 'AES128-GCM-SHA256',
    'AES128-CCM', 'AES128-SHA', 'DHE-RSA-AES256-GCM-SHA384',
    'DHE-RSA-CHACHA20-POLY1305', 'DHE-RSA-AES256-CCM', 'DHE-RSA-AES256-SHA',
    'DHE-RSA-AES128-GCM-SHA256', 'DHE-RSA-AES128-CCM', 'DHE-RSA-AES128-SHA',
])


def _paths(directory, *names):
    paths = [os.path.join(directory, name) for name in names]
    for path in paths:
        if not os.access(path, os.R_OK):
            raise exception.InvalidOption(
                option='chaff_tls_x509_dir', value=directory,
                reason='cannot read %s (the directory holds QEMU\'s x509 '
                       'credentials: %s)' % (path, ', '.join(names)))
    return paths


def _load(context, directory, cert, key):
    cert_path, key_path, ca_path = _paths(directory, cert, key, CA)
    try:
        context.load_cert_chain(cert_path, key_path)
        context.load_verify_locations(ca_path)
    except (ssl.SSLError, ValueError) as e:
        raise exception.InvalidOption(
            option='chaff_tls_x509_dir', value=directory,
            reason='cannot load its credentials: %s' % e) from e
    context.verify_mode = ssl.CERT_REQUIRED
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    return context


def openssl_server_context(directory):
    """An OpenSSL responder context: the stand-in where GnuTLS is missing.

    TLS 1.3 only; client certificates required.

    :raises nova_stealth.exception.InvalidOption: naming the directory
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return _load(context, directory, SERVER_CERT, SERVER_KEY)


def openssl_client_context(directory):
    """An OpenSSL sender context, verifying the responder against the CA.

    Its hello is shaped like GnuTLS's ``NORMAL`` as far as Python's ssl
    module lets it be (versions, suites and their order; not groups,
    signature algorithms or extensions). The stand-in where GnuTLS is
    missing, and the tests' blocking clients.

    Hostnames are not checked (chaff peers are addressed by IP and any
    holder of a certificate of the CA may answer chaff); the CA is.

    :raises nova_stealth.exception.InvalidOption: naming the directory
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    # Offer 1.3 to 1.0 as GnuTLS does; responders accept only 1.3, and a
    # server that offers less still needs a certificate of the CA.
    with warnings.catch_warnings():
        # Python deprecates offering TLS 1.0; it is offered, never used.
        warnings.simplefilter('ignore', DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers(GNUTLS_NORMAL_TLS12)
    return _load(context, directory, CLIENT_CERT, CLIENT_KEY)


def check_priority(priority):
    """Check that GnuTLS reads ``priority``; its version, or None.

    None, with an error logged, where libgnutls cannot be loaded (chaff
    then speaks OpenSSL).

    :raises nova_stealth.exception.InvalidOption: naming
        chaff_tls_priority
    """
    try:
        _check_priority(priority)
    except gnutls.Unavailable as e:
        _log_stand_in(e)
        return None
    return gnutls.version()


def _check_priority(priority):
    """:raises gnutls.Unavailable: or InvalidOption naming the option"""
    try:
        gnutls.check_priority(priority)
    except ValueError as e:
        raise exception.InvalidOption(
            option='chaff_tls_priority', value=priority,
            reason='GnuTLS cannot read it: %s' % e) from e


def _gnutls_context(directory, priority, server_side):
    names = (SERVER_CERT, SERVER_KEY) if server_side else (CLIENT_CERT,
                                                           CLIENT_KEY)
    cert_path, key_path, ca_path = _paths(directory, *(names + (CA,)))
    _check_priority(priority)
    try:
        credentials = gnutls.Credentials(ca_path, cert_path, key_path)
    except ssl.SSLError as e:
        raise exception.InvalidOption(
            option='chaff_tls_x509_dir', value=directory,
            reason='cannot load its credentials: %s' % e) from e
    return gnutls.GnutlsContext(credentials, server_side, priority)


def _log_stand_in(error):
    LOG.error('Chaff TLS is OpenSSL\'s, not QEMU\'s GnuTLS (%s): an '
              'observer who fingerprints TLS hellos tells chaff from '
              'migrations. Install libgnutls30.', error)


def _context(directory, priority, server_side):
    try:
        return _gnutls_context(directory, priority, server_side)
    except gnutls.Unavailable as e:
        _log_stand_in(e)
        return (openssl_server_context if server_side
                else openssl_client_context)(directory)


def server_context(directory, priority=QEMU_PRIORITY):
    """The responder's context: GnuTLS as QEMU's migration destination.

    Client certificates are required and must chain to the CA.

    :raises nova_stealth.exception.InvalidOption: naming the directory or
        the priority string
    """
    return _context(directory, priority, True)


def client_context(directory, priority=QEMU_PRIORITY):
    """The sender's context: GnuTLS as QEMU's migration source.

    The responder's certificate must chain to the CA; hostnames are not
    checked (chaff peers are addressed by IP and QEMU sends no server
    name either).

    :raises nova_stealth.exception.InvalidOption: naming the directory or
        the priority string
    """
    return _context(directory, priority, False)
