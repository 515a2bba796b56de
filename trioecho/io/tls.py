"""TLS for the server (``--tls-cert``/``--tls-key``) and the clients (``--tls``):
contexts, and the handshake all of them run.

Both start from ``ssl.create_default_context``: TLS 1.2 or newer, Python's
default ciphers, and on the client side certificate and host name checks.
An end of the stream without TLS's close_notify is a truncation, reported as
a broken connection, on every Python: some (Debian's 3.11.2 among them) set
OpenSSL's ``OP_IGNORE_UNEXPECTED_EOF`` by default, which reads it as a clean
end; these contexts clear it (:func:`detect_truncation`).
"""

from __future__ import annotations

import ssl
from typing import Any

import trio

from trioecho.errors import TLSHandshakeError

__all__ = [
    "check_server_context",
    "client_context",
    "detect_truncation",
    "do_handshake",
    "server_context",
]


def detect_truncation(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context`` with OpenSSL's ``OP_IGNORE_UNEXPECTED_EOF`` cleared, so
    that a peer that drops the connection without close_notify is seen as a
    truncation (a broken connection), not as a clean end."""
    ignore = getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    context.options &= ~ignore
    return context


def server_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server context with the certificate chain in ``certfile`` (PEM) and
    its private key in ``keyfile`` (default: in ``certfile`` too).

    Raises ``OSError`` if a file cannot be read, and ``ValueError`` saying
    what is wrong if they do not hold a certificate and its key.
    """
    context = detect_truncation(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:
        raise ValueError(_load_problem(exc, certfile, keyfile)) from exc
    return context


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


def client_context(cafile: str | None = None) -> ssl.SSLContext:
    """A client context that trusts the CA certificates in ``cafile`` (PEM),
    or the system's when it is ``None``, and checks the server's host name."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return detect_truncation(context)


# OpenSSL's reasons when the other side's bytes are not TLS records at all.
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG"}
)


async def do_handshake(stream: trio.SSLStream[Any], *, peer: str = "peer") -> None:
    """Run ``stream``'s handshake now.  On failure close the stream and raise
    :class:`TLSHandshakeError` whose ``reason`` is the TLS error (or
    ``"connection closed"``), the transport's exception chained.  When the
    ``peer`` (``"server"``, ``"client"``) sent bytes that are not TLS at
    all, the message says so."""
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        cause = exc.__cause__
        reason = str(cause or "connection closed")
        if isinstance(cause, ssl.SSLError) and cause.reason in _NOT_TLS:
            raise TLSHandshakeError(
                f"TLS handshake failed: the {peer} does not speak TLS "
                f"(its first bytes are not a TLS record: {reason})",
                reason=reason,
            ) from exc
        raise TLSHandshakeError(f"TLS handshake failed: {reason}", reason=reason) from exc
