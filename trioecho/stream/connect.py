"""The client side: connect to a message server and get a :class:`MessageStream`.

``open_message_stream`` is to :class:`~trioecho.server.server.MessageServer` what
``trio.open_tcp_stream`` is to ``trio.serve_tcp``::

    async with await open_message_stream("127.0.0.1", 9999) as stream:
        greeting = await stream.receive_message()
        await stream.send_message(b"hello")
        reply = await stream.receive_message()

It connects with ``trio.open_tcp_stream`` (every address of ``host``,
happy eyeballs between them), runs the TLS handshake when given an
``ssl_context``, and frames the connection with ``framing``.  The
command-line client, the demo and the TLS load generator all connect here.
"""

from __future__ import annotations

import ssl
import sys

import trio

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport there
    from exceptiongroup import BaseExceptionGroup

from trioecho.arguments import check_connect_host, check_port, check_rate, check_timeout
from trioecho.errors import TLSHandshakeError
from trioecho.framing.config import FramingConfig, framing_config
from trioecho.io.keepalive import KeepAlive, apply_keepalive, keepalive_of
from trioecho.io.tls import do_handshake
from trioecho.stream.arguments import receive_size_for
from trioecho.stream.message_stream import MessageStream

__all__ = [
    "DEFAULT_CONNECT_HANDSHAKE_TIMEOUT",
    "open_message_stream",
    "open_unix_message_stream",
]

DEFAULT_CONNECT_HANDSHAKE_TIMEOUT = 10.0


async def open_message_stream(
    host: str | bytes,
    port: int,
    *,
    framing: FramingConfig | str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    handshake_timeout: float | None = DEFAULT_CONNECT_HANDSHAKE_TIMEOUT,
    happy_eyeballs_delay: float | None = 0.25,
    receive_size: int | None = None,
    idle_timeout: float | None = None,
    send_timeout: float | None = None,
    min_send_rate: float | None = None,
    keepalive: KeepAlive | str | None = None,
) -> MessageStream:
    """Connect to ``host``:``port`` and return a :class:`MessageStream` over it.

    ``framing`` is the server's: a :class:`FramingConfig` or a framing name
    (default: lines).  With ``ssl_context`` the
    connection speaks TLS: the server's certificate is checked against
    ``server_hostname`` (default ``host``), and the handshake must finish
    within ``handshake_timeout`` seconds.  ``receive_size`` defaults to
    64 KiB, 1024 bytes for raw framing (the seed's read size);
    ``idle_timeout``, ``send_timeout`` and ``min_send_rate`` are the
    stream's (the send rule: :mod:`~trioecho.io.send_deadline`).  ``keepalive``
    (a :class:`~trioecho.KeepAlive`, ``"IDLE[:INTERVAL[:COUNT]]"``, or None:
    off, the default) turns on TCP keepalive, so that a server that vanished
    is noticed while the stream waits; ``TCP_USER_TIMEOUT`` is set from it
    (or ``send_timeout``) as a server sets it
    (:func:`~trioecho.io.keepalive.user_timeout_ms`).

    Raises ``OSError`` if no address of ``host`` accepts the connection (the
    system's error, e.g. ``ConnectionRefusedError``, when every address
    failed the same way) and
    :class:`TLSHandshakeError` if the TLS handshake fails or times out (the
    connection is closed then).
    """
    host = check_connect_host(host)
    port = check_port(port)
    config = framing_config(framing)
    send_timeout = check_timeout(send_timeout, "send_timeout")
    min_send_rate = check_rate(min_send_rate, "min_send_rate")
    keepalive = keepalive_of(keepalive)
    if receive_size is None:
        receive_size = receive_size_for(config.framing)
    try:
        tcp = await trio.open_tcp_stream(host, port, happy_eyeballs_delay=happy_eyeballs_delay)
    except OSError as exc:
        raise _plain_connect_error(exc) from exc
    if keepalive is not None or send_timeout is not None:  # else Trio's socket as it is
        try:
            apply_keepalive(tcp.socket, keepalive, send_timeout)
        except OSError:
            await trio.aclose_forcefully(tcp)
            raise
    transport: trio.abc.Stream = tcp
    if ssl_context is not None:
        if server_hostname is None:
            server_hostname = host.decode() if isinstance(host, bytes) else host
        tls = trio.SSLStream(tcp, ssl_context, server_hostname=server_hostname)
        timeout = float("inf") if handshake_timeout is None else handshake_timeout
        with trio.move_on_after(timeout):
            await do_handshake(tls, peer="server")
            transport = tls
        if transport is not tls:
            await trio.aclose_forcefully(tls)
            raise TLSHandshakeError(
                f"TLS handshake did not finish within {handshake_timeout}s", reason="timed out"
            )
    return MessageStream(
        transport,
        config.new_framer(),
        receive_size=receive_size,
        idle_timeout=idle_timeout,
        send_timeout=send_timeout,
        min_send_rate=min_send_rate,
    )


async def open_unix_message_stream(
    path: str,
    *,
    framing: FramingConfig | str | None = None,
    receive_size: int | None = None,
    idle_timeout: float | None = None,
    send_timeout: float | None = None,
    min_send_rate: float | None = None,
) -> MessageStream:
    """Connect to the unix socket ``path`` and return a :class:`MessageStream`
    over it; the other arguments as :func:`open_message_stream` takes them.
    Raises ``OSError`` (``FileNotFoundError``, ``ConnectionRefusedError``)
    if nothing serves ``path``."""
    if not isinstance(path, str) or not path:
        raise TypeError(f"path must be a non-empty str naming a unix socket, not {path!r}")
    config = framing_config(framing)
    unix = await trio.open_unix_socket(path)
    return MessageStream(
        unix,
        config.new_framer(),
        receive_size=receive_size_for(config.framing) if receive_size is None else receive_size,
        idle_timeout=idle_timeout,
        send_timeout=send_timeout,
        min_send_rate=min_send_rate,
    )


def _plain_connect_error(exc: OSError) -> OSError:
    """Trio's "all attempts to connect failed" as the error the addresses
    gave, when they all gave the same one (a refused port is then a plain
    ``ConnectionRefusedError``)."""
    group = exc.__cause__
    if exc.errno is not None or not isinstance(group, BaseExceptionGroup):
        return exc
    leaves = [e for e in _leaves(group) if isinstance(e, OSError) and e.errno is not None]
    if not leaves or len({e.errno for e in leaves}) != 1:
        return exc
    first = leaves[0]
    return type(first)(first.errno, first.strerror)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        found += _leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return found
