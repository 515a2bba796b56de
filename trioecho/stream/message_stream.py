"""A message stream: framed messages over any ``trio.abc.Stream``.

``MessageStream`` is the one owner of a connection's data path: its
:class:`~trioecho.io.transport.Transport` (``transport``), its framer, its
share of the server's memory budget (``account``) and its counters
(``messages_received``, ``messages_sent``, ``lines_dropped``).  Everything
above it -- handlers, the echo service, the relay -- sends and receives
through its methods, never through the transport.

Two ways to use it:

* message by message: ``receive_message()`` / ``async for`` /
  ``receive_messages()`` and ``send_message()`` / ``send_messages()`` /
  ``send_framed()``;
* a whole sans-IO session (:meth:`run_session`): bytes in, bytes to send
  out, as :class:`~trioecho.services.echo_session.EchoSession` and
  :class:`~trioecho.stream.session.RespondSession` are.  On a plain TCP socket on
  the readiness hub the hub runs the session itself on every read (no task
  wakes per message); elsewhere (TLS, in-memory streams, Trio's own waits)
  this task does, with the same session object and so the same bytes.

Outcomes, as documented on each method:

* a clean end of stream ends ``async for`` and makes ``receive_message()``
  raise :class:`trio.EndOfChannel`;
* a stream that ends inside a frame raises :class:`IncompleteFrameError`;
* input that breaks the framing rules raises a :class:`FramingError`
  subclass, after every message completed before it has been delivered;
* a transport broken by the peer or the network raises
  :class:`ConnectionClosedError` (the transport's exception is ``__cause__``);
* using the stream after ``aclose()`` raises :class:`trio.ClosedResourceError`;
* two tasks receiving at once raise :class:`trio.BusyResourceError`, and two
  sending at once do whatever the transport does (Trio's streams raise
  ``BusyResourceError`` too).

Memory is bounded: the stream reads again only when every message of the
previous read has been delivered, and the framer keeps at most one
unfinished frame (``max_frame``) plus one read.  With an ``account`` every
read is admitted by the budget first (and may wait for it), and the account
knows the bytes buffered and the bytes of a send in progress.

Checkpoints: a call that has to wait yields to Trio; one that finds its
messages already read (or its bytes sent at once) yields at least every
``CHECKPOINT_EVERY`` calls, so cancellation and other tasks get their turn
without a scheduler round trip per message.

Deadlines: ``idle_timeout`` bounds each wait for a complete message.  A
server enforces the deadlines of all its streams from one task
(:meth:`hand_over_deadlines`, :meth:`expire_if_idle`); see
:mod:`trioecho.io.transport`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

import trio

from trioecho.arguments import check_rate
from trioecho.errors import ConnectionClosedError, FrameTooLongError, SinkError, TrioEchoError
from trioecho.framing.base import Buffer, ForwardingFramer, Framer, can_forward, drops_too_long
from trioecho.framing.config import FramingConfig, framing_config, new_framer
from trioecho.io.budget import Account
from trioecho.io.opening import open_transport
from trioecho.io.pump import END_OF_INPUT, ENDED, SHORT_SEND, SOCKET_ERROR, PumpedConnection
from trioecho.io.readiness import Readiness
from trioecho.io.socket_transport import broken_while
from trioecho.io.transport import CHECKPOINT_EVERY, Transport
from trioecho.logtext import format_address
from trioecho.reasons import CloseReason, close_reason
from trioecho.stream.session import Session, SessionOutput

__all__ = [
    "CHECKPOINT_EVERY",
    "DEFAULT_RECEIVE_SIZE",
    "RAW_RECEIVE_SIZE",
    "MessageStream",
    "Session",
    "SessionOutput",
    "expire_if_idle",
    "hand_over_deadlines",
]

DEFAULT_RECEIVE_SIZE = 64 * 1024
RAW_RECEIVE_SIZE = 1024  # the seed's recv(1024): in raw framing, one read is one message


# The empty _pending of every stream (an idle stream holds no list of its
# own).  Never mutated: _feed() replaces an empty _pending, and only a
# non-empty one is handed out.
_NO_MESSAGES: list[bytes] = []


def receive_size_for(framing: str) -> int:
    """How many bytes a stream of ``framing`` reads at a time."""
    return RAW_RECEIVE_SIZE if framing == "raw" else DEFAULT_RECEIVE_SIZE


class MessageStream(trio.abc.AsyncResource):
    """Framed messages over ``transport_stream``.

    ``transport_stream`` is any ``trio.abc.Stream`` (the stream builds its
    :class:`~trioecho.io.transport.Transport` with
    :func:`~trioecho.io.opening.open_transport`, passing ``idle_timeout``,
    ``send_timeout``, ``min_send_rate`` and ``readiness``), or a
    ``Transport`` the caller opened (those four must then be left out).  ``framer`` is a framer,
    a :class:`~trioecho.framing.config.FramingConfig` (its framer is
    built when first used) or a framing name (``"len"``); it defaults to
    lines.  ``receive_size`` is the most
    bytes asked of the transport per read.  ``idle_timeout`` (seconds)
    bounds how long ``receive_message()`` waits for a complete message and
    raises :class:`IdleTimeoutError` past it; ``send_timeout`` is how long
    a send may wait with no progress on a peer that does not read (the
    deadline restarts each time the peer takes more), and
    ``min_send_rate`` the bytes a second a waiting send must average once
    past ``send_timeout`` (the send rule of
    :mod:`~trioecho.io.send_deadline`); a send that breaks either raises
    :class:`SlowReaderError` (closing the stream).  ``None`` means no
    limit.  ``readiness`` (``"hub"``, ``"trio"`` or None for the default)
    is how the transport waits on a plain TCP socket.  ``account`` is the
    stream's share of a :class:`~trioecho.io.budget.MemoryBudget`; the stream
    gives it back when it closes.
    """

    __slots__ = (
        "_account",
        "_at_eof",
        "_close_reason",
        "_error",
        "_forwarding",
        "_framer",
        "_framing",
        "_next",
        "_pending",
        "_receiving",
        "_resume",
        "_run",
        "lines_dropped",
        "messages_received",
        "messages_sent",
        "receive_size",
        "transport",
        "transport_stream",
    )

    def __init__(
        self,
        transport_stream: trio.abc.Stream | Transport,
        framer: Framer | FramingConfig | str | None = None,
        *,
        receive_size: int = DEFAULT_RECEIVE_SIZE,
        idle_timeout: float | None = None,
        send_timeout: float | None = None,
        min_send_rate: float | None = None,
        readiness: Readiness | None = None,
        account: Account | None = None,
    ) -> None:
        if not isinstance(transport_stream, trio.abc.Stream | Transport):
            raise TypeError(
                "MessageStream needs a trio.abc.Stream (or a Transport), "
                f"not {type(transport_stream).__name__}"
            )
        if receive_size < 1:
            raise ValueError(f"receive_size must be at least 1, not {receive_size}")
        if isinstance(transport_stream, Transport):
            if (
                idle_timeout is not None
                or send_timeout is not None
                or min_send_rate is not None
                or readiness is not None
            ):
                raise ValueError(
                    "idle_timeout, send_timeout, min_send_rate and readiness belong to the "
                    "Transport when one is given"
                )
            self.transport = transport_stream
        else:
            self.transport = open_transport(
                transport_stream,
                idle_timeout=idle_timeout,
                send_timeout=send_timeout,
                min_send_rate=check_rate(min_send_rate, "min_send_rate"),
                readiness=readiness,
            )
        self.transport_stream = self.transport.stream
        self._account = account
        if account is not None:
            self.transport.on_held_send = account.set_sending
        # A FramingConfig builds its framer when first needed (a session
        # never needs one: an idle connection holds less).
        self._framing: FramingConfig | None = None
        self._framer: Framer | None = None
        if isinstance(framer, FramingConfig | str):
            self._framing = framing_config(framer, "framer")
        else:
            self._framer = new_framer(framer)
        self.receive_size = receive_size
        # Messages read but not yet delivered: _pending[_next:].  A list and an
        # index rather than a deque: an idle connection keeps it small.
        self._pending: list[bytes] = _NO_MESSAGES
        self._next = 0
        self._error: FrameTooLongError | None = None  # raise once _pending is empty
        self._resume = False  # discard mode: feed(b"") again after the error
        self._at_eof = False
        self._receiving = False
        self._run: _SessionRun | None = None  # run_session(), while it runs
        self._forwarding: _Forwarding | None = None  # forward_to(), while it runs
        self.messages_received = 0  # complete messages read from the transport
        self.messages_sent = 0  # messages whose bytes the transport accepted
        self.lines_dropped = 0  # over-long lines dropped in discard mode
        self._close_reason: CloseReason | str | None = None

    def __repr__(self) -> str:
        framing = self._framing.framing if self._framing is not None else type(self.framer).__name__
        addresses = self.addresses()
        peer = f" with {format_address(addresses[1])}" if addresses is not None else ""
        state = "closed" if self.transport.closed else "open"
        return (
            f"<MessageStream {state}{peer}, framing={framing!r}, "
            f"{self.messages_received} received, {self.messages_sent} sent>"
        )

    @property
    def close_reason(self) -> CloseReason | str | None:
        """Why the connection ended, once it has: :attr:`CloseReason.PEER_CLOSED`
        (the end of the input) or :attr:`CloseReason.STOP_MESSAGE` (a
        session's stop message), set by the stream; the server sets the
        others.  A handler may set a :class:`CloseReason`, or a reason of its
        own (any non-empty ``str``: counted as :attr:`CloseReason.OTHER`, its
        text in the access record); anything else raises ``TypeError`` here.
        A ``str`` equal to a member's value reads back as that member."""
        return self._close_reason

    @close_reason.setter
    def close_reason(self, reason: CloseReason | str | None) -> None:
        self._close_reason = close_reason(reason)

    @property
    def bytes_received(self) -> int:
        """Bytes read from the connection so far (after TLS: the plain ones)."""
        return self.transport.bytes_received

    @property
    def bytes_sent(self) -> int:
        """Bytes the connection has taken so far."""
        return self.transport.bytes_sent

    @property
    def framer(self) -> Framer:
        """The framer that splits input and frames output."""
        framer = self._framer
        if framer is None:
            assert self._framing is not None
            framer = self._framer = self._framing.new_framer()
        return framer

    @framer.setter
    def framer(self, framer: Framer) -> None:
        self._framer = framer
        self._framing = None

    @property
    def framing(self) -> FramingConfig | Framer:
        """The framing configuration the stream was given, else its framer
        (either one tells :class:`~trioecho.services.echo_session.EchoSession` how to frame)."""
        return self._framing if self._framing is not None else self.framer

    def addresses(self) -> tuple[Any, Any] | None:
        """``(local, peer)`` socket addresses, or None with no socket (see
        :meth:`Transport.addresses <trioecho.io.transport.Transport.addresses>`)."""
        return self.transport.addresses()

    @property
    def idle_timeout(self) -> float | None:
        return self.transport.idle_timeout

    @idle_timeout.setter
    def idle_timeout(self, value: float | None) -> None:
        self.transport.idle_timeout = value

    @property
    def send_timeout(self) -> float | None:
        return self.transport.send_timeout

    @send_timeout.setter
    def send_timeout(self, value: float | None) -> None:
        self.transport.send_timeout = value

    @property
    def min_send_rate(self) -> float | None:
        """The send rule's floor, bytes a second (None: none)."""
        return self.transport.min_send_rate

    @min_send_rate.setter
    def min_send_rate(self, value: float | None) -> None:
        self.transport.min_send_rate = check_rate(value, "min_send_rate")

    @property
    def account(self) -> Account | None:
        """The stream's share of the server's memory budget, or None."""
        return self._account

    def open_sibling_account(self) -> Account | None:
        """A new share of this stream's memory budget, for a connection this
        one opens (a relay's upstream: its buffers count in the same
        budget); None if this stream has no account."""
        account = self._account
        return None if account is None else account.budget.open_account()

    # -- receiving ---------------------------------------------------------

    async def receive_message(self) -> bytes:
        """Return the next message.

        Raises :class:`trio.EndOfChannel` at a clean end of stream (or after
        :meth:`stop_receiving`), and the errors listed in the module docstring.
        """
        if not await self._fill():
            raise trio.EndOfChannel
        if self.transport.checkpoint_due():
            await trio.lowlevel.checkpoint()
        message = self._pending[self._next]
        self._next += 1
        if self._next == len(self._pending):
            self._pending = _NO_MESSAGES
            self._next = 0
            self._delivered()
        return message

    async def receive_raw(self, max_bytes: int, deadline: float = math.inf) -> bytes | None:
        """Up to ``max_bytes`` as they arrive, past the framer: for a client
        looking at what a server sends before reading any message (a
        greeting in a framing it does not know yet).  ``b""`` at the end of
        the input; :class:`IdleTimeoutError` once ``deadline`` (Trio's
        clock) passes; None after :meth:`stop_receiving`.  RuntimeError
        once the framer holds bytes: they are the framer's."""
        if self.has_pending:
            raise RuntimeError("receive_raw() on a stream whose framer holds bytes")
        return await self.transport.receive_some(max_bytes, deadline)

    async def receive_messages(self) -> list[bytes]:
        """Return every message available now, at least one, in order.

        Messages that arrived together are returned together, so that their
        replies can go out in one write (see :meth:`send_messages`).  Raises
        like :meth:`receive_message`.
        """
        if not await self._fill():
            raise trio.EndOfChannel
        if self.transport.checkpoint_due():
            await trio.lowlevel.checkpoint()
        batch = self._pending[self._next :] if self._next else self._pending
        self._pending = _NO_MESSAGES
        self._next = 0
        self._delivered()
        return batch

    def _delivered(self) -> None:
        """Every message read was delivered: only the unfinished frame is held."""
        if self._account is not None:
            self._account.set_buffered(self.framer.buffered)

    @property
    def has_pending(self) -> bool:
        """Whether bytes or messages were read that no receive returned yet."""
        return (
            self._next < len(self._pending)
            or (self._framer is not None and self._framer.buffered > 0)
            or self._error is not None
            or self._resume
        )

    @property
    def at_frame_boundary(self) -> bool:
        """Whether the input read so far ends at a frame boundary: nothing
        pending (:attr:`has_pending`), no frame half passed on by
        :meth:`forward_to`."""
        return not self.has_pending and not getattr(self._framer, "in_frame", False)

    @property
    def sending(self) -> bool:
        """Whether a send on this stream is waiting for the peer to read."""
        return self.transport.sending

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive_message()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def stop_receiving(self) -> None:
        """End the stream after the messages already received.

        Messages already read from the transport are still delivered (a
        session's replies to them are sent); then receiving ends as at a
        clean end of stream, without waiting for more bytes (a receive
        waiting for them returns at once).  Sending still works.  The server
        calls this on graceful shutdown.
        """
        self.transport.stop_receiving()

    def _idle_deadline(self) -> float:
        """When a wait for the next complete message that starts now must end."""
        timeout = self.transport.idle_timeout
        return math.inf if timeout is None else trio.current_time() + timeout

    async def _fill(self) -> bool:
        """Make ``_pending`` non-empty; return False at the end of the messages."""
        if self.transport.closed:
            raise trio.ClosedResourceError("the message stream was closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving from this stream")
        self._receiving = True
        deadline = self._idle_deadline()
        try:
            while self._next >= len(self._pending):
                if self._error is not None:
                    error = self._error
                    if drops_too_long(self.framer):
                        # Discard mode: report once, then go on after the bad line.
                        self._error = None
                        self._resume = True
                    raise error
                if self._resume:
                    self._resume = False
                    self._feed(b"")
                    continue
                if self._at_eof:
                    self.framer.feed_eof()  # raises IncompleteFrameError inside a frame
                    return False
                if self._must_wait_for_memory():
                    await self._wait_for_memory()
                data = await self.transport.receive_some(self.receive_size, deadline)
                if data is None:
                    return False  # stop_receiving()
                if not data:
                    self._at_eof = True
                    if self._close_reason is None:
                        self._close_reason = CloseReason.PEER_CLOSED
                    continue
                self._feed(data)
            return True
        finally:
            self._receiving = False

    def _must_wait_for_memory(self) -> bool:
        """Whether the memory budget does not let this stream read now (a
        test, so that a read it admits creates no coroutine)."""
        account = self._account
        return (
            account is not None
            and not self.transport.stopping
            and not account.fits(self.receive_size)
        )

    async def _wait_for_memory(self) -> None:
        """Wait until the memory budget lets this stream read again."""
        assert self._account is not None
        await self._account.admit(self.receive_size)

    def _feed(self, data: bytes) -> None:
        framer = self.framer
        try:
            frames = framer.feed(data)
        except FrameTooLongError as exc:
            frames = exc.frames  # delivered before the error
            exc.frames = []
            self._error = exc
        if self._pending:
            self._pending.extend(frames)
        else:
            self._pending = frames
        self.messages_received += len(frames)
        if self._account is not None:
            # The unfinished frame, and this read's messages until delivered.
            self._account.set_buffered(framer.buffered + (len(data) if frames else 0))

    # -- deadlines enforced by a watchdog ---------------------------------------

    def hand_over_deadlines(self) -> None:
        """Let the caller enforce this stream's ``idle_timeout`` by calling
        :meth:`expire_if_idle` periodically (the server does, for all its
        streams from one task), so that a receive waiting on a socket needs
        no cancel scope of its own.  The timeout then fires within one
        period after it is due (two, while :meth:`run_session` is served
        inline).  Only the direct socket transport is affected."""
        self.transport.hand_over_deadlines()

    def expire_if_idle(self, now: float) -> bool:
        """If a receive is waiting past its idle deadline, wake it (it
        raises :class:`IdleTimeoutError`) and return True."""
        run = self._run
        if run is not None:
            run.renew_deadline_on_progress(now)
        return self.transport.expire_if_idle(now)

    # -- serving a session ---------------------------------------------------

    async def run_session(
        self,
        session: Session,
        *,
        on_dropped: Callable[[FrameTooLongError], None] | None = None,
    ) -> SessionOutput | None:
        """Serve the sans-IO ``session`` on this stream until it ends.

        Every read is fed to the session and its output sent.  On a plain
        TCP socket on the readiness hub (with the deadlines handed over, or
        no ``idle_timeout``) the hub does this itself on each read and this
        task sleeps until the connection needs it; otherwise this task does
        it.  The bytes on the wire are the same.  ``on_dropped`` is called
        for each over-long line the session dropped (discard mode), from
        whichever task runs the session.

        Returns the output that ended the session: its stop message
        (``stopped``), or the end of the input; None after
        :meth:`stop_receiving`.  Raises the session's ``error`` once the
        replies before it are sent, and like :meth:`receive_message` and
        :meth:`send_message` otherwise.  Bytes this stream's framer already
        read are not the session's: with :attr:`has_pending` it raises
        RuntimeError.
        """
        if self.has_pending:
            raise RuntimeError("run_session() on a stream whose framer holds unread messages")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving from this stream")
        if self.transport.closed:
            raise trio.ClosedResourceError("the message stream was closed")
        run = _SessionRun(self, session, on_dropped)
        self._receiving = True
        self._run = run
        try:
            while run.ending is None:
                if self._serves_pumped():
                    if run.pumpable:
                        await self._serve_pumped(run)
                    else:
                        await self._serve_pumped_reads(run)
                elif self._serves_inline():
                    # Inline, until the hub hands the connection back (awaited
                    # here: an idle connection keeps one coroutine less).
                    rest = await self.transport.serve_inline(
                        run.step, self.receive_size, run.deadline
                    )
                    if rest is not None:
                        await self.send_framed(rest, 0)  # its replies were counted
                else:
                    await self._serve_in_task(run)
                if run.owed:
                    await self.send_framed(run.take_owed(), run.owed_replies)
                if run.ending is None and not await self._ready_to_read():
                    return None
            if run.ending.error is None and self._close_reason is None:
                self._close_reason = (
                    CloseReason.STOP_MESSAGE if run.ending.stopped else CloseReason.PEER_CLOSED
                )
            return run.finish()
        finally:
            self._run = None
            self._receiving = False
            # An exception's traceback holds this frame: without the session
            # (and its unfinished message) in it, nothing big lives in a cycle.
            del run, session

    def _serves_inline(self) -> bool:
        transport = self.transport
        return transport.can_serve_inline and (
            transport.deadlines_handed_over or transport.idle_timeout is None
        )

    def _serves_pumped(self) -> bool:
        transport = self.transport
        return transport.can_pump and (
            transport.deadlines_handed_over or transport.idle_timeout is None
        )

    async def _serve_pumped(self, run: _SessionRun) -> None:
        """Serve the session with the hub's C pump until it hands the
        connection back, then do what the hand-back asks: send the rest of a
        short send, end the session at the end of the input or where the C
        engine ended it (the replies before the end owed), or nothing (the
        memory budget, or receiving stopped: the caller's loop sees to it)."""
        conn = run.pumped_connection()
        session = run.pumpable
        assert session is not None
        conn.set_input(session.take_input())
        try:
            outcome = await self.transport.serve_pumped(conn, run.account, run.deadline)
        finally:
            session.put_input(conn.take_input())
            run.take_pumped_counts()
        if await self._after_pumped(run, conn, outcome):
            return
        if outcome == ENDED:
            rest, replies = conn.take_unsent()
            status, length = conn.ending
            run.end(session.end_pumped(status, length, replies), rest, replies)

    async def _serve_pumped_reads(self, run: _SessionRun) -> None:
        """Serve a session with Python code (a ``respond`` handler's) with the
        hub's C pump: it reads, the session's step answers each turn's bytes,
        and the pump sends the answer.  Then do what the hand-back asks, as
        :meth:`_serve_pumped` does (the step's own hand-backs are in
        ``run``, for the caller's loop)."""
        conn = run.reading_connection()
        try:
            answer = run.answer if run.splits else run.step
            outcome = await self.transport.serve_pumped(
                conn, run.account, run.deadline, answer=answer
            )
        finally:
            run.take_pumped_counts()
            run.restore_splitting()
        if await self._after_pumped(run, conn, outcome):
            return
        if outcome == ENDED:
            # A bad header the pump would not split past: the framer, given
            # the bytes from it on back, raises its own error for them.
            wire = run.rescan()
            if wire:
                await self.send_framed(wire, 0)

    async def _after_pumped(
        self, run: _SessionRun, conn: PumpedConnection, outcome: int | None
    ) -> bool:
        """The hand-backs both pumped paths take alike: send the rest of a
        short send (its replies were counted), or give the session the end
        of its input, as the task path does.  Whether it was one of them."""
        if outcome == SHORT_SEND:
            rest, _ = conn.take_unsent()
            await self.send_framed(rest, 0)
            return True
        if outcome == END_OF_INPUT:
            run.step(b"")
            return True
        return False

    def sync_counters(self) -> None:
        """Bring in the counts the C pump keeps for a connection it serves
        now (the figures read at any time, not only when it hands back)."""
        if self._run is not None:
            self._run.take_pumped_counts()
        if self._forwarding is not None:
            self._forwarding.take_pumped_counts()

    async def _serve_in_task(self, run: _SessionRun) -> None:
        """One read and its output, in this task (the reference path)."""
        data = await self.transport.receive_some(self.receive_size, run.deadline)
        if data is None:
            return  # stop_receiving(): _ready_to_read() says so
        progress = run.progress
        wire = run.step(data)
        if run.progress != progress:
            run.deadline = self._idle_deadline()
        if wire:
            await self.send_framed(wire, 0)

    async def _ready_to_read(self) -> bool:
        """Before the session reads again: False once receiving has stopped;
        waits for the memory budget."""
        if self.transport.stopping:
            return False
        if self._must_wait_for_memory():
            await self._wait_for_memory()
        return not self.transport.stopping

    # -- forwarding ----------------------------------------------------------

    async def forward_to(self, sink: MessageStream) -> None:
        """Pass this stream's input on to ``sink`` as it arrives, checked by
        this stream's framer, until the input ends.

        The bytes sent are exactly the bytes received.  The framer, in its
        forwarding mode (:meth:`~trioecho.framing.base._StreamFramer.forward`),
        validates every frame header before the frame goes on, and passes a
        frame's body on as it arrives: a frame of any size up to
        ``max_frame`` costs one read's memory, not the frame's.  Each
        completed frame counts in this stream's ``messages_received`` and in
        ``sink``'s ``messages_sent``.  On a plain TCP socket on the readiness
        hub the hub does this itself on each read, sending what ``sink``
        takes at once; this task wakes only to wait: for ``sink`` to take
        the rest (``sink``'s send rule: ``send_timeout``, ``min_send_rate``),
        or for the memory budget.

        Returns at the end of the input (:class:`IncompleteFrameError` if it
        ends inside a frame) or after :meth:`stop_receiving`; ``sink`` is
        left open.  Raises a bad header's :class:`FramingError` once the
        bytes before it are sent, :class:`~trioecho.errors.SinkError` (with
        the sink's error) if sending to ``sink`` failed, and the other
        errors of :meth:`receive_message` for this stream's own failures.
        Needs a framer that can forward now
        (:func:`~trioecho.framing.base.can_forward`: a length-field or
        fixed-size framer, a phased one past its first phase) and no message
        read but not yet returned: RuntimeError otherwise.
        """
        if self.transport.closed:
            raise trio.ClosedResourceError("the message stream was closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving from this stream")
        if self.has_pending or not can_forward(self.framer):
            raise RuntimeError(
                "forward_to() needs a length-field or fixed-size framer at a frame boundary, "
                "with every message read returned"
            )
        run = _Forwarding(self, sink)
        self._receiving = True
        self._forwarding = run
        try:
            while await self._ready_to_read():
                if self._serves_pumped() and sink.transport.pump_sink >= 0:
                    await self._forward_pumped(run)
                elif self._serves_inline():
                    # The hub runs run.step on each read until it hands the
                    # connection back; the step sends nothing back here.
                    await self.transport.serve_inline(run.step, self.receive_size)
                else:
                    data = await self.transport.receive_some(
                        self.receive_size, self._idle_deadline()
                    )
                    if data is None:
                        return  # stop_receiving()
                    run.step(data)
                await run.settle()
                if run.ended:
                    self.framer.feed_eof()  # IncompleteFrameError inside a frame
                    if self._close_reason is None:
                        self._close_reason = CloseReason.PEER_CLOSED
                    return
        finally:
            self._receiving = False
            self._forwarding = None

    async def _forward_pumped(self, run: _Forwarding) -> None:
        """Forward with the hub's C pump until it hands the connection back,
        then leave ``run`` as the Python step would: the rest of a short
        send owed, the end of the input, a bad header's error (the read that
        holds it checked again by the framer, the bytes before it passed
        on), or the sink's error."""
        framer = cast(ForwardingFramer, self.framer)
        sink_fd = run.sink.transport.pump_sink
        # (forwarding_state() hands the framer's state over: asked last)
        state = None if sink_fd < 0 else framer.forwarding_state()
        if state is None:
            await self.transport.serve_inline(run.step, self.receive_size)  # the twin
            return
        scanner, due, held = state
        conn = run.pumped_connection(scanner, sink_fd, due, self.receive_size)
        conn.set_input(held)
        outcome: int | None = None
        try:
            outcome = await self.transport.serve_pumped(conn, _fits, sink=sink_fd)
        finally:
            held = conn.take_input()
            framer.restore_forwarding(conn.due, b"" if outcome == ENDED else held)
            run.take_pumped_counts()
        if outcome == SHORT_SEND:
            run.owed, run.owed_frames = conn.take_unsent()
        elif outcome == END_OF_INPUT:
            run.ended = True
        elif outcome == ENDED:
            run.step(held)  # the framer finds the bad header again and says why
        elif outcome == SOCKET_ERROR:  # sending to the sink failed
            code = conn.error
            run.error = SinkError(broken_while("sending", OSError(code, os.strerror(code))))

    # -- sending -----------------------------------------------------------

    async def send_message(self, payload: Buffer) -> None:
        """Frame ``payload`` and send it.

        Raises the framer's errors for a payload that cannot be framed (nothing
        is sent then), :class:`ConnectionClosedError` if the transport broke and
        :class:`SlowReaderError` when the peer stalls for ``send_timeout`` or
        reads below ``min_send_rate``.
        """
        _check_payload(payload)
        await self.send_framed(self.framer.encode(payload))

    async def send_messages(self, payloads: Iterable[Buffer]) -> None:
        """Frame all ``payloads`` and send them in one write; raises like :meth:`send_message`."""
        if not isinstance(payloads, list | tuple):
            payloads = list(payloads)
        for payload in payloads:
            _check_payload(payload)
        await self.send_framed(self.framer.encode_many(payloads), len(payloads))

    async def send_framed(self, data: Buffer, count: int = 1) -> None:
        """Send ``data``, already framed, and count ``count`` messages sent.

        While the send waits for the peer to read, the memory account holds
        the bytes not sent yet.  Raises like :meth:`send_message`.
        """
        await self.transport.send_all(data)
        self.messages_sent += count

    async def send_eof(self) -> None:
        """Close the sending side only (the transport must support half-close)."""
        await self.transport.send_eof()

    # -- closing -----------------------------------------------------------

    async def aclose(self) -> None:
        """Close the transport and give the memory account back.  Idempotent;
        closes even when cancelled."""
        try:
            await self.transport.aclose()
        finally:
            self._release_account()

    async def close_gracefully(self, linger: float, limit: float | None = None) -> None:
        """Close without destroying replies in flight (see
        ``Transport.close_gracefully``: the peer gets them while it takes
        them by the send rule, ``limit`` seconds at most), then give the
        memory account back."""
        try:
            await self.transport.close_gracefully(linger, limit)
        finally:
            self._release_account()

    def _release_account(self) -> None:
        if self._account is not None:
            self._account.close()


class PumpableSession(Session, Protocol):
    """A session the hub's C pump can serve (the echo session with its C
    engine): see :class:`~trioecho.services.echo_session.EchoSession`."""

    def pump_handle(self) -> tuple[int, object, bool] | None: ...

    def take_input(self) -> bytes: ...

    def put_input(self, data: bytes) -> None: ...

    def end_pumped(self, status: int, length: int, replies: int) -> SessionOutput: ...


def _fits(size: int) -> bool:
    """A forwarding holds at most an incomplete header: no account to update."""
    return True


def hand_over_deadlines(stream: MessageStream) -> None:
    """:meth:`MessageStream.hand_over_deadlines`."""
    stream.hand_over_deadlines()


def expire_if_idle(stream: MessageStream, now: float) -> bool:
    """:meth:`MessageStream.expire_if_idle`."""
    return stream.expire_if_idle(now)


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
        "_stream",
        "deadline",
        "ending",
        "owed",
        "owed_replies",
        "progress",
        "pumpable",
        "splits",
    )

    def __init__(
        self,
        stream: MessageStream,
        session: Session,
        on_dropped: Callable[[FrameTooLongError], None] | None,
    ) -> None:
        self._stream = stream
        self._session = session
        self._on_dropped = on_dropped
        self.ending: SessionOutput | None = None
        self.owed: Buffer = b""
        self.owed_replies = 0
        # Reads that completed (or dropped) a message, and the idle deadline
        # they keep moving: on the task path at each such read, inline at the
        # watchdog's next look (renew_deadline_on_progress).
        self.progress = 0
        self._progress_seen = 0
        self.deadline = stream._idle_deadline()
        # The C pump serves the session if it can (see _serve_pumped): what
        # it is served with, and its state, made on first use.
        pump_handle = getattr(session, "pump_handle", None)
        self._pump_handle = None if pump_handle is None else pump_handle()
        self.pumpable = None if self._pump_handle is None else cast(PumpableSession, session)
        self._pumped: PumpedConnection | None = None
        self.splits = False  # _pumped splits the messages (reading_connection)

    def pumped_connection(self) -> PumpedConnection:
        """The session's state in the C pump, made on first use."""
        if self._pumped is None:
            assert self._pump_handle is not None
            address, owner, raw = self._pump_handle
            self._pumped = PumpedConnection(address, owner, raw, self._stream.receive_size)
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
            size = self._stream.receive_size
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
        stream = self._stream
        account = stream._account
        return account is None or account.buffer(size, stream.receive_size)

    def take_pumped_counts(self) -> None:
        """Add what the pump counted since the last take to the stream's
        counters and its transport's byte counters."""
        conn = self._pumped
        if conn is None:
            return
        stream = self._stream
        received, sent = conn.take_message_counts()
        stream.messages_received += received
        stream.messages_sent += sent
        received, sent = conn.take_byte_counts()
        stream.transport.bytes_received += received
        stream.transport.bytes_sent += sent

    def end(self, ending: SessionOutput, wire: Buffer, replies: int) -> None:
        """The session ended (``ending``) with ``wire`` still to send."""
        self.ending = ending
        self._owe(wire, replies)

    def step(self, data: bytes) -> Buffer | None:
        """Feed one read (``b""``: the end of the input); see the class docstring."""
        session = self._session
        output = session.feed(data) if data else session.feed_eof()
        return self._took(output, session.buffered, not data)

    def _took(self, output: SessionOutput, buffered: int, at_end: bool) -> Buffer | None:
        """Count and account for the session's ``output`` (``buffered``: its
        unfinished message now); the bytes to send, or None (see ``step``)."""
        wire, replies, received, stopped, error, dropped = output
        stream = self._stream
        stream.messages_received += received
        account = stream._account
        fits = account is None or account.buffer(buffered, stream.receive_size)
        if dropped:
            self._report_dropped(dropped)
        if received or dropped:
            self.progress += 1
        if stopped or error is not None or at_end:
            self.ending = output
            self._owe(wire, replies)
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

    def take_owed(self) -> Buffer:
        owed, self.owed = self.owed, b""
        return owed

    def _report_dropped(self, dropped: tuple[FrameTooLongError, ...]) -> None:
        self._stream.lines_dropped += len(dropped)
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
            timeout = self._stream.transport.idle_timeout
            if timeout is not None:
                self.deadline = now + timeout
                self._stream.transport.renew_deadline(self.deadline)

    def finish(self) -> SessionOutput | None:
        """The ending: raise the session's error, or return the output."""
        ending = self.ending
        assert ending is not None
        error = ending.error
        if error is not None:
            self.ending = None
            try:
                raise error
            finally:
                del error, ending  # no cycle through this frame (see _take_handback)
        return ending


