"""A message stream: framed messages over any ``trio.abc.Stream``.

``MessageStream`` is the one owner of a connection's data path: its
:class:`~trioecho.io.transport.Transport` (``transport``), its framer, its
share of the server's memory budget (``account``) and its counters
(``messages_received``, ``messages_sent``, ``lines_dropped``).  Everything
above it -- handlers, the echo service, the relay -- sends and receives
through its methods, never through the transport.  Its parts are the
modules :mod:`trioecho.stream` lists.

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

Memory is bounded, and each wait for a complete message is bounded by
``idle_timeout``: see :mod:`~trioecho.stream.receiving`.  A server enforces
the deadlines of all its streams from one task (:meth:`hand_over_deadlines`,
:meth:`expire_if_idle`); see :mod:`trioecho.io.transport`.

Checkpoints: a call that has to wait yields to Trio; one that finds its
messages already read (or its bytes sent at once) yields at least every
``CHECKPOINT_EVERY`` calls, so cancellation and other tasks get their turn
without a scheduler round trip per message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import trio

from trioecho.arguments import check_rate
from trioecho.errors import FrameTooLongError
from trioecho.framing.base import Buffer, Framer
from trioecho.framing.config import FramingConfig
from trioecho.io.budget import Account
from trioecho.io.transport import CHECKPOINT_EVERY
from trioecho.reasons import CloseReason, close_reason
from trioecho.stream.arguments import (
    DEFAULT_RECEIVE_SIZE,
    RAW_RECEIVE_SIZE,
    check_payload,
    check_receive_size,
    receive_size_for,
)
from trioecho.stream.forwarding import forward_to
from trioecho.stream.receiving import NO_MESSAGES, delivered, fill
from trioecho.stream.session import Session, SessionOutput
from trioecho.stream.session_run import run_session
from trioecho.stream.state import StreamState

__all__ = [
    "CHECKPOINT_EVERY",
    "DEFAULT_RECEIVE_SIZE",
    "RAW_RECEIVE_SIZE",
    "MessageStream",
    "Session",
    "SessionOutput",
    "receive_size_for",
]


class MessageStream(StreamState):
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

    __slots__ = ()

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

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The certificate the TLS peer presented and the handshake verified
        (``getpeercert()``'s dict: ``subject``, ``subjectAltName``, ...), or
        None: plain TCP, or a client without one (``--tls-verify-client
        optional``).  :func:`~trioecho.io.tls.certificate_subject` makes
        its subject one line."""
        return self.transport.peer_certificate()

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
    def receive_size(self) -> int:
        """The most bytes asked of the transport per read: at least 1
        (ValueError otherwise, as from the constructor)."""
        return self._receive_size

    @receive_size.setter
    def receive_size(self, receive_size: int) -> None:
        self._receive_size = check_receive_size(receive_size)

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
        if not await fill(self):
            raise trio.EndOfChannel
        if self.transport.checkpoint_due():
            await trio.lowlevel.checkpoint()
        message = self._pending[self._next]
        self._next += 1
        if self._next == len(self._pending):
            self._pending = NO_MESSAGES
            self._next = 0
            delivered(self)
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
        if not await fill(self):
            raise trio.EndOfChannel
        if self.transport.checkpoint_due():
            await trio.lowlevel.checkpoint()
        batch = self._pending[self._next :] if self._next else self._pending
        self._pending = NO_MESSAGES
        self._next = 0
        delivered(self)
        return batch

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

    # -- serving a session, forwarding -----------------------------------------

    def run_session(
        self,
        session: Session,
        *,
        on_dropped: Callable[[FrameTooLongError], None] | None = None,
    ) -> Coroutine[Any, Any, SessionOutput | None]:
        """Serve the sans-IO ``session`` on this stream until it ends
        (``await`` it: it returns the coroutine that does, the one a parked
        connection keeps, not one more around it).

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
        return run_session(self, session, on_dropped)

    def forward_to(self, sink: MessageStream) -> Coroutine[Any, Any, None]:
        """Pass this stream's input on to ``sink`` as it arrives, checked by
        this stream's framer, until the input ends (``await`` it: it returns
        the coroutine that does, as :meth:`run_session`).

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
        return forward_to(self, sink)

    def sync_counters(self) -> None:
        """Bring in the counts the C pump keeps for a connection it serves
        now (the figures read at any time, not only when it hands back)."""
        if self._run is not None:
            self._run.take_pumped_counts()
        if self._forwarding is not None:
            self._forwarding.take_pumped_counts()

    # -- sending -----------------------------------------------------------

    async def send_message(self, payload: Buffer) -> None:
        """Frame ``payload`` and send it.

        Raises the framer's errors for a payload that cannot be framed (nothing
        is sent then), :class:`ConnectionClosedError` if the transport broke and
        :class:`SlowReaderError` when the peer stalls for ``send_timeout`` or
        reads below ``min_send_rate``.
        """
        check_payload(payload)
        await self.send_framed(self.framer.encode(payload))

    async def send_messages(self, payloads: Iterable[Buffer]) -> None:
        """Frame all ``payloads`` and send them in one write; raises like :meth:`send_message`."""
        if not isinstance(payloads, list | tuple):
            payloads = list(payloads)
        for payload in payloads:
            check_payload(payload)
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
