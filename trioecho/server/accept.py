"""What happens to a connection between ``accept()`` and its first message.

1. PROXY protocol (:class:`ProxyProtocolConfig`): a peer outside
   ``allow_from`` is refused before anything is read; otherwise its header is
   read within ``timeout`` seconds and names the client.  The header is read
   by peeking, so not one byte past it is consumed: the socket is left as if
   the client had connected directly (and TLS can start on it).
2. TLS: with an ``ssl.SSLContext`` the connection becomes a TLS stream
   (:func:`~trioecho.io.tls.tls_stream`: OpenSSL on the socket with
   the readiness hub, ``trio.SSLStream`` with Trio's waits) whose handshake
   must finish within the handshake timeout.

:func:`open_connection` does both and returns the stream to frame messages
on and the client's address; it raises :class:`ProxyProtocolError` or
:class:`TLSHandshakeError`, after which the caller closes the socket.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import ssl
from collections.abc import Iterable
from typing import Any

import trio

from trioecho.errors import ProxyProtocolError, TLSHandshakeError
from trioecho.framing.starttls import TLS_HANDSHAKE_RECORD, StartTLS
from trioecho.io.header import peek_start, receive_header
from trioecho.io.readiness import Readiness
from trioecho.io.tls import TLSStream, do_handshake, tls_stream
from trioecho.server.proxy import MAX_HEADER_LENGTH, ProxyHeader, parse_proxy_header

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_PROXY_ALLOW_FROM",
    "DEFAULT_PROXY_TIMEOUT",
    "PROXY_MODES",
    "ProxyProtocolConfig",
    "open_connection",
    "receive_proxy_header",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PROXY_MODES = {"off": (), "v1": (1,), "v2": (2,), "auto": (1, 2)}
DEFAULT_PROXY_TIMEOUT = 3.0  # seconds for the whole PROXY header
# Trusting a header lets its sender claim any client address, so by default
# only proxies on this machine are trusted; others must be listed.
DEFAULT_PROXY_ALLOW_FROM = ("127.0.0.0/8", "::1/128")
DEFAULT_HANDSHAKE_TIMEOUT = 10.0  # seconds for a TLS handshake


def parse_networks(networks: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8"``-style strings (a bare address is a /32 or /128) as
    networks; raises ``ValueError`` naming the bad one."""
    parsed = []
    for text in networks:
        try:
            parsed.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"not an IP network: {text.strip()!r} ({exc})") from None
    if not parsed:
        raise ValueError("no networks given")
    return tuple(parsed)


