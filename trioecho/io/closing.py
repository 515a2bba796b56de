"""Closing without losing replies: what broke a connection, in words, and the
lossless close's drain (read and discard the peer's input until its end,
while it still takes its replies by the send rule of
:mod:`~trioecho.io.send_deadline`, so that closing sends no reset).
"""

from __future__ import annotations

import fcntl
import ssl
import struct
import termios

import trio

from trioecho.io.send_deadline import SendDeadline
from trioecho.io.tls_socket import TLSSocketStream

__all__ = ["DELIVERED_DRAIN_BYTES", "broken_reason", "drain_until_eof"]


DELIVERED_DRAIN_BYTES = 1 << 20


def broken_reason(exc: BaseException) -> str:
    """What broke a connection, never empty: Trio's BrokenResourceError often
    has no message of its own, and an ssl.SSLEOFError's cause may say little."""
    for error in (exc, exc.__cause__, exc.__context__):
        if error is not None and str(error):
            return str(error)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError) or "SSL" in type(exc).__name__:
        return "the peer ended the TLS stream without close_notify"
    return "the peer closed the connection abruptly"


def _unsent(stream: trio.abc.Stream) -> int | None:
    """Bytes of a TCP stream's output the peer has not acknowledged yet
    (``SIOCOUTQ``), not counting the FIN the close has queued (it takes one
    sequence number), or None where that cannot be asked."""
    if not isinstance(stream, trio.SocketStream | TLSSocketStream):
        return None
    try:
        raw = fcntl.ioctl(stream.socket.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return None
    return max(0, int(struct.unpack("i", raw)[0]) - 1)


async def drain_until_eof(
    stream: trio.abc.Stream,
    linger: float,
    send_timeout: float | None = None,
    min_send_rate: float | None = None,
) -> None:
    """Discard ``stream``'s input until its end, so that closing sends no reset.

    While replies are still queued for the peer (its unacknowledged output,
    ``SIOCOUTQ``), this goes on for as long as the peer takes them by the
    send rule of :mod:`~trioecho.io.send_deadline`: more of them at least
    every ``send_timeout`` seconds (every ``linger`` seconds without one)
    and, past the first ``send_timeout`` seconds, at ``min_send_rate`` on
    average.  Progress is looked at every ``linger`` seconds, or a quarter
    of the stall timeout if that is shorter.  A reading peer gets them all,
    however much it sends meanwhile.  Once all are delivered (or where that
    cannot be known), the peer gets ``linger`` seconds more for its end; a
    peer still sending gets ``DELIVERED_DRAIN_BYTES`` more (within that
    time) before the close: a reset then costs it nothing it was owed.
    """
    stall = linger if send_timeout is None else send_timeout
    now = trio.current_time()
    rule = SendDeadline(stall, None if send_timeout is None else min_send_rate, now)
    look = min(linger, stall / 4) if linger > 0 else stall / 4
    unsent = _unsent(stream)
    look_at = now + (look if unsent else linger)
    spare = DELIVERED_DRAIN_BYTES
    while True:
        with trio.move_on_at(look_at):
            data = await stream.receive_some(64 * 1024)
            if not data:
                return  # the peer's end: nothing left unread, no reset
            if not _unsent(stream):  # all delivered (or unknown)
                spare -= len(data)
                if spare <= 0:
                    return
            continue
        now = trio.current_time()
        if not unsent:
            return  # all delivered (or unknown), and `linger` seconds passed
        now_unsent = _unsent(stream)
        if not now_unsent:  # all delivered now: `linger` seconds for the end
            unsent, look_at = now_unsent, now + linger
            continue
        deadline = rule.took(unsent - now_unsent, now)
        if now >= deadline:
            return  # stalled, or below the floor
        unsent, look_at = now_unsent, min(now + look, deadline)
