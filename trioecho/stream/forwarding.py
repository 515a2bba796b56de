"""Passing a stream's input on to another stream, checked by its framer
(:meth:`~trioecho.stream.message_stream.MessageStream.forward_to`).

:func:`forward_to` claims the source's receiving, serves the forwarding
with :func:`~trioecho.stream.driver.drive` and ends it (the framer's end
of input checked, the close reason set, or the error raised).
:class:`_Forwarding` is the run the driver serves: its ``step`` checks one
read with the framer's forwarding mode and sends it on to the sink at
once; what the sink did not take, the task sends (:meth:`_Forwarding.settle`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, cast

import trio

from trioecho.errors import ConnectionClosedError, SinkError, TrioEchoError
from trioecho.framing.base import Buffer, ForwardingFramer, can_forward
from trioecho.io.pump import PumpedConnection
from trioecho.reasons import CloseReason
from trioecho.stream.driver import drive
from trioecho.stream.pumped import forward_pumped
from trioecho.stream.receiving import idle_deadline

if TYPE_CHECKING:
    from trioecho.stream.message_stream import MessageStream

__all__ = ["forward_to"]


def forward_to(source: MessageStream, sink: MessageStream) -> Coroutine[Any, Any, None]:
    """:meth:`MessageStream.forward_to
    <trioecho.stream.message_stream.MessageStream.forward_to>`, to await:
    its checks (:meth:`_Forwarding.begin`), then the input forwarded until
    it ends or receiving stops, by :func:`~trioecho.stream.driver.drive`."""
    return drive(source, _Forwarding(source, sink))


class _Forwarding:
    """One :meth:`MessageStream.forward_to`: the step that checks one read
    and sends it on to the sink at once, and what the task must settle.

    ``step`` is what the hub calls inline (the task path calls it the same
    way): it returns ``b""`` (nothing to send back to the source) to go on,
    or None when the connection needs its task: the input ended, the sink
    did not take everything (``owed``), sending failed, or a header was bad
    (``ended``, with ``error`` set for the last two).
    """

    __slots__ = ("_framer", "_pumped", "ended", "error", "owed", "owed_frames", "sink", "source")

    # The hub's waits have no idle deadline while forwarding (the task's
    # reads do: see serve_in_task).
    deadline = math.inf

    reads_at_once = False  # the memory budget first, before the first read

    def __init__(self, source: MessageStream, sink: MessageStream) -> None:
        self.source = source
        self.sink = sink

    def begin(self) -> None:
        """Check the source, claim its receiving, and set up the run."""
        source = self.source
        if source.transport.closed:
            raise trio.ClosedResourceError("the message stream was closed")
        if source._receiving:
            raise trio.BusyResourceError("another task is already receiving from this stream")
        if source.has_pending or not can_forward(source.framer):
            raise RuntimeError(
                "forward_to() needs a length-field or fixed-size framer at a frame boundary, "
                "with every message read returned"
            )
        self._pumped: PumpedConnection | None = None  # the C pump's state, made on first use
        self._framer = cast(ForwardingFramer, source.framer)  # checked above
        self.ended = False
        self.error: Exception | None = None  # a bad header's, or the sink's send
        self.owed: Buffer = b""
        self.owed_frames = 0
        source._receiving = True
        source._forwarding = self

    def release(self) -> None:
        """Give the source's receiving back."""
        self.source._receiving = False
        self.source._forwarding = None

    def serve_pumped(self) -> Awaitable[None]:
        """Served by the C pump, to the sink (or the inline path, if the
        sink cannot take bytes from C)."""
        return forward_pumped(self)

    def step(self, data: bytes) -> bytes | None:
        """Check and send on one read (``b""``: the end of the input)."""
        if not data:
            self.ended = True
            return None
        chunk, frames, error = self._framer.forward(data)
        self.source.messages_received += frames
        if chunk:
            sink = self.sink
            try:
                rest = sink.transport.send_nowait(chunk)
            except ConnectionClosedError as exc:
                self.fail(SinkError(exc))
                return None
            if rest is not None:
                self.owed, self.owed_frames = rest, frames
                if error is not None:
                    self.fail(error)
                return None
            sink.messages_sent += frames
        if error is not None:
            self.fail(error)
            return None
        return b""

    def fail(self, error: Exception) -> None:
        """End the forwarding with ``error``, raised once what is owed is sent."""
        self.error = error
        self.ended = True

    async def serve_in_task(self) -> None:
        """One read, checked and sent on, in this task (the reference path);
        each wait for it bounded by the source's ``idle_timeout``."""
        source = self.source
        data = await source.transport.receive_some(source._receive_size, idle_deadline(source))
        if data is not None:  # else stop_receiving(): the driver's ready_to_read() says so
            self.step(data)

    def pumped_connection(
        self, scanner: object, sink_fd: int, due: int, read_size: int
    ) -> PumpedConnection:
        """The forwarding's state in the C pump (made on first use) for
        ``scanner``'s C framer, sending to ``sink_fd``, the frame in progress
        owing ``due``."""
        conn = self._pumped
        if conn is None:
            address = cast(int, getattr(scanner, "address"))  # noqa: B009 - forwarding_state() said so
            conn = self._pumped = PumpedConnection.forwarding(
                address, scanner, sink_fd, due, read_size
            )
        else:
            conn.set_due(due)
        return conn

    def take_pumped_counts(self) -> None:
        """Add what the pump counted since the last take: frames and bytes
        received from the source, and taken by the sink."""
        conn = self._pumped
        if conn is None:
            return
        received, sent = conn.take_message_counts()
        self.source.messages_received += received
        self.sink.messages_sent += sent
        received, sent = conn.take_byte_counts()
        self.source.transport.bytes_received += received
        self.sink.transport.bytes_sent += sent

    async def settle(self) -> None:
        """In the task: send what the sink did not take, waiting for it."""
        owed, self.owed = self.owed, b""
        try:
            await self.sink.send_framed(owed, self.owed_frames)
        except (TrioEchoError, trio.BrokenResourceError) as exc:
            raise SinkError(exc) from exc

    def finish(self) -> None:
        """The end: raise the error the step found, if any; else check the
        framer's end of input (:class:`IncompleteFrameError` inside a
        frame) and record the peer's close."""
        error = self.error
        if error is not None:
            self.error = None
            try:
                if isinstance(error, SinkError):
                    raise error from error.error
                raise error
            finally:
                del error  # no cycle through this frame (see _take_handback)
        source = self.source
        source.framer.feed_eof()
        if source._close_reason is None:
            source._close_reason = CloseReason.PEER_CLOSED