class _Forwarding:
    """One :meth:`MessageStream.forward_to`: the step that checks one read
    and sends it on to the sink at once, and what the task must settle.

    ``step`` is what the hub calls inline (the task path calls it the same
    way): it returns ``b""`` (nothing to send back to the source) to go on,
    or None when the connection needs its task: the input ended
    (``ended``), the sink did not take everything (``owed``), sending
    failed, or a header was bad.
    """

    __slots__ = ("_framer", "_pumped", "_sink", "_source", "ended", "error", "owed", "owed_frames")

    def __init__(self, source: MessageStream, sink: MessageStream) -> None:
        self._source = source
        self._sink = sink
        self._pumped: PumpedConnection | None = None  # the C pump's state, made on first use
        self._framer = cast(ForwardingFramer, source.framer)  # forward_to() checked it
        self.ended = False
        self.error: Exception | None = None  # a bad header's, or the sink's send
        self.owed: Buffer = b""
        self.owed_frames = 0

    def step(self, data: bytes) -> bytes | None:
        """Check and send on one read (``b""``: the end of the input)."""
        if not data:
            self.ended = True
            return None
        chunk, frames, error = self._framer.forward(data)
        self._source.messages_received += frames
        if chunk:
            sink = self._sink
            try:
                rest = sink.transport.send_nowait(chunk)
            except ConnectionClosedError as exc:
                self.error = SinkError(exc)
                return None
            if rest is not None:
                self.owed, self.owed_frames = rest, frames
                self.error = error
                return None
            sink.messages_sent += frames
        if error is not None:
            self.error = error
            return None
        return b""

    @property
    def sink(self) -> MessageStream:
        return self._sink

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
        self._source.messages_received += received
        self._sink.messages_sent += sent
        received, sent = conn.take_byte_counts()
        self._source.transport.bytes_received += received
        self._sink.transport.bytes_sent += sent

    async def settle(self) -> None:
        """In the task: send what the sink did not take (waiting for it),
        then raise the error the step found, if any."""
        if self.owed:
            owed, self.owed = self.owed, b""
            try:
                await self._sink.send_framed(owed, self.owed_frames)
            except (TrioEchoError, trio.BrokenResourceError) as exc:
                raise SinkError(exc) from exc
        error = self.error
        if error is not None:
            self.error = None
            try:
                if isinstance(error, SinkError):
                    raise error from error.error
                raise error
            finally:
                del error  # no cycle through this frame (see _take_handback)


def _check_payload(payload: object) -> None:
    """TypeError, saying what to do, for a payload that is not bytes."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return
    if isinstance(payload, str):
        raise TypeError(
            "a message is bytes, not str: encode the text first, e.g. send_message(text.encode())"
        )
    raise TypeError(
        f"a message is bytes (or a bytearray or memoryview), not {type(payload).__name__}"
    )
