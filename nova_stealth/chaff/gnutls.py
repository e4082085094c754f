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
"""GnuTLS, QEMU's TLS library, behind the ssl module's SSLObject interface.

Chaff must shake hands as QEMU's migration does, and QEMU's handshake is
GnuTLS's: a session made by ``gnutls_init`` with the same priority string
and x509 credentials, on the same host's libgnutls, sends the same client
hello (versions, suites, groups, signature algorithms, extensions and
their order) and answers with the same server flight. OpenSSL cannot be
made to, so the chaff speaks GnuTLS through ctypes.

:class:`GnutlsContext` is an :class:`ssl.SSLContext` whose ``wrap_bio``
returns a :class:`GnutlsObject`, so that asyncio's own TLS machinery
(``open_connection(ssl=...)``, ``start_tls``) runs it unchanged: GnuTLS
reads from and writes to the two memory BIOs asyncio hands it, and raises
the ssl module's exceptions.
"""

import ctypes
import ctypes.util
import errno
import ssl
import threading

CLIENT, SERVER = 1 << 1, 1
CRD_CERTIFICATE = 1
X509_FMT_PEM = 1
CERT_REQUIRE = 2
SHUT_RDWR, SHUT_WR = 0, 1

E_AGAIN = -28
E_INTERRUPTED = -52
E_PREMATURE_TERMINATION = -110
#: What a peer whose certificate the CA did not sign, or that sent none,
#: ends in.
CERTIFICATE_ERRORS = frozenset((
    -348,  # GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR
    -49,   # GNUTLS_E_NO_CERTIFICATE_FOUND
    -112,  # GNUTLS_E_CERTIFICATE_REQUIRED
    -43,   # GNUTLS_E_CERTIFICATE_ERROR
))

_PUSH = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_size_t)
_PULL = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_size_t)

#: name: (result type, argument types) of the functions used.
_PROTOTYPES = {
    'gnutls_check_version': (ctypes.c_char_p, [ctypes.c_char_p]),
    'gnutls_strerror': (ctypes.c_char_p, [ctypes.c_int]),
    'gnutls_init': (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p),
                                   ctypes.c_uint]),
    'gnutls_deinit': (None, [ctypes.c_void_p]),
    'gnutls_priority_set_direct': (ctypes.c_int, [
        ctypes.c_void_p, ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_char_p)]),
    'gnutls_priority_init': (ctypes.c_int, [
        ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_char_p)]),
    'gnutls_priority_deinit': (None, [ctypes.c_void_p]),
    'gnutls_credentials_set': (ctypes.c_int, [
        ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]),
    'gnutls_certificate_allocate_credentials': (ctypes.c_int, [
        ctypes.POINTER(ctypes.c_void_p)]),
    'gnutls_certificate_free_credentials': (None, [ctypes.c_void_p]),
    'gnutls_certificate_set_x509_trust_file': (ctypes.c_int, [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]),
    'gnutls_certificate_set_x509_key_file': (ctypes.c_int, [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]),
    'gnutls_certificate_server_set_request': (None, [
        ctypes.c_void_p, ctypes.c_int]),
    'gnutls_session_set_verify_cert': (None, [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint]),
    'gnutls_transport_set_ptr': (None, [ctypes.c_void_p, ctypes.c_void_p]),
    'gnutls_transport_set_push_function': (None, [ctypes.c_void_p, _PUSH]),
    'gnutls_transport_set_pull_function': (None, [ctypes.c_void_p, _PULL]),
    'gnutls_transport_set_errno': (None, [ctypes.c_void_p, ctypes.c_int]),
    'gnutls_handshake': (ctypes.c_int, [ctypes.c_void_p]),
    'gnutls_record_send': (ctypes.c_ssize_t, [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]),
    'gnutls_record_recv': (ctypes.c_ssize_t, [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]),
    'gnutls_record_check_pending': (ctypes.c_size_t, [ctypes.c_void_p]),
    'gnutls_bye': (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    'gnutls_protocol_get_version': (ctypes.c_int, [ctypes.c_void_p]),
    'gnutls_protocol_get_name': (ctypes.c_char_p, [ctypes.c_int]),
    'gnutls_cipher_get': (ctypes.c_int, [ctypes.c_void_p]),
    'gnutls_cipher_get_name': (ctypes.c_char_p, [ctypes.c_int]),
    'gnutls_cipher_get_key_size': (ctypes.c_size_t, [ctypes.c_int]),
}

_library = None
_library_lock = threading.Lock()


class Unavailable(RuntimeError):
    """libgnutls cannot be loaded here."""


def library():
    """The process's libgnutls, its functions typed; loaded once.

    :raises Unavailable: when no libgnutls.so.30 (GnuTLS 3.x) loads
    """
    global _library
    with _library_lock:
        if _library is None:
            name = ctypes.util.find_library('gnutls') or 'libgnutls.so.30'
            try:
                lib = ctypes.CDLL(name)
                for function, (restype, argtypes) in _PROTOTYPES.items():
                    prototype = getattr(lib, function)
                    prototype.restype = restype
                    prototype.argtypes = argtypes
            except (OSError, AttributeError) as e:
                raise Unavailable('cannot load GnuTLS (%s): %s' %
                                  (name, e)) from e
            _library = lib
        return _library


