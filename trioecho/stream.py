"""A message stream: framed messages over any ``trio.abc.Stream``.

``MessageStream`` owns a transport stream (a TCP ``SocketStream``, an
``SSLStream``, an in-memory stream ...) and a framer.  It reads the transport
in chunks, splits them into messages with the framer and writes framed
replies.  All I/O of trioecho happens here and in the server above it.

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

Speed: over a ``trio.SocketStream`` the stream calls the non-blocking socket
directly and waits with ``trio.lowlevel.wait_readable``/``wait_writable``
only when the kernel has nothing for it (the transport's own methods add a
few scheduler round trips per call).  Every other transport goes through its
``trio.abc.Stream`` methods.

Each wait for input normally runs in its own cancel scope, which carries the
idle deadline and lets :meth:`stop_receiving` interrupt it.  Entering and
leaving a scope costs more than the rest of a request/reply exchange, so a
server with many streams can take the deadlines over
(:meth:`hand_over_deadlines`): the wait then needs no scope, and one task
calls :meth:`expire_if_idle` on every stream now and then, which wakes a wait
past its deadline with ``trio.lowlevel.notify_closing``.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterable

import trio

from ._errors import (
    ConnectionClosedError,
    FrameTooLongError,
    FramingError,
    IdleTimeoutError,
    SlowReaderError,
)
from .framing import Buffer, Framer, LineFramer

__all__ = ["DEFAULT_RECEIVE_SIZE", "MessageStream"]

DEFAULT_RECEIVE_SIZE = 64 * 1024
CHECKPOINT_EVERY = 16


def _raw_socket(transport: trio.abc.Stream) -> socket.socket | None:
    """The stdlib socket under a plain ``trio.SocketStream``, if there is one.

    ``_sock`` is Trio's (stable but private) attribute holding the
    non-blocking stdlib socket; without it the generic path is used.
    """
    if type(transport) is trio.SocketStream:
        raw = getattr(transport.socket, "_sock", None)
        if isinstance(raw, socket.socket):
            return raw
    return None


class MessageStream(trio.abc.AsyncResource):
    """Framed messages over ``transport_stream``.

    ``framer`` defaults to a new :class:`LineFramer`.  ``receive_size`` is the
    most bytes asked of the transport per read.  ``idle_timeout`` (seconds)
    bounds how long ``receive_message()`` waits for a complete message and
    raises :class:`IdleTimeoutError` past it; ``send_timeout`` bounds how long
    a send may stay blocked on a peer that does not read, and raises
    :class:`SlowReaderError` (closing the stream) past it.  ``None`` means no
    limit.
    """

    __slots__ = (
        "_at_eof",
        "_closed",
        "_deadlines_handed_over",
        "_error",
        "_expired",
        "_next",
        "_pending",
        "_receive_scope",
        "_receiving",
        "_resume",
        "_sending",
        "_socket",
        "_stopping",
        "_unyielded",
        "_wait_deadline",
        "_wait_first",
        "_waiting",
        "framer",
        "idle_timeout",
        "messages_received",
        "messages_sent",
        "receive_size",
        "send_timeout",
        "transport_stream",
    )

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        framer: Framer | None = None,
        *,
        receive_size: int = DEFAULT_RECEIVE_SIZE,
        idle_timeout: float | None = None,
        send_timeout: float | None = None,
    ) -> None:
        if receive_size < 1:
            raise ValueError(f"receive_size must be at least 1, not {receive_size}")
        self.transport_stream = transport_stream
        self.framer: Framer = framer if framer is not None else LineFramer()
        self.receive_size = receive_size
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        # Messages read but not yet delivered: _pending[_next:].  A list and an
        # index rather than a deque: an idle connection keeps it small.
        self._pending: list[bytes] = []
        self._next = 0
        self._error: FrameTooLongError | None = None  # raise once _pending is empty
        self._resume = False  # discard mode: feed(b"") again after the error
        self._at_eof = False
        self._stopping = False
        self._closed = False
        self._receiving = False
        self._receive_scope: trio.CancelScope | None = None
        self.messages_received = 0  # complete messages read from the transport
        self.messages_sent = 0  # messages whose bytes the transport accepted
        self._socket = _raw_socket(transport_stream)
        self._wait_first = False  # the last read had to wait: wait before reading
        # hand_over_deadlines(): the socket wait runs without a scope of its own.
        self._deadlines_handed_over = False
        self._waiting = False  # in wait_readable without a scope
        self._wait_deadline = math.inf  # ... and until when
        self._expired = False  # expire_if_idle() woke it
        self._sending = False
        self._unyielded = 0  # calls since the last checkpoint

    # -- receiving ---------------------------------------------------------

    async def receive_message(self) -> bytes:
        """Return the next message.

        Raises :class:`trio.EndOfChannel` at a clean end of stream (or after
        :meth:`stop_receiving`), and the errors listed in the module docstring.
        """
        if not await self._fill():
            raise trio.EndOfChannel
        await self._checkpoint_sometimes()
        message = self._pending[self._next]
        self._next += 1
        if self._next == len(self._pending):
            self._pending = []
            self._next = 0
        return message

    async def receive_messages(self) -> list[bytes]:
        """Return every message available now, at least one, in order.

        Messages that arrived together are returned together, so that their
        replies can go out in one write (see :meth:`send_messages`).  Raises
        like :meth:`receive_message`.
        """
        if not await self._fill():
            raise trio.EndOfChannel
        await self._checkpoint_sometimes()
        batch = self._pending[self._next :] if self._next else self._pending
        self._pending = []
        self._next = 0
        return batch

    async def echo(self, suffix: bytes, stop: bytes, *, generic: bool = False) -> bool:
        """Answer every message with ``message + suffix`` until one equals ``stop``.

        Returns True once ``stop`` arrived (it gets no reply), False at the
        end of the stream.  A reply that cannot be framed raises the framer's
        error after the replies before it went out.  With the C framer the
        replies to a whole read are built in one C call, with no Python
        object per message; ``generic=True`` (or a framer without that C
        path) goes through :meth:`receive_messages` and
        :meth:`send_messages` instead, with the same bytes on the wire.
        """
        framer = self.framer
        fast = not generic and getattr(framer, "can_echo", False)
        deadline = None  # for the next complete message
        while True:
            if (
                not fast
                or self._next < len(self._pending)
                or self._error is not None
                or self._resume
            ):
                try:
                    batch = await self.receive_messages()
                except trio.EndOfChannel:
                    return False
                if await self._answer(batch, suffix, stop):
                    return True
                fast = not generic and getattr(framer, "can_echo", False)
                continue
            self._start_receiving()
            if deadline is None:
                deadline = self._idle_deadline()
            try:
                data = await self._read_chunk(deadline)
            finally:
                self._receiving = False
            if data is None:
                return False
            wire, count, outcome = framer.feed_echo(data, suffix, stop)  # type: ignore[attr-defined]
            if count:
                deadline = None
            self.messages_received += count + (outcome == "stop")
            if wire:
                await self._send(wire, count)
            if outcome == "stop":
                return True
            if outcome == "fallback":
                self._feed(b"")  # the general path takes it from here
                fast = False

    async def _answer(self, batch: list[bytes], suffix: bytes, stop: bytes) -> bool:
        """Send the replies to ``batch``; return True if it held ``stop``."""
        replies: list[bytes] = []
        stopped = False
        for message in batch:
            if message == stop:
                stopped = True
                break
            replies.append(message + suffix)
        if replies:
            try:
                await self.send_messages(replies)
            except FramingError:
                # Send the replies before the one that cannot be framed, then
                # raise its error: no reply is lost for the messages before it.
                for reply in replies:
                    await self.send_message(reply)
        return stopped

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
        self._stopping = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()
        elif self._waiting:
            self._wake_waiting_receive()

    def hand_over_deadlines(self) -> None:
        """Let the caller enforce ``idle_timeout`` by calling
        :meth:`expire_if_idle` periodically (the server does, for all its
        streams from one task), so that a receive waiting on a socket needs no
        cancel scope of its own.  The timeout then fires within one period
        after it is due.  Only the direct socket path is affected."""
        self._deadlines_handed_over = True

    def expire_if_idle(self, now: float) -> bool:
        """If a receive is waiting past its idle deadline, wake it (it raises
        :class:`IdleTimeoutError`) and return True."""
        if self._waiting and self._wait_deadline <= now:
            self._expired = True
            self._wake_waiting_receive()
            return True
        return False

    def _wake_waiting_receive(self) -> None:
        # Wakes every waiter on the socket with ClosedResourceError without
        # closing it: the receive turns that into its outcome, a send retries.
        assert self._socket is not None
        self._waiting = False
        trio.lowlevel.notify_closing(self._socket)

    def _start_receiving(self) -> None:
        """Claim the receiving side."""
        if self._closed:
            raise trio.ClosedResourceError("the message stream was closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving from this stream")
        self._receiving = True

    def _idle_deadline(self) -> float:
        """When waiting for the next complete message must stop."""
        return math.inf if self.idle_timeout is None else trio.current_time() + self.idle_timeout

    async def _fill(self) -> bool:
        """Make ``_pending`` non-empty; return False at the end of the messages."""
        self._start_receiving()
        deadline = self._idle_deadline()
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
                data = await self._read_chunk(deadline)
                if data is None:
                    return False
                self._feed(data)
            return True
        finally:
            self._receiving = False

    async def _read_chunk(self, deadline: float) -> bytes | None:
        """The next non-empty chunk, or None at the end (raising
        IncompleteFrameError if the stream ended inside a frame)."""
        while True:
            if self._at_eof:
                self.framer.feed_eof()
                return None
            if self._stopping:
                return None
            data = await self._receive_some(deadline)
            if data is None:
                continue  # stop_receiving() interrupted the read
            if not data:
                self._at_eof = True
                continue
            return data

    def _feed(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except FrameTooLongError as exc:
            frames = exc.frames  # delivered before the error
            exc.frames = []
            self._error = exc
        if self._pending:
            self._pending.extend(frames)
        else:
            self._pending = frames
        self.messages_received += len(frames)

    async def _checkpoint_sometimes(self) -> None:
        self._unyielded += 1
        if self._unyielded >= CHECKPOINT_EVERY:
            self._unyielded = 0
            await trio.lowlevel.checkpoint()

    async def _receive_some(self, deadline: float) -> bytes | None:
        """The next chunk from the transport: b"" at EOF, None if stop_receiving()
        interrupted the wait."""
        if self._socket is not None:
            return await self._receive_from_socket(self._socket, deadline)
        self._unyielded = 0
        with trio.CancelScope(deadline=deadline) as scope:
            self._receive_scope = scope
            try:
                return bytes(await self.transport_stream.receive_some(self.receive_size))
            except trio.BrokenResourceError as exc:
                raise ConnectionClosedError(f"connection broken while receiving: {exc}") from exc
            finally:
                self._receive_scope = None
        if self._stopping:
            return None
        raise self._idle_timeout_error()

    def _idle_timeout_error(self) -> IdleTimeoutError:
        return IdleTimeoutError(f"no complete message within idle_timeout={self.idle_timeout}s")

    async def _receive_from_socket(self, sock: socket.socket, deadline: float) -> bytes | None:
        while True:
            if not self._wait_first:
                try:
                    return sock.recv(self.receive_size)
                except BlockingIOError:
                    pass
                except OSError as exc:
                    raise self._socket_error(exc, "receiving") from exc
            self._wait_first = False
            self._unyielded = 0
            if self._deadlines_handed_over:
                if not await self._wait_readable_watched(sock, deadline):
                    return None
            else:
                with trio.CancelScope(deadline=deadline) as scope:
                    self._receive_scope = scope
                    try:
                        await trio.lowlevel.wait_readable(sock)
                    finally:
                        self._receive_scope = None
                if scope.cancelled_caught:
                    if self._stopping:
                        return None
                    raise self._idle_timeout_error()
            try:
                data = sock.recv(self.receive_size)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise self._socket_error(exc, "receiving") from exc
            # It had to wait: in a request/reply exchange the next read will
            # too, so skip the read that would fail.
            self._wait_first = True
            return data

    async def _wait_readable_watched(self, sock: socket.socket, deadline: float) -> bool:
        """wait_readable without a cancel scope (see hand_over_deadlines());
        False if stop_receiving() interrupted it."""
        self._wait_deadline = deadline
        self._expired = False  # a stale mark: woken by data in the tick it expired
        self._waiting = True
        try:
            await trio.lowlevel.wait_readable(sock)
        except trio.ClosedResourceError:
            if self._closed:
                raise
            if self._expired:
                self._expired = False
                raise self._idle_timeout_error() from None
            if self._stopping:
                return False
            raise
        finally:
            self._waiting = False
        return True

    def _slow_reader_error(self) -> SlowReaderError:
        return SlowReaderError(
            f"peer did not read its replies: send blocked for send_timeout={self.send_timeout}s"
        )

    def _socket_error(self, exc: OSError, doing: str) -> Exception:
        if self._closed:
            return trio.ClosedResourceError("the message stream was closed")
        return ConnectionClosedError(f"connection broken while {doing}: {exc}")

    # -- sending -----------------------------------------------------------

    async def send_message(self, payload: Buffer) -> None:
        """Frame ``payload`` and send it.

        Raises the framer's errors for a payload that cannot be framed (nothing
        is sent then), :class:`ConnectionClosedError` if the transport broke and
        :class:`SlowReaderError` past ``send_timeout``.
        """
        await self._send(self.framer.encode(payload), 1)

    async def send_messages(self, payloads: Iterable[Buffer]) -> None:
        """Frame all ``payloads`` and send them in one write; raises like :meth:`send_message`."""
        if not isinstance(payloads, list | tuple):
            payloads = list(payloads)
        await self._send(self.framer.encode_many(payloads), len(payloads))

    async def send_eof(self) -> None:
        """Close the sending side only (the transport must support half-close)."""
        transport = self.transport_stream
        if not isinstance(transport, trio.abc.HalfCloseableStream):
            raise TypeError(f"{type(transport).__name__} cannot close only its sending side")
        try:
            await transport.send_eof()
        except trio.BrokenResourceError as exc:
            raise ConnectionClosedError(f"connection broken while closing: {exc}") from exc

    async def _send(self, data: bytes, count: int) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the message stream was closed")
        if self._socket is not None:
            await self._send_to_socket(self._socket, data)
            self.messages_sent += count
            return
        timeout = math.inf if self.send_timeout is None else self.send_timeout
        with trio.move_on_after(timeout) as scope:
            try:
                await self.transport_stream.send_all(data)
            except trio.BrokenResourceError as exc:
                raise ConnectionClosedError(f"connection broken while sending: {exc}") from exc
            self.messages_sent += count
            return
        assert scope.cancelled_caught
        await self.aclose()
        raise self._slow_reader_error()

    async def _send_to_socket(self, sock: socket.socket, data: bytes) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            view = memoryview(data)
            sent = 0
            deadline = math.inf
            while True:
                try:
                    sent += sock.send(view[sent:] if sent else data)
                except BlockingIOError:
                    pass
                except OSError as exc:
                    raise self._socket_error(exc, "sending") from exc
                if sent >= len(data):
                    await self._checkpoint_sometimes()
                    return
                if deadline == math.inf and self.send_timeout is not None:
                    deadline = trio.current_time() + self.send_timeout
                self._unyielded = 0
                with trio.CancelScope(deadline=deadline) as scope:
                    try:
                        await trio.lowlevel.wait_writable(sock)
                    except trio.ClosedResourceError:
                        if self._closed:
                            raise
                        # A receive on another task was woken by notify_closing
                        # (stop_receiving, idle timeout): the socket is open.
                if scope.cancelled_caught:
                    break
        finally:
            self._sending = False
        await self.aclose()
        raise self._slow_reader_error()

    # -- closing -----------------------------------------------------------

    async def aclose(self) -> None:
        """Close the transport.  Idempotent; closes even when cancelled."""
        self._closed = True
        await self.transport_stream.aclose()


def _recoverable(framer: Framer) -> bool:
    return isinstance(framer, LineFramer) and framer.on_too_long == "discard"
