"""Reading one header off a socket and nothing after it: :func:`receive_header`
(the PROXY protocol's, before the connection is served)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio

__all__ = ["peek_start", "receive_header"]


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


# While a request has come in part: look again this often (a client sends
# its few bytes in one segment; the caller's timeout bounds the wait).
PARTIAL_POLL = 0.005


async def peek_start(sock: trio.socket.SocketType, request: bytes, tls_first_byte: int) -> str:
    """How the connection on ``sock`` starts, without consuming a byte:
    ``"request"`` (its first bytes are ``request``), ``"tls"`` (its first
    byte is ``tls_first_byte``: a TLS record), ``"other"`` (anything else),
    or ``"closed"`` (the peer closed first).  Waits for as many bytes as it
    takes to tell; the caller bounds the wait."""
    while True:
        peeked = await sock.recv(len(request), socket.MSG_PEEK)
        if not peeked:
            return "closed"
        if peeked[0] == tls_first_byte:
            return "tls"
        if not request.startswith(peeked):
            return "other"
        if len(peeked) == len(request):
            return "request"
        await trio.sleep(PARTIAL_POLL)  # a part of the request: the rest is on its way
