"""TLS for the server (``--tls-cert``/``--tls-key``) and the clients (``--tls``):
contexts, and the handshake all of them run.

Mutual TLS: a server context may ask its clients for a certificate that
chains to the CAs of a file (``verify_client`` ``"optional"`` or
``"required"``, nginx's names; ``--tls-client-ca``, ``--tls-verify-client``),
and a client context may present one (``--tls-cert``/``--tls-key`` on
``client`` and ``bench``).  :func:`peer_certificate` gives a connection's
verified peer certificate, :func:`certificate_subject` its subject as text.

Both start from ``ssl.create_default_context``: TLS 1.2 or newer, Python's
default ciphers, and on the client side certificate and host name checks.
An end of the stream without TLS's close_notify is a truncation, reported as
a broken connection, on every Python: some (Debian's 3.11.2 among them) set
OpenSSL's ``OP_IGNORE_UNEXPECTED_EOF`` by default, which reads it as a clean
end; these contexts clear it (:func:`detect_truncation`).
"""

from __future__ import annotations

import ssl
from typing import Any, TypeGuard, cast

import trio

from trioecho.errors import TLSHandshakeError
from trioecho.framing.starttls import StartTLS
from trioecho.io.readiness import Readiness, resolve_readiness
from trioecho.io.stdlib_socket import raw_socket
from trioecho.io.tls_socket import TLSSocketStream

__all__ = [
    "UPSTREAM_TLS_MODES",
    "VERIFY_CLIENT",
    "TLSStream",
    "certificate_subject",
    "check_server_context",
    "client_context",
    "detect_truncation",
    "do_handshake",
    "is_tls",
    "load_certificate",
    "peer_certificate",
    "server_context",
    "start_upstream_tls",
    "tls_stream",
    "tls_version",
    "upstream_context",
    "verify_clients",
]

# How a relay speaks TLS to its upstream: libpq's sslmode names (and
# pgbouncer's server_tls_sslmode), those that require TLS or none.
UPSTREAM_TLS_MODES = ("disable", "require", "verify-ca", "verify-full")

