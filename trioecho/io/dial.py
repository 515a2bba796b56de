"""Connecting out with the local port known first: :func:`dial`.

A relay must recognise a connection from itself (a relay pointed at its own
address): each upstream socket is bound before it connects, and its local
port is handed to the caller before the connection can arrive anywhere.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio

from trioecho.io.keepalive import KeepAlive, apply_keepalive

__all__ = ["dial"]


async def dial(
    host: str,
    port: int,
    *,
    claim: Callable[[int], None],
    release: Callable[[int], None],
    keepalive: KeepAlive | None = None,
    send_timeout: float | None = None,
) -> tuple[trio.SocketStream, int]:
    """Connect to ``host``:``port``, trying its addresses in order.  Each
    socket is bound first and its local port given to ``claim`` before it
    connects (``release`` gets it back if that connection fails); once
    connected it gets ``keepalive``
    (:func:`~trioecho.io.keepalive.apply_keepalive`).  Returns the stream
    and its local port (still claimed: the caller releases it).  Raises the
    last address's ``OSError`` if none connects."""
    last: OSError | None = None
    for family, kind, protocol, _, address in await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        sock = trio.socket.socket(family, kind, protocol)
        try:
            await sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            local_port = sock.getsockname()[1]
            claim(local_port)
            try:
                await sock.connect(address)
                apply_keepalive(sock, keepalive, send_timeout)
            except BaseException:
                release(local_port)
                raise
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock), local_port
    raise last if last is not None else OSError(f"{host} has no address")