@dataclasses.dataclass(frozen=True)
class ProxyProtocolConfig:
    """Accept the PROXY protocol ``versions`` (1, 2 or both) from peers in
    ``allow_from``, the whole header within ``timeout`` seconds."""

    versions: tuple[int, ...] = (1, 2)
    allow_from: tuple[IPNetwork, ...] = parse_networks(DEFAULT_PROXY_ALLOW_FROM)
    timeout: float = DEFAULT_PROXY_TIMEOUT

    def __post_init__(self) -> None:
        if not self.versions or not set(self.versions) <= {1, 2}:
            raise ValueError(f"versions must be 1, 2 or both, not {self.versions}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, not {self.timeout}")

    @classmethod
    def from_options(
        cls, mode: str, allow_from: str | None = None, timeout: float = DEFAULT_PROXY_TIMEOUT
    ) -> ProxyProtocolConfig | None:
        """The configuration for ``--proxy-protocol MODE`` (``None`` for
        ``off``) and ``--proxy-allow-from CIDR[,CIDR...]``."""
        if mode not in PROXY_MODES:
            raise ValueError(f"proxy protocol mode must be one of {', '.join(PROXY_MODES)}")
        if mode == "off":
            return None
        networks = (
            parse_networks(allow_from.split(","))
            if allow_from is not None
            else parse_networks(DEFAULT_PROXY_ALLOW_FROM)
        )
        return cls(PROXY_MODES[mode], networks, timeout)

    def allows(self, host: str) -> bool:
        """Whether a peer at ``host`` may send a header."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow_from)


async def receive_proxy_header(
    sock: trio.socket.SocketType, versions: Iterable[int]
) -> ProxyHeader:
    """Read one PROXY header off ``sock`` and nothing after it.

    Peeks at what has arrived; bytes of an unfinished header are consumed
    (they all belong to it), so each wake-up makes progress and the header
    costs a few system calls.  Raises :class:`ProxyProtocolError` if the
    header is malformed or the peer closes before it ends.
    """
    accepted = tuple(versions)
    found: list[ProxyHeader] = []

    def measure(received: bytes) -> int | None:
        header = parse_proxy_header(received, accepted)
        if header is None:
            return None
        found.append(header)
        return header.length

    await receive_header(sock, MAX_HEADER_LENGTH, measure, _closed_in_header)
    return found[-1]


def _closed_in_header(received: int, inside: bool) -> ProxyProtocolError:
    if inside:
        return ProxyProtocolError("connection closed inside a PROXY header")
    return ProxyProtocolError(f"connection closed after {received} bytes of a PROXY header")


async def open_connection(
    socket_stream: trio.SocketStream,
    peer: Any,
    *,
    proxy: ProxyProtocolConfig | None = None,
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    starttls: StartTLS | None = None,
    readiness: Readiness | None = None,
) -> tuple[trio.abc.Stream, Any]:
    """The stream to serve and the client's address; see the module docstring."""
    client = peer
    if proxy is not None:
        # A unix peer passed the socket file's mode; an IP peer must be allowed.
        host = peer[0] if isinstance(peer, tuple) else None
        if host is not None and not proxy.allows(host):
            raise ProxyProtocolError(
                f"PROXY header refused: peer {host} is not in the allowed proxies "
                f"({', '.join(map(str, proxy.allow_from))})"
            )
        with trio.move_on_after(proxy.timeout) as scope:
            header = await receive_proxy_header(socket_stream.socket, proxy.versions)
        if scope.cancelled_caught:
            raise ProxyProtocolError(f"no complete PROXY header within {proxy.timeout:g} s")
        if header.source is not None:
            client = header.source
    if ssl_context is None:
        return socket_stream, client
    with trio.move_on_after(
        handshake_timeout if handshake_timeout is not None else math.inf
    ) as scope:
        if starttls is None:
            return await _start_tls(socket_stream, ssl_context, readiness), client
        return await _negotiate_tls(socket_stream, ssl_context, starttls, readiness), client
    raise TLSHandshakeError(f"TLS handshake not done within {handshake_timeout:g} s")


async def _start_tls(
    socket_stream: trio.SocketStream, ssl_context: ssl.SSLContext, readiness: Readiness | None
) -> TLSStream:
    stream = tls_stream(socket_stream, ssl_context, readiness)
    await do_handshake(stream, peer="client")
    return stream


async def _negotiate_tls(
    socket_stream: trio.SocketStream,
    ssl_context: ssl.SSLContext,
    starttls: StartTLS,
    readiness: Readiness | None,
) -> trio.abc.Stream:
    """TLS as ``starttls``'s protocol starts it: after its request (taken
    here, and answered), or at once on a ClientHello, which must then name
    the protocol's ALPN; a client that asks for neither stays in clear."""
    start = await peek_start(socket_stream.socket, starttls.request, TLS_HANDSHAKE_RECORD)
    if start == "request":
        await receive_header(
            socket_stream.socket,
            len(starttls.request),
            lambda received: len(starttls.request),
            lambda received, inside: TLSHandshakeError(f"connection closed in the {starttls.name}"),
        )
        await socket_stream.send_all(starttls.accept)
    elif start != "tls":
        return socket_stream  # in clear: the session itself sees what comes
    stream = await _start_tls(socket_stream, ssl_context, readiness)
    if start == "tls" and starttls.alpn is not None:
        chosen = stream.selected_alpn_protocol()
        if chosen != starttls.alpn:
            await trio.aclose_forcefully(stream)
            raise TLSHandshakeError(
                f"direct TLS must name the ALPN protocol {starttls.alpn!r}, not {chosen!r}"
            )
    return stream
