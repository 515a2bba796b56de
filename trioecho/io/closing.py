"""Closing without losing replies: what broke a connection, in words, and the
lossless close's drain (read and discard the peer's input until its end,
while it still takes its replies, so that closing sends no reset).
"""

from __future__ import annotations

import fcntl
import ssl
import struct
import termios

import trio

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
    (``SIOCOUTQ``), or None where that cannot be asked."""
    if not isinstance(stream, trio.SocketStream):
        return None
    try:
        raw = fcntl.ioctl(stream.socket.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return None
    return int(struct.unpack("i", raw)[0])


async def drain_until_eof(stream: trio.abc.Stream, linger: float) -> None:
    """Discard ``stream``'s input until its end, so that closing sends no reset.

    While replies are still queued for the peer, this goes on as long as the
    peer takes more of them at least every ``linger`` seconds: a reading
    peer gets them all, however much it sends meanwhile.  Once all are
    delivered, a peer still sending gets ``DELIVERED_DRAIN_BYTES`` more (and
    the time left) before the close: a reset then costs it nothing it was owed.
    """
    unsent = _unsent(stream)
    deadline = trio.current_time() + linger
    spare = DELIVERED_DRAIN_BYTES
    while True:
        with trio.move_on_at(deadline):
            data = await stream.receive_some(64 * 1024)
            if not data:
                return  # the peer's end: nothing left unread, no reset
            if not _unsent(stream):  # all delivered (or unknown)
                spare -= len(data)
                if spare <= 0:
                    return
            continue
        now_unsent = _unsent(stream)
        if unsent is None or now_unsent is None or not 0 < now_unsent < unsent:
            return  # no progress for `linger` seconds
        unsent = now_unsent  # the peer is still reading its replies
        deadline = trio.current_time() + linger
