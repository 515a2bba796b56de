"""Serving a sans-IO session on a message stream
(:meth:`~trioecho.stream.message_stream.MessageStream.run_session`).

:func:`run_session` claims the stream's receiving, serves the session with
:func:`~trioecho.stream.driver.drive` and ends it: the close reason, then
the session's error raised or its ending returned.  :class:`_SessionRun`
is the run the driver serves: its ``step`` feeds the session one read and
accounts for the output (counters, memory account, dropped lines, the
idle deadline); the pumped paths (:mod:`~trioecho.stream.pumped`) use its
state in the C pump.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, cast

import trio

from trioecho.errors import FrameTooLongError
from trioecho.framing.base import Buffer
from trioecho.io.pump import PumpedConnection
from trioecho.reasons import CloseReason
from trioecho.stream.driver import drive
from trioecho.stream.pumped import serve_engine_pumped, serve_reads_pumped
from trioecho.stream.receiving import idle_deadline
from trioecho.stream.session import Session, SessionOutput

if TYPE_CHECKING:
    from trioecho.stream.message_stream import MessageStream

__all__ = ["PumpableSession", "run_session"]


class PumpableSession(Session, Protocol):
    """A session the hub's C pump can serve (the echo session with its C
    engine): see :class:`~trioecho.services.echo_session.EchoSession`."""

    def pump_handle(self) -> tuple[int, object, bool] | None: ...

    def take_input(self) -> bytes: ...

    def put_input(self, data: bytes) -> None: ...

    def end_pumped(self, status: int, length: int, replies: int) -> SessionOutput: ...


def run_session(
    stream: MessageStream,
    session: Session,
    on_dropped: Callable[[FrameTooLongError], None] | None,
) -> Coroutine[Any, Any, SessionOutput | None]:
    """:meth:`MessageStream.run_session
    <trioecho.stream.message_stream.MessageStream.run_session>`, to await:
    its checks (:meth:`_SessionRun.begin`), then the session served until
    it ends, by :func:`~trioecho.stream.driver.drive` (the one coroutine a
    parked connection keeps for it)."""
    return drive(stream, _SessionRun(stream, session, on_dropped))


class _SessionRun:
    """One :meth:`MessageStream.run_session`: the step that feeds the
    session one read and accounts for its output.

    ``step`` is what the hub calls inline (and the task path calls the same
    way): it returns the bytes to send, or None when the connection needs
    its task -- the session ended (``ending``), or the memory budget must be
    waited for; the bytes still to send then are ``owed``.
    """

    __slots__ = (
        "_on_dropped",
        "_progress_seen",
        "_pump_handle",
        "_pumped",
        "_session",
        "deadline",
        "ended",
        "ending",
        "owed",
        "owed_replies",
        "progress",
        "pumpable",
        "splits",
        "stream",
    )

    reads_at_once = True  # a session reads at once (a forwarding waits for memory first)

    def __init__(
        self,
        stream: MessageStream,
        session: Session,
        on_dropped: Callable[[FrameTooLongError], None] | None,
    ) -> None:
        self.stream = stream
        self._session = session
        self._on_dropped = on_dropped

    def begin(self) -> None:
        """Check the stream, claim its receiving, and set up the run."""
        stream = self.stream
        if stream.has_pending:
            raise RuntimeError("run_session() on a stream whose framer holds unread messages")
        if stream._receiving:
            raise trio.BusyResourceError("another task is already receiving from this stream")
        if stream.transport.closed:
            raise trio.ClosedResourceError("the message stream was closed")
        self.ending: SessionOutput | None = None
        self.ended = False  # ending is set (the driver's test)
        self.owed: Buffer = b""
        self.owed_replies = 0
        # Reads that completed (or dropped) a message, and the idle deadline
        # they keep moving: on the task path at each such read, inline at the
        # watchdog's next look (renew_deadline_on_progress).
        self.progress = 0
        self._progress_seen = 0
        self.deadline = idle_deadline(stream)
        # The C pump serves the session if it can (see serve_engine_pumped):
        # what it is served with, and its state, made on first use.
        session = self._session
        pump_handle = getattr(session, "pump_handle", None)
        self._pump_handle = None if pump_handle is None else pump_handle()
        self.pumpable = None if self._pump_handle is None else cast(PumpableSession, session)
        self._pumped: PumpedConnection | None = None
        self.splits = False  # _pumped splits the messages (reading_connection)
        stream._receiving = True
        stream._run = self

    def release(self) -> None:
        """Give the stream's receiving back."""
        stream = self.stream
        stream._run = None
        stream._receiving = False

    def serve_pumped(self) -> Awaitable[None]:
        """Served by the C pump: its echo engine, or its reads for Python."""
        if self.pumpable is None:
            return serve_reads_pumped(self)
        return serve_engine_pumped(self)

    def pumped_connection(self) -> PumpedConnection:
        """The session's state in the C pump, made on first use."""
        if self._pumped is None:
            assert self._pump_handle is not None
            address, owner, raw = self._pump_handle
            self._pumped = PumpedConnection(address, owner, raw, self.stream._receive_size)
        return self._pumped

    def reading_connection(self) -> PumpedConnection:
        """The connection's reading state in the C pump (the step answers,
        or :meth:`answer` where the pump splits the messages), made on first
        use; it holds the session's unfinished message while the pump splits
        (until :meth:`restore_splitting`)."""
        take_splitting = getattr(self._session, "take_splitting", None)
        splitting = None if take_splitting is None else take_splitting()
        conn = self._pumped
        if conn is None or self.splits != (splitting is not None):
            size = self.stream._receive_size
            if splitting is None:
                conn = PumpedConnection.reading(size)
            else:
                scanner = splitting[0]
                conn = PumpedConnection.reading(size, scanner.address, scanner)
            self._pumped = conn
            self.splits = splitting is not None
        if splitting is not None:
            conn.set_input(splitting[1])
        return conn

    def restore_splitting(self) -> None:
        """Give the unfinished message the C pump held back to the session."""
        if self.splits and self._pumped is not None:
            self._session.restore_splitting(self._pumped.take_input())  # type: ignore[attr-defined]

    def answer(self, messages: list[bytes]) -> Buffer | None:
        """Answer the messages the C pump split; as :meth:`step`."""
        conn = self._pumped
        assert conn is not None
        size = conn.buffered
        conn.accounted = size
        return self._took(self._session.answer(messages), size, False)  # type: ignore[attr-defined]

    def rescan(self) -> Buffer | None:
        """After the pump stopped at a bad header: the session scans the
        bytes from it on (given back to it) and ends; as :meth:`step`."""
        session = self._session
        return self._took(session.feed(b""), session.buffered, False)

    def account(self, size: int) -> bool:
        """The pump's unfinished message is ``size`` bytes: record it in the
        memory account; whether the connection may read on."""
        stream = self.stream
        account = stream._account
        return account is None or account.buffer(size, stream._receive_size)

    def take_pumped_counts(self) -> None:
        """Add what the pump counted since the last take to the stream's
        counters and its transport's byte counters."""
        conn = self._pumped
        if conn is None:
            return
        stream = self.stream
        received, sent = conn.take_message_counts()
        stream.messages_received += received
        stream.messages_sent += sent
        received, sent = conn.take_byte_counts()
        stream.transport.bytes_received += received
        stream.transport.bytes_sent += sent

    def end(self, ending: SessionOutput, wire: Buffer, replies: int) -> None:
        """The session ended (``ending``) with ``wire`` still to send."""
        self.ending = ending
        self.ended = True
        self._owe(wire, replies)

    async def serve_in_task(self) -> None:
        """One read and its output, in this task (the reference path)."""
        stream = self.stream
        data = await stream.transport.receive_some(stream._receive_size, self.deadline)
        if data is None:
            return  # stop_receiving(): the driver's ready_to_read() says so
        progress = self.progress
        wire = self.step(data)
        if self.progress != progress:
            self.deadline = idle_deadline(stream)
        if wire:
            await stream.send_framed(wire, 0)

    def step(self, data: bytes) -> Buffer | None:
        """Feed one read (``b""``: the end of the input); see the class docstring."""
        session = self._session
        output = session.feed(data) if data else session.feed_eof()
        return self._took(output, session.buffered, not data)

    def _took(self, output: SessionOutput, buffered: int, at_end: bool) -> Buffer | None:
        """Count and account for the session's ``output`` (``buffered``: its
        unfinished message now); the bytes to send, or None (see ``step``)."""
        wire, replies, received, stopped, error, dropped = output
        stream = self.stream
        stream.messages_received += received
        account = stream._account
        fits = account is None or account.buffer(buffered, stream._receive_size)
        if dropped:
            self._report_dropped(dropped)
        if received or dropped:
            self.progress += 1
        if stopped or error is not None or at_end:
            self.end(output, wire, replies)
            return None
        if not fits:
            self._owe(wire, replies)  # the task waits for the memory budget
            return None
        stream.messages_sent += replies
        return wire

    def _owe(self, wire: Buffer, replies: int) -> None:
        """Hand the connection back with ``wire`` still to send (and count
        its replies once they are)."""
        self.owed = wire
        self.owed_replies = replies

    async def settle(self) -> None:
        """In the task: send what the step owes (counting its replies)."""
        owed, self.owed = self.owed, b""
        await self.stream.send_framed(owed, self.owed_replies)

    def _report_dropped(self, dropped: tuple[FrameTooLongError, ...]) -> None:
        self.stream.lines_dropped += len(dropped)
        if self._on_dropped is not None:
            for error in dropped:
                self._on_dropped(error)

    def renew_deadline_on_progress(self, now: float) -> None:
        """The watchdog's look (inline serving): a message since the last
        look moves the idle deadline to ``idle_timeout`` from now."""
        progress = self.progress
        if self._pumped is not None:
            progress += self._pumped.progress
        if progress != self._progress_seen:
            self._progress_seen = progress
            timeout = self.stream.transport.idle_timeout
            if timeout is not None:
                self.deadline = now + timeout
                self.stream.transport.renew_deadline(self.deadline)

    def finish(self) -> SessionOutput | None:
        """The ending: raise the session's error, or return the output (and
        record why the stream closed: its stop message, or the peer's end)."""
        ending = self.ending
        assert ending is not None
        stream = self.stream
        if ending.error is None and stream._close_reason is None:
            stream._close_reason = (
                CloseReason.STOP_MESSAGE if ending.stopped else CloseReason.PEER_CLOSED
            )
        error = ending.error
        if error is not None:
            self.ending = None
            try:
                raise error
            finally:
                del error, ending  # no cycle through this frame (see _take_handback)
        return ending
