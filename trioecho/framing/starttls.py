"""A protocol's way to start TLS on a connection that begins in clear:
:class:`StartTLS` (PostgreSQL's SSLRequest: :data:`trioecho.framing.presets.POSTGRESQL_STARTTLS`).

The client sends ``request``; the server answers one byte, ``accept`` (TLS
starts at once, both sides) or ``refuse`` (the session goes on in clear, or
the client gives up).  A protocol may also allow *direct* TLS, a ClientHello
first, with the ALPN protocol ``alpn`` (PostgreSQL 17's
``sslnegotiation=direct``, which requires ALPN ``postgresql``).
"""

from __future__ import annotations

import dataclasses

__all__ = ["TLS_HANDSHAKE_RECORD", "StartTLS"]

# A TLS record's first byte when it carries a handshake (a ClientHello).
TLS_HANDSHAKE_RECORD = 0x16


@dataclasses.dataclass(frozen=True)
class StartTLS:
    """How a protocol asks for TLS in clear, and how it is answered."""

    name: str
    """The request's name, for log lines (``"SSLRequest"``)."""
    request: bytes
    """What the client sends to ask for TLS."""
    accept: bytes
    """The server's answer when TLS starts."""
    refuse: bytes
    """The server's answer when it does not."""
    alpn: str | None = None
    """The ALPN protocol that direct TLS (a ClientHello first) must name,
    or None if the protocol has no direct TLS."""
