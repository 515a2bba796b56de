"""Reading one header off a socket and nothing after it: :func:`receive_header`
(the PROXY protocol's, before the connection is served)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio

__all__ = ["receive_header"]


async def receive_header(
    sock: trio.socket.SocketType,
    max_length: int,
    measure: Callable[[bytes], int | None],
    closed: Callable[[int, bool], Exception],
) -> bytes:
    """Read one header off ``sock``, and nothing after it; return its bytes.

    ``measure(received)`` says how long the header is once ``received``
    (its first bytes) shows it, None while it needs more, and raises for a
    malformed one; a header is at most ``max_length`` bytes.  Peeks at what
    has arrived; the bytes of an unfinished header are consumed (they all
    belong to it), so each wake-up makes progress and the header costs a few
    system calls.  If the peer closes first, raises ``closed(received,
    inside)`` (``inside``: while taking bytes already peeked).
    """
    received = bytearray()
    while True:
        peeked = await sock.recv(max_length - len(received), socket.MSG_PEEK)
        if not peeked:
            raise closed(len(received), False)
        length = measure(bytes(received + peeked))
        wanted = len(peeked) if length is None else length - len(received)
        while wanted:  # the bytes are buffered: this returns at once
            taken = await sock.recv(wanted)
            if not taken:
                raise closed(len(received), True)
            received += taken
            wanted -= len(taken)
        if length is not None:
            return bytes(received)
