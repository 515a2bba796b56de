"""The receive side of a :class:`~trioecho.stream.message_stream.MessageStream`:
reading from its transport, splitting with its framer, holding the
messages read until they are delivered.

Memory is bounded: the stream reads again only when every message of the
previous read has been delivered, and the framer keeps at most one
unfinished frame (``max_frame``) plus one read.  With an ``account`` every
read is admitted by the budget first (and may wait for it), and the account
knows the bytes buffered and the bytes of a send in progress.

Deadlines: ``idle_timeout`` bounds each wait for a complete message
(:func:`idle_deadline`).

These functions work on the stream's private state (``_pending[_next:]``,
the framer's error held back, the end of the input seen) for its own
methods and for the runs of :mod:`~trioecho.stream.driver`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from trioecho.errors import FrameTooLongError
from trioecho.framing.base import drops_too_long
from trioecho.reasons import CloseReason

if TYPE_CHECKING:
    from trioecho.stream.message_stream import MessageStream

__all__ = [
    "NO_MESSAGES",
    "delivered",
    "fill",
    "idle_deadline",
    "must_wait_for_memory",
    "wait_for_memory",
]

# The empty _pending of every stream (an idle stream holds no list of its
# own).  Never mutated: _feed() replaces an empty _pending, and only a
# non-empty one is handed out.
NO_MESSAGES: list[bytes] = []


def idle_deadline(stream: MessageStream) -> float:
    """When a wait for the next complete message that starts now must end."""
    timeout = stream.transport.idle_timeout
    return math.inf if timeout is None else trio.current_time() + timeout


async def fill(stream: MessageStream) -> bool:
    """Make ``stream._pending`` non-empty; return False at the end of the
    messages.  Raises as ``receive_message()`` documents."""
    if stream.transport.closed:
        raise trio.ClosedResourceError("the message stream was closed")
    if stream._receiving:
        raise trio.BusyResourceError("another task is already receiving from this stream")
    stream._receiving = True
    deadline = idle_deadline(stream)
    try:
        while stream._next >= len(stream._pending):
            if stream._error is not None:
                error = stream._error
                if drops_too_long(stream.framer):
                    # Discard mode: report once, then go on after the bad line.
                    stream._error = None
                    stream._resume = True
                raise error
            if stream._resume:
                stream._resume = False
                _feed(stream, b"")
                continue
            if stream._at_eof:
                stream.framer.feed_eof()  # raises IncompleteFrameError inside a frame
                return False
            if must_wait_for_memory(stream):
                await wait_for_memory(stream)
            data = await stream.transport.receive_some(stream._receive_size, deadline)
            if data is None:
                return False  # stop_receiving()
            if not data:
                stream._at_eof = True
                if stream._close_reason is None:
                    stream._close_reason = CloseReason.PEER_CLOSED
                continue
            _feed(stream, data)
        return True
    finally:
        stream._receiving = False


def delivered(stream: MessageStream) -> None:
    """Every message read was delivered: only the unfinished frame is held."""
    if stream._account is not None:
        stream._account.set_buffered(stream.framer.buffered)


def must_wait_for_memory(stream: MessageStream) -> bool:
    """Whether the memory budget does not let ``stream`` read now (a
    test, so that a read it admits creates no coroutine)."""
    account = stream._account
    return (
        account is not None
        and not stream.transport.stopping
        and not account.fits(stream._receive_size)
    )


async def wait_for_memory(stream: MessageStream) -> None:
    """Wait until the memory budget lets ``stream`` read again."""
    assert stream._account is not None
    await stream._account.admit(stream._receive_size)


def _feed(stream: MessageStream, data: bytes) -> None:
    """Split one read; its messages join ``_pending`` (a framing error is
    held back until the messages before it are delivered)."""
    framer = stream.framer
    try:
        frames = framer.feed(data)
    except FrameTooLongError as exc:
        frames = exc.frames  # delivered before the error
        exc.frames = []
        stream._error = exc
    if stream._pending:
        stream._pending.extend(frames)
    else:
        stream._pending = frames
    stream.messages_received += len(frames)
    if stream._account is not None:
        # The unfinished frame, and this read's messages until delivered.
        stream._account.set_buffered(framer.buffered + (len(data) if frames else 0))