def version():
    """The loaded GnuTLS's version, e.g. ``'3.7.9'``."""
    return library().gnutls_check_version(None).decode()


def check_priority(priority):
    """Raise ValueError naming where GnuTLS cannot read ``priority``."""
    lib = library()
    cache = ctypes.c_void_p()
    position = ctypes.c_char_p()
    encoded = priority.encode()
    result = lib.gnutls_priority_init(ctypes.byref(cache), encoded,
                                      ctypes.byref(position))
    if result < 0:
        at = ''
        if position.value is not None:
            at = ' at %r' % position.value.decode(errors='replace')
        raise ValueError('%s%s' % (lib.gnutls_strerror(result).decode(),
                                   at))
    lib.gnutls_priority_deinit(cache)


def _error(code, what):
    """The ssl module's exception for GnuTLS error ``code``."""
    text = '%s: %s (GnuTLS %d)' % (
        what, library().gnutls_strerror(code).decode(), code)
    if code in CERTIFICATE_ERRORS:
        return ssl.SSLCertVerificationError(code, text)
    if code == E_PREMATURE_TERMINATION:
        return ssl.SSLEOFError(code, text)
    return ssl.SSLError(code, text)


def _want_read():
    return ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ,
                                'The operation did not complete (read)')


class Credentials(object):
    """x509 credentials: our certificate and key, and the CA to trust.

    :raises ssl.SSLError: when GnuTLS cannot read a file (its message
        names the file)
    """

    def __init__(self, ca_path, cert_path, key_path):
        lib = library()
        self.handle = ctypes.c_void_p()
        _check(lib.gnutls_certificate_allocate_credentials(
            ctypes.byref(self.handle)), 'allocating credentials')
        try:
            _check(lib.gnutls_certificate_set_x509_trust_file(
                self.handle, ca_path.encode(), X509_FMT_PEM),
                'reading ' + ca_path)
            _check(lib.gnutls_certificate_set_x509_key_file(
                self.handle, cert_path.encode(), key_path.encode(),
                X509_FMT_PEM), 'reading %s and %s' % (cert_path, key_path))
        except ssl.SSLError:
            self.close()
            raise

    def close(self):
        """Free the credentials; sessions made with them must be gone."""
        # The library that made the handle (library() may raise, or be
        # gone, as the interpreter exits).
        if self.handle and _library is not None:
            _library.gnutls_certificate_free_credentials(self.handle)
            self.handle = ctypes.c_void_p()

    def __del__(self):
        self.close()


def _check(result, what):
    if result < 0:
        raise _error(result, what)
    return result


# Sessions' BIOs by transport pointer. The two C callbacks are module-wide
# and look their session up here: a callback per session would close a
# reference cycle (session, callback, session) that only the cyclic
# collector frees, and a flood of failed handshakes must free at once.
_bios = {}
_next_key = iter(range(1, 1 << 62))


@_PUSH
def _push(key, data, size):
    try:
        _bios[key][2].write(ctypes.string_at(data, size))
        return size
    except Exception:  # noqa: a C callback must not raise
        return -1


@_PULL
def _pull(key, buffer, size):
    try:
        session, incoming, _ = _bios[key]
        chunk = incoming.read(size)
        if not chunk:
            if incoming.eof:
                return 0
            library().gnutls_transport_set_errno(session, errno.EAGAIN)
            return -1
        ctypes.memmove(buffer, chunk, len(chunk))
        return len(chunk)
    except Exception:  # noqa: a C callback must not raise
        return -1


