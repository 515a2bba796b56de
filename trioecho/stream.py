"""A message stream: framed messages over any ``trio.abc.Stream``.

``MessageStream`` owns a transport stream (a TCP ``SocketStream``, an
``SSLStream``, an in-memory stream ...) through a
:class:`~trioecho.transport.Transport` (``transport``), and a framer.  It
reads the transport in chunks, splits them into messages with the framer and
writes framed replies.  The transport does the I/O; this module is framing,
pending messages and errors.

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
unfinished frame (``max_frame``) plus one read.

Checkpoints: a call that has to wait yields to Trio; one that finds its
messages already read (or its bytes sent at once) yields at least every
``CHECKPOINT_EVERY`` calls, so cancellation and other tasks get their turn
without a scheduler round trip per message.

Speed and deadlines are the transport's: over a plain ``trio.SocketStream``
it calls the non-blocking socket directly, and a server can enforce the idle
deadlines of all its streams from one task (:meth:`hand_over_deadlines`,
:meth:`expire_if_idle`); see :mod:`trioecho.transport`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import trio

from ._errors import FrameTooLongError
from .framing import Buffer, Framer, FramingConfig, LineFramer
from .transport import CHECKPOINT_EVERY, Transport, open_transport

__all__ = ["CHECKPOINT_EVERY", "DEFAULT_RECEIVE_SIZE", "RAW_RECEIVE_SIZE", "MessageStream"]

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

    ``framer`` defaults to a new :class:`LineFramer`; a
    :class:`~trioecho.framing.FramingConfig` there builds its framer when
    first used.  ``receive_size`` is the
    most bytes asked of the transport per read.  ``idle_timeout`` (seconds)
    bounds how long ``receive_message()`` waits for a complete message and
    raises :class:`IdleTimeoutError` past it; ``send_timeout`` bounds how long
    a send may stay blocked on a peer that does not read, and raises
    :class:`SlowReaderError` (closing the stream) past it.  ``None`` means no
    limit.  ``transport`` is the :class:`~trioecho.transport.Transport` over
    ``transport_stream`` that does the I/O; ``readiness`` (``"hub"``,
    ``"trio"`` or None for the default) is how it waits on a plain TCP
    socket (see :func:`~trioecho.transport.open_transport`).
    """

    __slots__ = (
        "_at_eof",
        "_error",
        "_framer",
        "_framing",
        "_next",
        "_pending",
        "_receiving",
        "_resume",
        "messages_received",
        "messages_sent",
        "receive_size",
        "transport",
        "transport_stream",
    )

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        framer: Framer | FramingConfig | None = None,
        *,
        receive_size: int = DEFAULT_RECEIVE_SIZE,
        idle_timeout: float | None = None,
        send_timeout: float | None = None,
        readiness: str | None = None,
    ) -> None:
        if receive_size < 1:
            raise ValueError(f"receive_size must be at least 1, not {receive_size}")
        self.transport_stream = transport_stream
        self.transport: Transport = open_transport(
            transport_stream,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
            readiness=readiness,
        )
        # A FramingConfig builds its framer when first needed (the echo fast
        # path never needs one: an idle connection holds less).
        self._framing = framer if isinstance(framer, FramingConfig) else None
        self._framer: Framer | None = None
        if self._framing is None:
            self._framer = framer if framer is not None else LineFramer()  # type: ignore[assignment]
        self.receive_size = receive_size
        # Messages read but not yet delivered: _pending[_next:].  A list and an
        # index rather than a deque: an idle connection keeps it small.
        self._pending: list[bytes] = _NO_MESSAGES
        self._next = 0
        self._error: FrameTooLongError | None = None  # raise once _pending is empty
        self._resume = False  # discard mode: feed(b"") again after the error
        self._at_eof = False
        self._receiving = False
        self.messages_received = 0  # complete messages read from the transport
        self.messages_sent = 0  # messages whose bytes the transport accepted

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
        (either one tells :class:`~trioecho.session.EchoSession` how to frame)."""
        return self._framing if self._framing is not None else self.framer

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

    async def receive_messages(self) -> list[bytes]:
        """Return every message available now, at least one, in order.

        Messages that arrived together are returned together, so that their
        replies can go out in one write (see :meth:`send_messages`).  Raises
        like :meth:`receive_message`.
        """
        transport = self.transport
        deadline: float | None = None
        if (
            not self._pending
            and self._error is None
            and not (self._resume or self._at_eof or self._receiving or transport.closed)
        ):
            # The request/reply case, inline: one read, no _fill() coroutine.
            self._receiving = True
            deadline = self.idle_deadline()
            try:
                data = await transport.receive_some(self.receive_size, deadline)
            finally:
                self._receiving = False
            if data:
                self._feed(data)
            elif data is not None:
                self._at_eof = True
        if self._next >= len(self._pending) and not await self._fill(deadline):
            raise trio.EndOfChannel
        if transport.checkpoint_due():
            await trio.lowlevel.checkpoint()
        batch = self._pending[self._next :] if self._next else self._pending
        self._pending = _NO_MESSAGES
        self._next = 0
        self._delivered()
        return batch

    def _delivered(self) -> None:
        """Every message read was delivered: only the unfinished frame is held."""
        account = self.transport.account
        if account is not None:
            account.set_buffered(self.framer.buffered)

    @property
    def has_pending(self) -> bool:
        """Whether bytes or messages were read that no receive returned yet."""
        return (
            self._next < len(self._pending)
            or (self._framer is not None and self._framer.buffered > 0)
            or self._error is not None
            or self._resume
        )

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive_message()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def stop_receiving(self) -> None:
        """End the stream after the messages already received.

        Messages already read from the transport are still delivered; then
        receiving ends as at a clean end of stream, without waiting for more
        bytes (a receive waiting for them returns at once).  Sending still
        works.  The server calls this on graceful shutdown.
        """
        self.transport.stop_receiving()

    def hand_over_deadlines(self) -> None:
        """Let the caller enforce ``idle_timeout`` by calling
        :meth:`expire_if_idle` periodically (the server does, for all its
        streams from one task), so that a receive waiting on a socket needs no
        cancel scope of its own.  The timeout then fires within one period
        after it is due.  Only the direct socket transport is affected."""
        self.transport.hand_over_deadlines()

    def expire_if_idle(self, now: float) -> bool:
        """If a receive is waiting past its idle deadline, wake it (it raises
        :class:`IdleTimeoutError`) and return True."""
        return self.transport.expire_if_idle(now)

    def idle_deadline(self) -> float:
        """When a wait for the next complete message that starts now must end."""
        timeout = self.transport.idle_timeout
        return math.inf if timeout is None else trio.current_time() + timeout

    async def _fill(self, deadline: float | None = None) -> bool:
        """Make ``_pending`` non-empty; return False at the end of the messages.
        ``deadline``: for the complete message (a wait that began earlier), by
        default ``idle_timeout`` from now."""
        if self.transport.closed:
            raise trio.ClosedResourceError("the message stream was closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving from this stream")
        self._receiving = True
        if deadline is None:
            deadline = self.idle_deadline()
        try:
            while self._next >= len(self._pending):
                if self._error is not None:
                    error = self._error
                    if _recoverable(self.framer):
                        # Discard mode: report once, then go on after the bad line.
                        self._error = None
                        self._resume = True
                    raise error
                if self._resume:
                    self._resume = False
                    self._feed(b"")
                    continue
                # The next non-empty chunk (inline: one coroutine less per wait).
                if self._at_eof:
                    self.framer.feed_eof()  # raises IncompleteFrameError inside a frame
                    return False
                data = await self.transport.receive_some(self.receive_size, deadline)
                if data is None:
                    return False  # stop_receiving()
                if not data:
                    self._at_eof = True
                    continue
                self._feed(data)
            return True
        finally:
            self._receiving = False

    def _feed(self, data: bytes) -> None:
        framer = self._framer if self._framer is not None else self.framer  # no property call
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
        account = self.transport.account
        if account is not None:
            # The unfinished frame, and this read's messages until delivered.
            account.set_buffered(framer.buffered + (len(data) if frames else 0))

    # -- sending -----------------------------------------------------------

    async def send_message(self, payload: Buffer) -> None:
        """Frame ``payload`` and send it.

        Raises the framer's errors for a payload that cannot be framed (nothing
        is sent then), :class:`ConnectionClosedError` if the transport broke and
        :class:`SlowReaderError` past ``send_timeout``.
        """
        await self.transport.send_all(self.framer.encode(payload))
        self.messages_sent += 1

    async def send_messages(self, payloads: Iterable[Buffer]) -> None:
        """Frame all ``payloads`` and send them in one write; raises like :meth:`send_message`."""
        if not isinstance(payloads, list | tuple):
            payloads = list(payloads)
        await self.transport.send_all(self.framer.encode_many(payloads))
        self.messages_sent += len(payloads)

    async def send_eof(self) -> None:
        """Close the sending side only (the transport must support half-close)."""
        await self.transport.send_eof()

    # -- closing -----------------------------------------------------------

    async def aclose(self) -> None:
        """Close the transport.  Idempotent; closes even when cancelled."""
        await self.transport.aclose()


def _recoverable(framer: Framer) -> bool:
    return isinstance(framer, LineFramer) and framer.on_too_long == "discard"
