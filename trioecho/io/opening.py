"""The transport for a Trio stream: the direct socket for a plain
``trio.SocketStream`` and for TLS done on the socket
(:class:`~trioecho.io.tls_socket.TLSSocketStream`), the stream's own
methods otherwise.
"""

from __future__ import annotations

import socket

import trio

from trioecho.io.readiness import Readiness, resolve_readiness
from trioecho.io.socket_tls import TLSSocketTransport
from trioecho.io.socket_transport import SocketTransport, hub_watch
from trioecho.io.stdlib_socket import raw_socket
from trioecho.io.stream_transport import StreamTransport
from trioecho.io.tls_socket import TLSSocketStream
from trioecho.io.transport import Transport

__all__ = ["open_transport"]


def open_transport(
    stream: trio.abc.Stream,
    *,
    idle_timeout: float | None = None,
    send_timeout: float | None = None,
    min_send_rate: float | None = None,
    readiness: Readiness | None = None,
) -> Transport:
    """The transport for ``stream``: direct socket calls for a plain
    ``trio.SocketStream`` or a :class:`~trioecho.io.tls_socket.TLSSocketStream`,
    the stream's own methods otherwise.

    ``send_timeout`` and ``min_send_rate`` are the send rule
    (:mod:`~trioecho.io.send_deadline`; None: no limit, no floor).
    ``readiness`` says how a direct-socket transport waits: ``"hub"`` (the
    run's :mod:`readiness hub <trioecho.io.hub>`), ``"trio"`` (Trio's own
    waits), or None for :func:`default_readiness`.  Outside a Trio run, or
    without epoll, the hub is not available and Trio's waits are used.
    """
    readiness = resolve_readiness(readiness)
    transport_type: type[SocketTransport] = SocketTransport
    sock: socket.socket | None
    if isinstance(stream, TLSSocketStream):
        sock, transport_type = stream.socket, TLSSocketTransport
    else:
        sock = raw_socket(stream)
    if sock is None:
        return StreamTransport(
            stream,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
            min_send_rate=min_send_rate,
        )
    return transport_type(
        stream,
        sock,
        idle_timeout=idle_timeout,
        send_timeout=send_timeout,
        min_send_rate=min_send_rate,
        watch=hub_watch(sock) if readiness == "hub" else None,
    )