class GnutlsObject(object):
    """One TLS session over two ssl.MemoryBIOs, as ssl.SSLObject is.

    Implements what asyncio's SSL protocol calls: ``do_handshake``,
    ``read``, ``write``, ``unwrap``, ``getpeercert``, ``cipher``,
    ``compression``, ``version`` and ``pending``.
    """

    def __init__(self, context, incoming, outgoing, server_side):
        lib = library()
        self.context = context
        self.server_side = server_side
        self.server_hostname = None
        self._closed_by_peer = False
        self._done = False
        self._session = ctypes.c_void_p()
        self._key = next(_next_key)
        _check(lib.gnutls_init(ctypes.byref(self._session),
                               SERVER if server_side else CLIENT),
               'starting a session')
        try:
            position = ctypes.c_char_p()
            result = lib.gnutls_priority_set_direct(
                self._session, context.priority.encode(),
                ctypes.byref(position))
            _check(result, 'priority string %r' % context.priority)
            _check(lib.gnutls_credentials_set(
                self._session, CRD_CERTIFICATE,
                context.credentials.handle), 'setting credentials')
            if server_side:
                lib.gnutls_certificate_server_set_request(self._session,
                                                          CERT_REQUIRE)
            # The peer's certificate must chain to the CA; no name is
            # checked (peers are addressed by IP, as QEMU's are).
            lib.gnutls_session_set_verify_cert(self._session, None, 0)
            _bios[self._key] = (self._session, incoming, outgoing)
            lib.gnutls_transport_set_ptr(self._session, self._key)
            lib.gnutls_transport_set_push_function(self._session, _push)
            lib.gnutls_transport_set_pull_function(self._session, _pull)
        except BaseException:
            self._free()
            raise

    def do_handshake(self):
        """Advance the handshake; ssl.SSLWantReadError until it is done."""
        if self._done:
            return  # again would be a key update in TLS 1.3
        result = library().gnutls_handshake(self._session)
        if result in (E_AGAIN, E_INTERRUPTED):
            raise _want_read()
        _check(result, 'TLS handshake')
        self._done = True

    def write(self, data):
        """Encrypt up to one record of ``data``; the bytes taken."""
        view = memoryview(data).cast('B')
        if not len(view):
            return 0
        buffer = (ctypes.c_char * len(view)).from_buffer_copy(view)
        result = library().gnutls_record_send(self._session, buffer,
                                              len(view))
        if result in (E_AGAIN, E_INTERRUPTED):
            raise _want_read()
        return _check(result, 'sending')

    def read(self, size=1024, buffer=None):
        """Decrypted bytes, at most ``size``; b'' (0) at close_notify.

        With ``buffer``, fills it and returns the count, as
        ssl.SSLObject.read does.
        """
        if self._closed_by_peer:
            return 0 if buffer is not None else b''
        if buffer is None:
            target = ctypes.create_string_buffer(size)
        else:
            # Straight into the caller's buffer (asyncio's), no copy.
            target = (ctypes.c_char * size).from_buffer(memoryview(buffer))
        result = library().gnutls_record_recv(self._session, target, size)
        if result in (E_AGAIN, E_INTERRUPTED):
            raise _want_read()
        _check(result, 'receiving')
        if result == 0:
            self._closed_by_peer = True
        return ctypes.string_at(target, result) if buffer is None else result

    def unwrap(self):
        """Send close_notify; ssl.SSLWantReadError until the peer's came."""
        how = SHUT_WR if self._closed_by_peer else SHUT_RDWR
        result = library().gnutls_bye(self._session, how)
        if result in (E_AGAIN, E_INTERRUPTED):
            raise _want_read()
        _check(result, 'closing')
        return None

    def pending(self):
        """Decrypted bytes ready to read."""
        return library().gnutls_record_check_pending(self._session)

    def getpeercert(self, binary_form=False):
        """The peer's certificate was checked against the CA; not shown."""
        return None if binary_form else {}

    def version(self):
        """The negotiated protocol, e.g. ``'TLSv1.3'``; None before."""
        if not self._done:
            return None
        lib = library()
        name = lib.gnutls_protocol_get_name(
            lib.gnutls_protocol_get_version(self._session))
        return name.decode().replace('TLS1.', 'TLSv1.') if name else None

    def cipher(self):
        """(cipher, protocol, secret bits) as ssl.SSLObject.cipher()."""
        if not self._done:
            return None
        lib = library()
        algorithm = lib.gnutls_cipher_get(self._session)
        return (lib.gnutls_cipher_get_name(algorithm).decode(),
                self.version(),
                8 * lib.gnutls_cipher_get_key_size(algorithm))

    def compression(self):
        """None: TLS compression is never used."""
        return None

    def _free(self):
        _bios.pop(self._key, None)
        if self._session and _library is not None:
            _library.gnutls_deinit(self._session)
            self._session = ctypes.c_void_p()

    def __del__(self):
        self._free()


class GnutlsContext(ssl.SSLContext):
    """An ssl.SSLContext whose TLS sessions are GnuTLS's.

    Only memory-BIO sessions (``wrap_bio``, what asyncio uses) are
    GnuTLS's; ``wrap_socket`` is refused rather than quietly done by
    OpenSSL.

    :param credentials: a :class:`Credentials`
    :param server_side: True for the responder's context
    :param priority: the GnuTLS priority string, QEMU's
    """

    def __new__(cls, credentials, server_side, priority):
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER if server_side
                               else ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self, credentials, server_side, priority):
        super().__init__()
        self.credentials = credentials
        self.gnutls_server_side = server_side
        self.priority = priority

    def wrap_bio(self, incoming, outgoing, server_side=False,
                 server_hostname=None, session=None):
        """A :class:`GnutlsObject` over the two BIOs."""
        if server_side != self.gnutls_server_side:
            raise ValueError('a %s context cannot make %s sessions' % (
                'server' if self.gnutls_server_side else 'client',
                'server' if server_side else 'client'))
        return GnutlsObject(self, incoming, outgoing, server_side)

    def wrap_socket(self, *args, **kwargs):
        """Refused: GnuTLS sessions here run on asyncio's memory BIOs."""
        raise NotImplementedError(
            'GnutlsContext makes memory-BIO sessions for asyncio only')