# verify_client: ask no certificate, ask one and check it if given, require one.
VERIFY_CLIENT = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def detect_truncation(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context`` with OpenSSL's ``OP_IGNORE_UNEXPECTED_EOF`` cleared, so
    that a peer that drops the connection without close_notify is seen as a
    truncation (a broken connection), not as a clean end."""
    ignore = getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    context.options &= ~ignore
    return context


def server_context(
    certfile: str,
    keyfile: str | None = None,
    *,
    client_ca: str | None = None,
    verify_client: str = "none",
) -> ssl.SSLContext:
    """A server context with the certificate chain in ``certfile`` (PEM) and
    its private key in ``keyfile`` (default: in ``certfile`` too).

    ``verify_client`` (:data:`VERIFY_CLIENT`): ``"none"`` asks clients for
    no certificate; ``"optional"`` asks, serves a client without one, and
    refuses at the handshake one whose certificate does not chain to the
    CA certificates in ``client_ca`` (PEM) or has expired; ``"required"``
    refuses a client without one too.  ``client_ca`` is needed by those two
    and refused with ``"none"`` (it would check nothing).

    Raises ``OSError`` if a file cannot be read, and ``ValueError`` saying
    what is wrong if they do not hold a certificate and its key, or the CA
    certificates, or if the options do not fit together.
    """
    context = detect_truncation(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # A client's renegotiation (TLS 1.2) is refused: it could make a write
    # want a read, and it costs the server a handshake at the client's will.
    context.options |= ssl.OP_NO_RENEGOTIATION
    load_certificate(context, certfile, keyfile)
    verify_clients(context, client_ca, verify_client)
    return context


def load_certificate(context: ssl.SSLContext, certfile: str, keyfile: str | None) -> None:
    """Have ``context`` present the certificate chain in ``certfile`` (PEM)
    with its key in ``keyfile`` (default: in ``certfile`` too).  Raises
    ``OSError`` if a file cannot be read, ``ValueError`` saying what is
    wrong if they do not hold a certificate and its key."""
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:
        raise ValueError(_load_problem(exc, certfile, keyfile)) from exc


def verify_clients(context: ssl.SSLContext, client_ca: str | None, verify_client: str) -> None:
    """Have the server ``context`` ask clients for certificates as
    ``verify_client`` says, checked against ``client_ca`` (see
    :func:`server_context`, which calls this; the errors are its)."""
    if verify_client not in VERIFY_CLIENT:
        raise ValueError(
            f"verify_client must be one of {', '.join(VERIFY_CLIENT)}, not {verify_client!r}"
        )
    if verify_client == "none":
        if client_ca is not None:
            raise ValueError(
                "a client CA file checks client certificates only with verify_client "
                "'optional' or 'required' (--tls-verify-client)"
            )
        return
    if client_ca is None:
        raise ValueError(
            f"verify_client {verify_client!r} needs the CA certificates that client "
            "certificates must chain to (client_ca, --tls-client-ca)"
        )
    try:
        context.load_verify_locations(cafile=client_ca)
    except ssl.SSLError as exc:
        raise ValueError(f"{client_ca} holds no PEM CA certificate: {exc.reason or exc}") from exc
    context.verify_mode = VERIFY_CLIENT[verify_client]


def _load_problem(exc: ssl.SSLError, certfile: str, keyfile: str | None) -> str:
    """What OpenSSL's load error means, for the files given."""
    key_source = keyfile or certfile
    with open(certfile, "rb") as file:
        cert_text = file.read()
    if b"-----BEGIN CERTIFICATE-----" not in cert_text:
        return f"{certfile} holds no PEM certificate"
    if keyfile is None and b"PRIVATE KEY-----" not in cert_text:
        return f"{certfile} holds no private key: give the key file too (--tls-key, keyfile)"
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"the private key in {key_source} does not belong to the certificate in {certfile}"
    return f"cannot load the certificate {certfile} and key {key_source}: {exc.reason or exc}"


def check_server_context(context: object) -> ssl.SSLContext | None:
    """``context`` if a server can use it (or None); else one error saying
    how to make a server-side context."""
    if context is None:
        return None
    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext or None, not {context!r}")
    if context.protocol == ssl.PROTOCOL_TLS_CLIENT or context.check_hostname:
        raise ValueError(
            "ssl_context is a client-side context (ssl.create_default_context() makes "
            "those): a server needs ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) "
            "with load_cert_chain(), or trioecho.io.tls.server_context(certfile, keyfile)"
        )
    return context


def client_context(
    cafile: str | None = None, *, certfile: str | None = None, keyfile: str | None = None
) -> ssl.SSLContext:
    """A client context that trusts the CA certificates in ``cafile`` (PEM),
    or the system's when it is ``None``, and checks the server's host name.
    With ``certfile`` (and ``keyfile``, default: in ``certfile`` too) it
    presents that certificate to a server that asks for one.  Raises
    ``OSError`` and ``ValueError`` as :func:`server_context` does."""
    if keyfile is not None and certfile is None:
        raise ValueError("a client key (keyfile, --tls-key) needs its certificate (--tls-cert)")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile is not None:
        load_certificate(context, certfile, keyfile)
    return detect_truncation(context)


def upstream_context(
    mode: str,
    cafile: str | None = None,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> ssl.SSLContext | None:
    """A relay's context towards its upstream for ``mode``
    (:data:`UPSTREAM_TLS_MODES`, libpq's meanings): ``"disable"``, None
    (plain TCP; no file may be given); ``"require"``, TLS without checking
    the upstream's certificate; ``"verify-ca"``, which must chain to the
    CAs in ``cafile`` (default: the system's); ``"verify-full"``, and name
    the upstream (its host, or the server name the caller gives).  With
    ``certfile``/``keyfile`` the relay presents that certificate.  Raises
    ``ValueError`` or ``OSError`` as :func:`client_context` does."""
    if mode not in UPSTREAM_TLS_MODES:
        raise ValueError(
            f"upstream TLS must be one of {', '.join(UPSTREAM_TLS_MODES)}, not {mode!r}"
        )
    if mode == "disable":
        if cafile is not None or certfile is not None or keyfile is not None:
            raise ValueError(
                "upstream TLS files are used only with upstream TLS other than disable"
            )
        return None
    context = client_context(cafile, certfile=certfile, keyfile=keyfile)
    if mode != "verify-full":
        context.check_hostname = False
    if mode == "require":
        context.verify_mode = ssl.CERT_NONE
    return context


async def start_upstream_tls(
    stream: trio.SocketStream,
    context: ssl.SSLContext,
    server_name: str,
    starttls: StartTLS | None = None,
) -> TLSStream:
    """TLS over a relay's new upstream connection ``stream``: first
    ``starttls``'s request and its answer (PostgreSQL's SSLRequest, ``S``),
    if given, then the handshake (SNI and, with ``verify-full``, the name
    checked: ``server_name``).  Raises :class:`TLSHandshakeError` saying
    why: the upstream refused TLS, answered something else, or the
    handshake failed; the caller bounds the time."""
    if starttls is not None:
        await stream.send_all(starttls.request)
        answer = await stream.receive_some(1)
        if answer == starttls.refuse:
            raise TLSHandshakeError(
                f"the upstream does not support TLS: it answered {answer!r} to the {starttls.name}",
                reason="refused",
            )
        if answer != starttls.accept:
            said = f"answered {answer!r}" if answer else "closed"
            raise TLSHandshakeError(
                f"the upstream {said} to the {starttls.name}, not {starttls.accept!r}",
                reason="unexpected answer",
            )
    tls = tls_stream(stream, context, server_hostname=server_name)
    await do_handshake(tls, peer="server")
    return tls


# The TLS streams: Trio's, and OpenSSL on the socket.
TLSStream = trio.SSLStream[Any] | TLSSocketStream


def is_tls(stream: object) -> TypeGuard[TLSStream]:
    """Whether ``stream`` is a TLS stream (``trio.SSLStream`` or
    :class:`~trioecho.io.tls_socket.TLSSocketStream`)."""
    return isinstance(stream, trio.SSLStream | TLSSocketStream)


def tls_version(stream: object) -> str | None:
    """The TLS version of a set-up TLS ``stream`` (``"TLSv1.3"``), None for
    a stream that is not TLS."""
    if not is_tls(stream):
        return None
    return cast("str | None", stream.version())


# Kernel TLS: not on the hub's TLS path.  Python 3.12 names OpenSSL 3's
# SSL_OP_ENABLE_KTLS (bit 3); before, a context can still set the bit.
_OP_ENABLE_KTLS: int = getattr(
    ssl, "OP_ENABLE_KTLS", 1 << 3 if ssl.OPENSSL_VERSION_INFO >= (3,) else 0
)


def tls_stream(
    socket_stream: trio.SocketStream,
    context: ssl.SSLContext,
    readiness: Readiness | None = None,
    *,
    server_hostname: str | None = None,
) -> TLSStream:
    """TLS over ``socket_stream``, before its handshake: the server's side,
    or with ``server_hostname`` the client's.  With the readiness hub
    (``readiness``, see :func:`~trioecho.io.readiness.resolve_readiness`),
    OpenSSL on the socket (:class:`~trioecho.io.tls_socket.TLSSocketStream`,
    served inline like plain TCP); with Trio's waits, or a ``context`` that
    enables kernel TLS (``ssl.OP_ENABLE_KTLS``, which the hub's reads do not
    account for: see :func:`~trioecho.io.tls_socket.unread`),
    ``trio.SSLStream``, its twin."""
    server_side = server_hostname is None
    if (
        resolve_readiness(readiness) == "hub"
        and not context.options & _OP_ENABLE_KTLS
        and raw_socket(socket_stream) is not None
    ):
        return TLSSocketStream(
            socket_stream, context, server_side=server_side, server_hostname=server_hostname
        )
    return trio.SSLStream(
        socket_stream, context, server_side=server_side, server_hostname=server_hostname
    )


def peer_certificate(stream: object) -> dict[str, Any] | None:
    """The certificate the peer of a TLS ``stream`` (``trio.SSLStream`` or
    :class:`~trioecho.io.tls_socket.TLSSocketStream`) presented and the
    handshake verified, as ``ssl.SSLSocket.getpeercert()`` gives it
    (``subject``, ``subjectAltName``, ``notAfter``, ...); None for a stream
    that is not TLS, or a peer that presented none."""
    if not is_tls(stream):
        return None
    try:
        certificate = stream.getpeercert()
    except (ValueError, trio.NeedHandshakeError):  # no handshake yet
        return None
    return certificate or None


# The short names of RFC 4514, for the attributes certificates carry most.
_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "domainComponent": "DC",
    "emailAddress": "emailAddress",
}


def certificate_subject(certificate: dict[str, Any] | None) -> str | None:
    """A certificate's subject as RFC 4514 writes a distinguished name:
    ``CN=alice,OU=Staff,O=Example`` (the most specific first, short names
    for the usual attributes, special characters escaped); None without a
    certificate."""
    if not certificate:
        return None
    return ",".join(
        "+".join(
            f"{_SHORT_NAMES.get(name, name)}={_escape_rdn_value(value)}"
            for name, value in relative_name
        )
        for relative_name in reversed(certificate.get("subject", ()))
    )


def _escape_rdn_value(value: str) -> str:
    """``value`` escaped as RFC 4514 section 2.4 says."""
    escaped = "".join("\\" + char if char in '\\,+"<>;=' else char for char in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped


# OpenSSL's reasons when the other side's bytes are not TLS records at all.
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG"}
)


# At most this long to send a failed handshake's alert and let the peer end.
ALERT_SECONDS = 1.0


async def _close_with_alert(stream: TLSStream) -> None:
    """Close after a failed handshake, sending the TLS alert OpenSSL wrote
    (``certificate required``, ``unknown ca``, ...) so that the peer learns
    why, then the end, and discarding the peer's input until its end, so
    that the close is no reset (which could destroy the alert).  At most
    ``ALERT_SECONDS`` (a peer that got an alert closes at once).  Trio
    leaves the alert in the stream's outgoing buffer when the handshake
    raises: taking it is the one use of a Trio internal here; OpenSSL on
    the socket has written it already."""
    # Shielded: the handshake's timeout (or a shutdown) must not cut it
    # short and turn the failure it reports into a timeout.
    with trio.CancelScope(shield=True):
        if isinstance(stream, TLSSocketStream):
            await stream.end_after_failure(ALERT_SECONDS)
        else:
            await _end_trio_stream(stream)
        await trio.aclose_forcefully(stream)


async def _end_trio_stream(stream: trio.SSLStream[Any]) -> None:
    """``_close_with_alert`` for a ``trio.SSLStream``: the alert, FIN, the
    peer's input discarded, within ``ALERT_SECONDS``."""
    transport = stream.transport_stream
    with trio.move_on_after(ALERT_SECONDS):
        try:
            alert = stream._outgoing.read()  # a Trio internal: see _close_with_alert
            if alert:
                await transport.send_all(alert)
            if isinstance(transport, trio.SocketStream):
                await transport.send_eof()
                while await transport.receive_some(16 * 1024):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


async def do_handshake(stream: TLSStream, *, peer: str = "peer") -> None:
    """Run ``stream``'s handshake now.  On failure (or cancellation) close
    the stream; on failure raise
    :class:`TLSHandshakeError` whose ``reason`` is the TLS error (or
    ``"connection closed"``), the transport's exception chained.  When the
    ``peer`` (``"server"``, ``"client"``) sent bytes that are not TLS at
    all, the message says so."""
    try:
        await stream.do_handshake()
    except trio.Cancelled:
        await trio.aclose_forcefully(stream)
        raise
    except trio.BrokenResourceError as exc:
        await _close_with_alert(stream)
        cause = exc.__cause__
        reason = str(cause or "connection closed")
        if isinstance(cause, ssl.SSLError) and cause.reason in _NOT_TLS:
            raise TLSHandshakeError(
                f"TLS handshake failed: the {peer} does not speak TLS "
                f"(its first bytes are not a TLS record: {reason})",
                reason=reason,
            ) from exc
        raise TLSHandshakeError(f"TLS handshake failed: {reason}", reason=reason) from exc
