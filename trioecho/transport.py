"""Transports: bytes in and out of one connection, with deadlines.

The layer under :class:`~trioecho.stream.MessageStream` and the echo
session, and the only code of trioecho that touches Trio's socket
internals.  One interface, two implementations:

* :class:`SocketTransport` over a plain ``trio.SocketStream``: it calls the
  non-blocking socket directly and waits only when the kernel has nothing
  for it (the stream's own methods add a few scheduler round trips per
  call), by default through the run's :mod:`readiness hub <trioecho.hub>`
  (the socket registered once in a shared edge-triggered epoll set), else
  with Trio's ``wait_readable``/``wait_writable`` (``readiness="trio"``,
  ``TRIOECHO_READINESS=trio``: one ``epoll_ctl`` re-arm per wait);
* :class:`StreamTransport` over any other ``trio.abc.Stream``: TLS,
  in-memory, anything with ``receive_some``/``send_all``.

:func:`open_transport` picks one.  The interface:

``await receive_some(max_bytes, deadline)``
    the next bytes: ``b""`` at the end of the stream, ``None`` once
    :meth:`stop_receiving` was called (also when it interrupts a wait);
    raises :class:`IdleTimeoutError` if nothing arrived by ``deadline``
    (``trio.current_time()`` units, ``math.inf`` for none) and
    :class:`ConnectionClosedError` if the peer or the network broke it.
``await send_all(data)``
    send every byte; past ``send_timeout`` of being blocked on a peer that
    does not read, close the transport and raise :class:`SlowReaderError`.
``stop_receiving()``
    wake a waiting receive, and end every later one with ``None``.

Both raise ``trio.ClosedResourceError`` after ``aclose()`` and
``trio.BusyResourceError`` when two tasks receive (or send) at once.

Deadlines: a wait for input normally runs in a cancel scope carrying the
deadline.  Entering and leaving a scope costs more than the rest of a
request/reply exchange, so a server with many connections can take the
deadlines over (:meth:`hand_over_deadlines`): a socket wait then needs no
scope, and one task calls :meth:`expire_if_idle` on every transport now and
then, which wakes a wait past its deadline.

Checkpoints: a call that has to wait yields to Trio; one that completes at
once yields at least every ``CHECKPOINT_EVERY`` calls
(:meth:`checkpoint_due`), so cancellation and other tasks get their
turn without a scheduler round trip per message.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import socket
import ssl
import struct
import termios
from collections.abc import Awaitable, Callable

import trio

from ._errors import ConnectionClosedError, IdleTimeoutError, SlowReaderError
from .framing import Buffer
from .hub import AGAIN, HAND_BACK, WAIT, Watch, current_hub

__all__ = [
    "CHECKPOINT_EVERY",
    "READINESS_MODES",
    "InlineStep",
    "SocketTransport",
    "StreamTransport",
    "Transport",
    "default_readiness",
    "open_transport",
    "resolve_readiness",
]

CHECKPOINT_EVERY = 16
# close_gracefully(): input still discarded once every reply is delivered.
DELIVERED_DRAIN_BYTES = 1 << 20
# How a direct-socket transport waits: "hub" (trioecho.hub, the default) or
# "trio" (Trio's own wait_readable/wait_writable).
READINESS_MODES = ("hub", "trio")
READINESS_ENV = "TRIOECHO_READINESS"

# serve_inline()'s step: the bytes of one read (b"" at the end of the input)
# in, the bytes to send out, or None to hand the connection back to its task.
InlineStep = Callable[[bytes], "Buffer | None"]
_NO_HANDBACK = object()  # _handback while the hub did not hand the connection back


def default_readiness() -> str:
    """``$TRIOECHO_READINESS`` if set (``hub`` or ``trio``), else ``hub``."""
    mode = os.environ.get(READINESS_ENV, "") or "hub"
    if mode not in READINESS_MODES:
        raise ValueError(f"{READINESS_ENV} must be hub or trio, not {mode!r}")
    return mode


def resolve_readiness(readiness: str | None) -> str:
    """``readiness`` checked (``"hub"`` or ``"trio"``), or for None
    :func:`default_readiness`; ValueError otherwise."""
    if readiness is None:
        return default_readiness()
    if readiness not in READINESS_MODES:
        raise ValueError(f"readiness must be hub, trio or None, not {readiness!r}")
    return readiness


class Transport:
    """What both transports share; see the module docstring for the interface."""

    __slots__ = (
        "_closed",
        "_receive_scope",
        "_receiving",
        "_sending",
        "_stopping",
        "_unyielded",
        "idle_timeout",
        "on_held_send",
        "send_timeout",
        "stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        idle_timeout: float | None = None,
        send_timeout: float | None = None,
    ) -> None:
        self.stream = stream
        self.idle_timeout = idle_timeout  # only for the error's message
        self.send_timeout = send_timeout
        self._closed = False
        self._stopping = False
        self._receiving = False
        self._receive_scope: trio.CancelScope | None = None  # a receive's, while it waits
        self._sending = False
        self._unyielded = 0  # calls since the last checkpoint
        # Told the bytes a send holds while it waits for the peer to read
        # (then 0): the message stream's memory account listens.
        self.on_held_send: Callable[[int], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop_receiving` was called."""
        return self._stopping

    @property
    def can_serve_inline(self) -> bool:
        """Whether :meth:`serve_inline` is available (a socket on the hub)."""
        return False

    async def receive_some(self, max_bytes: int, deadline: float = math.inf) -> bytes | None:
        raise NotImplementedError

    async def send_all(self, data: Buffer) -> None:
        raise NotImplementedError

    async def serve_inline(
        self, step: InlineStep, max_bytes: int, deadline: float = math.inf
    ) -> Buffer | None:
        """Have the readiness hub serve this connection with ``step`` until
        it needs its task; see :class:`SocketTransport`."""
        raise NotImplementedError(f"{type(self).__name__} cannot serve a session inline")

    def stop_receiving(self) -> None:
        raise NotImplementedError

    def hand_over_deadlines(self) -> None:
        """Let the caller enforce receive deadlines with :meth:`expire_if_idle`."""

    @property
    def deadlines_handed_over(self) -> bool:
        return False

    def expire_if_idle(self, now: float) -> bool:
        """If a receive is waiting past its deadline, wake it (it raises
        :class:`IdleTimeoutError`) and return True."""
        return False

    def renew_deadline(self, deadline: float) -> None:
        """Move the deadline of a waiting :meth:`serve_inline` (deadlines
        handed over); no effect otherwise."""

    def checkpoint_due(self) -> bool:
        """Count a call that did not wait; True every ``CHECKPOINT_EVERY``
        calls, when the caller must ``await trio.lowlevel.checkpoint()`` (a
        test, so that a call that completes at once creates no coroutine)."""
        self._unyielded += 1
        if self._unyielded >= CHECKPOINT_EVERY:
            self._unyielded = 0
            return True
        return False

    async def send_eof(self) -> None:
        """Close the sending side only (the stream must support half-close)."""
        stream = self.stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            raise TypeError(f"{type(stream).__name__} cannot close only its sending side")
        try:
            await stream.send_eof()
        except trio.BrokenResourceError as exc:
            raise ConnectionClosedError(f"connection broken while closing: {_reason(exc)}") from exc

    async def aclose(self) -> None:
        """Close the stream.  Idempotent; closes even when cancelled."""
        self._closed = True
        await self.stream.aclose()

    async def close_gracefully(self, linger: float, limit: float) -> None:
        """Close without destroying replies in flight, then close for good.

        Closing a TCP socket whose input was not all read makes the kernel
        send a reset, which discards the replies still queued for the peer.
        So: TLS ``close_notify`` first (over TLS), then FIN, then read and
        discard the peer's input until its own end of stream -- for as long
        as the peer makes progress: each time it takes more of the replies
        queued for it, it gets another
        ``linger`` seconds; ``limit`` seconds in all.  A peer that keeps
        reading gets every reply; the end is a FIN, not a reset.  Input is
        not what buys time: once every reply is delivered, a peer that keeps
        sending is cut off after ``DELIVERED_DRAIN_BYTES`` more.
        """
        stream = self.stream
        tcp = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        self._closed = True
        try:
            with trio.move_on_after(limit):
                if isinstance(stream, trio.SSLStream):
                    with (
                        trio.move_on_after(linger),
                        contextlib.suppress(trio.BrokenResourceError, ssl.SSLError),
                    ):
                        await stream.unwrap()
                if isinstance(tcp, trio.abc.HalfCloseableStream):
                    await tcp.send_eof()
                await _drain_until_eof(tcp, linger)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
            if tcp is not stream:
                await trio.aclose_forcefully(tcp)

    # -- shared helpers ----------------------------------------------------

    def _claim_receiving(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the message stream was closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving from this stream")
        self._receiving = True

    def _idle_timeout_error(self) -> IdleTimeoutError:
        return IdleTimeoutError(f"no complete message within idle_timeout={self.idle_timeout}s")

    def _slow_reader_error(self) -> SlowReaderError:
        return SlowReaderError(
            f"peer did not read its replies: send blocked for send_timeout={self.send_timeout}s"
        )


class StreamTransport(Transport):
    """A transport over any ``trio.abc.Stream``, through its own methods."""

    __slots__ = ()

    async def receive_some(self, max_bytes: int, deadline: float = math.inf) -> bytes | None:
        self._claim_receiving()
        try:
            if self._stopping:
                return None
            self._unyielded = 0
            with trio.CancelScope(deadline=deadline) as scope:
                self._receive_scope = scope
                try:
                    return bytes(await self.stream.receive_some(max_bytes))
                except trio.BrokenResourceError as exc:
                    raise ConnectionClosedError(
                        f"connection broken while receiving: {_reason(exc)}"
                    ) from exc
                finally:
                    self._receive_scope = None
            if self._stopping:
                return None
            raise self._idle_timeout_error()
        finally:
            self._receiving = False

    async def send_all(self, data: Buffer) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the message stream was closed")
        timeout = math.inf if self.send_timeout is None else self.send_timeout
        held = self.on_held_send
        with trio.move_on_after(timeout) as scope:
            try:
                if held is not None:  # the stream cannot say whether it will wait
                    held(len(data))
                await self.stream.send_all(data)
            except trio.BrokenResourceError as exc:
                raise ConnectionClosedError(
                    f"connection broken while sending: {_reason(exc)}"
                ) from exc
            finally:
                if held is not None:
                    held(0)
            return
        assert scope.cancelled_caught
        await self.aclose()
        raise self._slow_reader_error()

    def stop_receiving(self) -> None:
        self._stopping = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()


class SocketTransport(Transport):
    """A transport over a plain ``trio.SocketStream``'s non-blocking socket.

    With ``watch`` (the socket's registration in a
    :class:`~trioecho.hub.ReadinessHub`) every wait goes through the hub;
    without, through Trio's ``wait_readable``/``wait_writable``.  Either way a read that had
    to wait and came up short makes the next receive wait first, without
    the read that would fail (safe for the hub's edges too: a short read
    leaves nothing unread, so new input brings a new edge).

    On the hub it can also be served inline (:meth:`serve_inline`): the hub
    itself reads, runs the connection's step and sends, and the task sleeps
    until the connection needs it.
    """

    __slots__ = (
        "_deadlines_handed_over",
        "_expired",
        "_handback",
        "_inline_size",
        "_socket",
        "_step",
        "_turn_bytes",
        "_wait_deadline",
        "_wait_first",
        "_waiting",
        "_watch",
    )

    def __init__(
        self,
        stream: trio.SocketStream,
        sock: socket.socket,
        *,
        idle_timeout: float | None = None,
        send_timeout: float | None = None,
        watch: Watch | None = None,
    ) -> None:
        super().__init__(stream, idle_timeout=idle_timeout, send_timeout=send_timeout)
        self._socket = sock
        self._watch = watch  # the hub's registration, or None: Trio's waits
        self._wait_first = False  # the last read waited and came up short
        # hand_over_deadlines(): the socket wait runs without a scope of its own.
        self._deadlines_handed_over = False
        self._waiting = False  # in a wait for input without a scope
        self._wait_deadline = math.inf  # ... and until when
        self._expired = False  # expire_if_idle() woke it
        # serve_inline(): the step, the read size, and why the hub handed the
        # connection back (_NO_HANDBACK while it did not).
        self._step: InlineStep | None = None
        self._inline_size = 0
        self._turn_bytes = 0
        self._handback: object = _NO_HANDBACK

    @property
    def readiness(self) -> str:
        """``"hub"`` or ``"trio"``: how this transport waits."""
        return "trio" if self._watch is None else "hub"

    @property
    def can_serve_inline(self) -> bool:
        return self._watch is not None and not self._closed

    def hand_over_deadlines(self) -> None:
        self._deadlines_handed_over = True

    @property
    def deadlines_handed_over(self) -> bool:
        return self._deadlines_handed_over

    def expire_if_idle(self, now: float) -> bool:
        if self._waiting and self._wait_deadline <= now:
            self._expired = True
            self._wake_waiting_receive()
            return True
        return False

    def renew_deadline(self, deadline: float) -> None:
        self._wait_deadline = deadline

    def stop_receiving(self) -> None:
        self._stopping = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()
        elif self._waiting:
            self._wake_waiting_receive()

    def _wake_waiting_receive(self) -> None:
        self._waiting = False
        watch = self._watch
        if watch is not None:
            watch.interrupt_reader()
        else:
            # Wakes every waiter on the socket with ClosedResourceError
            # without closing it: the receive turns that into its outcome, a
            # send retries.
            trio.lowlevel.notify_closing(self._socket)

    def _socket_error(self, exc: OSError, doing: str) -> Exception:
        if self._closed:
            return trio.ClosedResourceError("the message stream was closed")
        return ConnectionClosedError(f"connection broken while {doing}: {exc}")

    def _watch_lost(self) -> None:
        """The hub closed the watch while this transport is open (the hub
        stopped): wait with Trio's own waits from now on."""
        if self._closed:
            raise trio.ClosedResourceError("the message stream was closed")
        self._watch = None

    # -- receiving -----------------------------------------------------------

    async def receive_some(self, max_bytes: int, deadline: float = math.inf) -> bytes | None:
        self._claim_receiving()
        try:
            while True:
                if self._stopping:
                    return None
                if not self._wait_first:
                    data = self._try_receive(max_bytes)
                    if data is not None:
                        return data
                self._wait_first = False
                self._unyielded = 0
                if not await self._wait_readable_until(deadline):
                    return None
                data = self._try_receive(max_bytes)
                if data is not None:
                    # It had to wait: in a request/reply exchange the next
                    # read will too, so skip the read that would fail --
                    # unless this one filled the buffer (more may be waiting,
                    # and no edge would announce it).
                    self._wait_first = len(data) < max_bytes
                    return data
        finally:
            self._receiving = False

    def _try_receive(self, max_bytes: int) -> bytes | None:
        """One non-blocking read: the bytes (``b""`` at the end), or None if
        there are none yet."""
        try:
            return self._socket.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise self._socket_error(exc, "receiving") from exc

    async def _wait_readable_until(self, deadline: float) -> bool:
        """Wait for input until ``deadline``; False if stop_receiving()
        interrupted the wait, IdleTimeoutError past the deadline.

        With the deadlines handed over the wait has no cancel scope:
        :meth:`expire_if_idle` wakes it when it is due."""
        if not self._deadlines_handed_over:
            with trio.CancelScope(deadline=deadline) as scope:
                self._receive_scope = scope
                try:
                    await self._wait_readable()
                finally:
                    self._receive_scope = None
            if scope.cancelled_caught:
                if self._stopping:
                    return False
                raise self._idle_timeout_error()
            return True
        self._wait_deadline = deadline
        self._expired = False  # a stale mark: woken by data in the tick it expired
        self._waiting = True
        watch = self._watch
        try:
            if watch is None:
                woken = await self._wait_readable()
            else:
                # The hub's wait awaited here, not through _wait_readable():
                # each message resumes a coroutine less.
                wait = self._hub_wait(watch)
                woken = True
                if wait is not None:
                    await wait
                    woken = self._woken(watch)
        finally:
            self._waiting = False
        return woken or self._interrupted()

    async def _wait_readable(self) -> bool:
        """Wait for input on the hub or with Trio's wait: True for input
        (or a lost hub), False if interrupted (expire_if_idle, stop_receiving)."""
        watch = self._watch
        if watch is not None:
            wait = self._hub_wait(watch)
            if wait is None:
                return True
            await wait
            return self._woken(watch)
        try:
            await trio.lowlevel.wait_readable(self._socket)
            return True
        except trio.ClosedResourceError:
            if self._closed:
                raise
            return False  # woken by notify_closing

    def _hub_wait(self, watch: Watch) -> Awaitable[object] | None:
        """The hub's wait for input, to be awaited at once, or None if there
        is input (or the hub is gone: read again, then wait Trio's way)."""
        if watch.take_readable():
            return None
        try:
            return watch.park_reader()
        except trio.ClosedResourceError:
            self._watch_lost()  # raises if this transport was closed
            return None

    def _woken(self, watch: Watch) -> bool:
        """After the hub's wait: True for input (or a lost hub: read again,
        then wait Trio's way), False if interrupted."""
        try:
            return watch.reader_woken()
        except trio.ClosedResourceError:
            self._watch_lost()  # raises if this transport was closed
            return True

    def _interrupted(self) -> bool:
        """A wait without a scope was woken by expire_if_idle() (raise the
        idle timeout) or stop_receiving() (False)."""
        if self._expired:
            self._expired = False
            raise self._idle_timeout_error()
        return not self._stopping

    # -- serving inline ------------------------------------------------------

    async def serve_inline(
        self, step: InlineStep, max_bytes: int, deadline: float = math.inf
    ) -> Buffer | None:
        """Serve the connection from the readiness hub until it needs this task.

        Each time the socket has input, the hub (or, first, this task) reads
        it ``max_bytes`` at a time and calls ``step(data)`` on each read
        (``b""`` at the end of the input): ``step`` returns the bytes to
        send, sent at once, or None when the connection needs its task (it
        ended, or must wait for something).  At most the hub's
        ``turn_bytes`` are read per turn.  Returns:

        * None when ``step`` returned None, or after :meth:`stop_receiving`;
        * the unsent rest of ``step``'s bytes when a send came up short (the
          caller sends it with :meth:`send_all`, then may serve inline again).

        Raises :class:`ConnectionClosedError` if the socket broke,
        :class:`IdleTimeoutError` when :meth:`expire_if_idle` finds
        ``deadline`` past (deadlines handed over; :meth:`renew_deadline`
        moves it), whatever ``step`` raised, and ``trio.Cancelled``.  Needs
        :attr:`can_serve_inline`; if the hub stops meanwhile it returns None
        and can no longer serve inline.
        """
        self._claim_receiving()
        watch = self._watch
        if watch is None:
            self._receiving = False
            raise RuntimeError("serve_inline() needs the readiness hub")
        self._step = step
        self._inline_size = max_bytes
        self._turn_bytes = watch.turn_bytes
        self._wait_deadline = deadline
        try:
            watch.take_readable()  # the step reads until the socket is empty anyway
            while not self._stopping:
                outcome = self.serve_ready()
                if outcome == AGAIN:
                    await trio.lowlevel.checkpoint()
                    continue
                if outcome == HAND_BACK:
                    return self._take_handback()
                # Sleep while the hub serves the connection (in this frame:
                # an idle connection keeps one coroutine less).
                self._expired = False
                self._waiting = True
                self._unyielded = 0
                try:
                    await watch.park_inline(self)
                finally:
                    watch.inline = None
                    self._waiting = False
                if self._handback is not _NO_HANDBACK:
                    return self._take_handback()
                # Woken without a hand-back: the hub is gone (raises if this
                # transport was closed), stop_receiving(), the idle timeout
                # (raises), or a wake-up that found no step (serve again).
                woken = self._woken(watch)
                if self._watch is None or not (woken or self._interrupted()):
                    return None
            return None
        finally:
            self._step = None
            self._handback = _NO_HANDBACK
            self._receiving = False

    def serve_ready(self) -> int:
        """One inline step: read until the socket is empty (a short read, or
        ``EAGAIN``) or this turn's bytes are used (each read asks for at most
        what is left of them), running the step on each read and sending
        what it returns.  Returns the hub's WAIT, AGAIN or
        HAND_BACK (with ``_handback`` set).  Never raises: an exception is
        handed back to the task."""
        sock = self._socket
        step = self._step
        watch = self._watch
        size = self._inline_size
        assert step is not None and watch is not None
        budget = self._turn_bytes
        try:
            while True:
                wanted = size if size <= budget else budget
                try:
                    data = sock.recv(wanted)
                except BlockingIOError:
                    return WAIT
                wire = step(data)
                if wire is None:
                    self._handback = None
                    return HAND_BACK
                if wire:
                    unsent = self._send_now(wire)
                    if unsent is not None:
                        self._handback = unsent
                        return HAND_BACK
                if len(data) < wanted and not watch.input_ended:
                    return WAIT  # nothing more: the next input brings an edge
                budget -= len(data)
                if budget <= 0:
                    return AGAIN
        except OSError as exc:
            self._handback = self._socket_error(exc, "receiving or sending")
        except Exception as exc:  # the step's own error: raised in the task
            self._handback = exc
        return HAND_BACK

    def _take_handback(self) -> Buffer | None:
        handback = self._handback
        self._handback = _NO_HANDBACK
        if isinstance(handback, BaseException):
            try:
                raise handback
            finally:
                # Not held by this frame, which its traceback holds: a cycle
                # would keep the connection's memory until the cyclic GC runs.
                del handback
        return handback  # type: ignore[return-value]

    # -- sending -------------------------------------------------------------

    def _send_now(self, data: Buffer) -> Buffer | None:
        """Send what the socket takes now; the rest, or None if all went."""
        try:
            sent = self._socket.send(data)
        except BlockingIOError:
            sent = 0
        if sent >= len(data):
            return None
        return memoryview(data)[sent:]

    async def send_all(self, data: Buffer) -> None:
        self._check_can_send()
        # The common case, all sent at once, without a wait: no await before
        # it is done, so no other task can send meanwhile.
        try:
            rest = self._send_now(data)
        except OSError as exc:
            raise self._socket_error(exc, "sending") from exc
        if rest is not None:
            await self._send_rest(rest)
        elif self.checkpoint_due():
            await trio.lowlevel.checkpoint()

    def _check_can_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the message stream was closed")
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")

    async def _send_rest(self, rest: Buffer) -> None:
        """Send ``rest``, waiting for the peer to read as needed, for at most
        ``send_timeout`` seconds (then close and raise SlowReaderError)."""
        self._sending = True
        timeout = math.inf if self.send_timeout is None else self.send_timeout
        unsent: Buffer | None = rest
        held = self.on_held_send
        try:
            with trio.move_on_after(timeout):
                while unsent is not None:
                    if held is not None:
                        held(len(unsent))
                    self._unyielded = 0
                    await self._wait_writable()
                    try:
                        unsent = self._send_now(unsent)
                    except OSError as exc:
                        raise self._socket_error(exc, "sending") from exc
                return
        finally:
            self._sending = False
            if held is not None:
                held(0)
        await self.aclose()
        raise self._slow_reader_error()

    async def _wait_writable(self) -> None:
        watch = self._watch
        try:
            if watch is None:
                await trio.lowlevel.wait_writable(self._socket)
            else:
                await watch.wait_writable()
        except trio.ClosedResourceError:
            if self._closed:
                raise
            if watch is not None and watch.closed:
                self._watch_lost()
            # Otherwise a receive on another task was woken by notify_closing
            # (stop_receiving, idle timeout): the socket is open; try again.

    def _close_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()  # before the socket closes: its number may be reused

    async def aclose(self) -> None:
        self._closed = True
        self._close_watch()
        await super().aclose()

    async def close_gracefully(self, linger: float, limit: float) -> None:
        self._closed = True
        self._close_watch()
        await super().close_gracefully(linger, limit)


def _reason(exc: BaseException) -> str:
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


async def _drain_until_eof(stream: trio.abc.Stream, linger: float) -> None:
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


def _raw_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The stdlib socket under a plain ``trio.SocketStream``, if there is one.

    ``_sock`` is Trio's (stable but private) attribute holding the
    non-blocking stdlib socket; without it the generic path is used.
    """
    if type(stream) is trio.SocketStream:
        raw = getattr(stream.socket, "_sock", None)
        if isinstance(raw, socket.socket):
            return raw
    return None


def open_transport(
    stream: trio.abc.Stream,
    *,
    idle_timeout: float | None = None,
    send_timeout: float | None = None,
    readiness: str | None = None,
) -> Transport:
    """The transport for ``stream``: direct socket calls for a plain
    ``trio.SocketStream``, the stream's own methods otherwise.

    ``readiness`` says how a direct-socket transport waits: ``"hub"`` (the
    run's :mod:`readiness hub <trioecho.hub>`), ``"trio"`` (Trio's own
    waits), or None for :func:`default_readiness`.  Outside a Trio run, or
    without epoll, the hub is not available and Trio's waits are used.
    """
    readiness = resolve_readiness(readiness)
    sock = _raw_socket(stream)
    if sock is None:
        return StreamTransport(stream, idle_timeout=idle_timeout, send_timeout=send_timeout)
    assert isinstance(stream, trio.SocketStream)
    watch = _watch(sock) if readiness == "hub" else None
    return SocketTransport(
        stream, sock, idle_timeout=idle_timeout, send_timeout=send_timeout, watch=watch
    )


def _watch(sock: socket.socket) -> Watch | None:
    """The socket's registration in the run's hub, or None where there is no hub."""
    try:
        return current_hub().watch(sock.fileno())
    except (RuntimeError, OSError, AttributeError):
        # RuntimeError: not in a Trio run; AttributeError: no select.epoll;
        # OSError: the kernel refused (out of memory or descriptors).
        return None
