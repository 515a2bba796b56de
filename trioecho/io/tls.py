"""TLS for the server (``--tls-cert``/``--tls-key``) and the clients (``--tls``):
contexts, and the handshake all of them run.

Both start from ``ssl.create_default_context``: TLS 1.2 or newer, Python's
default ciphers, and on the client side certificate and host name checks.
"""

from __future__ import annotations

import ssl
from typing import Any

import trio

from trioecho.errors import TLSHandshakeError

__all__ = ["client_context", "do_handshake", "server_context"]


def server_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server context with the certificate chain in ``certfile`` (PEM) and
    its private key in ``keyfile`` (default: in ``certfile`` too).

    Raises ``OSError`` if a file cannot be read and ``ssl.SSLError`` if it
    does not hold a certificate and a matching key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def client_context(cafile: str | None = None) -> ssl.SSLContext:
    """A client context that trusts the CA certificates in ``cafile`` (PEM),
    or the system's when it is ``None``, and checks the server's host name."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def do_handshake(stream: trio.SSLStream[Any]) -> None:
    """Run ``stream``'s handshake now.  On failure close the stream and raise
    :class:`TLSHandshakeError` whose ``reason`` is the TLS error (or
    ``"connection closed"``), the transport's exception chained."""
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        reason = str(exc.__cause__ or "connection closed")
        raise TLSHandshakeError(f"TLS handshake failed: {reason}", reason=reason) from exc
