"""The direct-socket transport's state and its plain socket calls.

:class:`SocketTransportBase` holds what every part of
:class:`~trioecho.io.socket_transport.SocketTransport` shares: the socket,
its registration in the readiness hub (or None: Trio's waits), the receive
with its waits and deadlines, the non-blocking send of what the socket
takes now (:meth:`~SocketTransportBase._send_now`), and the state that
inline and pumped serving (:mod:`~trioecho.io.socket_inline`,
:mod:`~trioecho.io.socket_pumped`) set while they serve.  The send that
waits for a slow reader is :mod:`~trioecho.io.socket_sending`'s.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from trioecho.errors import ConnectionClosedError
from trioecho.framing.base import Buffer
from trioecho.io.pump import PumpedConnection
from trioecho.io.transport import InlineStep, PumpedAnswer, Transport
from trioecho.io.watch import Watch

__all__ = ["NO_HANDBACK", "SocketTransportBase", "broken_while"]


NO_HANDBACK = object()  # _handback while the hub did not hand the connection back


class SocketTransportBase(Transport):
    """What the parts of the direct-socket transport share (see the module
    docstring); :class:`~trioecho.io.socket_transport.SocketTransport`
    documents the whole."""

    # What a read that must wait raises, and whether a short read alone
    # means the socket is empty (TLS: no, OpenSSL reads one record at a
    # time, so _nothing_unread() is asked; see socket_tls.TLSSocketTransport).
    _WOULD_BLOCK: type[Exception] | tuple[type[Exception], ...] = BlockingIOError
    _SHORT_READ_EMPTIES = True

    __slots__ = (
        "_answer",
        "_deadlines_handed_over",
        "_expired",
        "_handback",
        "_inline_size",
        "_on_account",
        "_pump_fd",
        "_pumped",
        "_socket",
        "_step",
        "_turn_bytes",
        "_wait_deadline",
        "_wait_first",
        "_waiting",
        "_watch",
        "pumped_handback",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        sock: socket.socket,
        *,
        idle_timeout: float | None = None,
        send_timeout: float | None = None,
        min_send_rate: float | None = None,
        watch: Watch | None = None,
    ) -> None:
        super().__init__(
            stream,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
            min_send_rate=min_send_rate,
        )
        self._socket = sock
        self._watch = watch  # the hub's registration, or None: Trio's waits
        self._wait_first = False  # the last read waited and came up short
        # hand_over_deadlines(): the socket wait runs without a scope of its own.
        self._deadlines_handed_over = False
        self._waiting = False  # in a wait for input without a scope
        self._wait_deadline = math.inf  # ... and until when
        self._expired = False  # expire_if_idle() woke it
        # serve_inline(): the step, the read size, and why the hub handed the
        # connection back (NO_HANDBACK while it did not).
        self._step: InlineStep | None = None
        self._inline_size = 0
        self._turn_bytes = 0
        self._handback: object = NO_HANDBACK
        # serve_pumped(): the connection's C state, its memory account's
        # check, and the pump's hand-back (-1 while there is none).
        self._pumped: PumpedConnection | None = None
        self._on_account: Callable[[int], bool] | None = None
        self._answer: PumpedAnswer | None = None
        self._pump_fd = -1  # the socket's descriptor, where te_pump_reply sends
        self.pumped_handback = -1

    @property
    def readiness(self) -> str:
        """``"hub"`` or ``"trio"``: how this transport waits."""
        return "trio" if self._watch is None else "hub"

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
        return broken_while(doing, exc)

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
                    self._wait_first = len(data) < max_bytes and (
                        self._SHORT_READ_EMPTIES or self._nothing_unread()
                    )
                    return data
        finally:
            self._receiving = False

    def _try_receive(self, max_bytes: int) -> bytes | None:
        """One non-blocking read: the bytes (``b""`` at the end), or None if
        there are none yet."""
        try:
            data = self._socket.recv(max_bytes)
        except self._WOULD_BLOCK:
            return None
        except OSError as exc:
            raise self._socket_error(exc, "receiving") from exc
        self.bytes_received += len(data)
        return data

    def _nothing_unread(self) -> bool:
        """After a short read, when a short read alone does not show it
        (``_SHORT_READ_EMPTIES`` is False): True if no bytes are left to
        read now, so that the next input brings a new readiness edge."""
        return False

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

    # -- shared by inline and pumped serving ---------------------------------

    if TYPE_CHECKING:
        # What the hub calls on a served transport (the watch's InlineServed),
        # each made by the part that serves that way.

        def serve_ready(self) -> int: ...

        def pump_account(self) -> bool: ...

        def pump_input(self, given: bytes | list[bytes]) -> int: ...

    def _start_serving(self, deadline: float, *, pump: bool) -> Watch:
        """Claim receiving to serve from the hub (with its C pump if
        ``pump``) until ``deadline``: the socket's watch, its input edge
        taken (the serving reads until the socket is empty anyway).
        Without the hub (or its pump), RuntimeError, and nothing is claimed."""
        self._claim_receiving()
        watch = self._watch
        if watch is None or (pump and not watch.can_pump):
            self._receiving = False
            if pump:
                raise RuntimeError("serve_pumped() needs the readiness hub's pump")
            raise RuntimeError("serve_inline() needs the readiness hub")
        self._wait_deadline = deadline
        watch.take_readable()
        return watch

    def _start_parking(self) -> None:
        """The task is about to park while the hub serves it: no stale
        idle mark, a wait :meth:`expire_if_idle` and
        :meth:`stop_receiving` may wake, a fresh checkpoint count."""
        self._expired = False
        self._waiting = True
        self._unyielded = 0

    def _take_handback(self) -> Buffer | None:
        handback = self._handback
        self._handback = NO_HANDBACK
        if isinstance(handback, BaseException):
            try:
                raise handback
            finally:
                # Not held by this frame, which its traceback holds: a cycle
                # would keep the connection's memory until the cyclic GC runs.
                del handback
        return handback  # type: ignore[return-value]

    # -- sending what the socket takes now -----------------------------------

    def _send_now(self, data: Buffer) -> Buffer | None:
        """Send what the socket takes now; the rest, or None if all went."""
        try:
            sent = self._socket.send(data)
        except BlockingIOError:
            sent = 0
        self.bytes_sent += sent
        if sent >= len(data):
            return None
        return memoryview(data)[sent:]


def broken_while(doing: str, exc: OSError) -> ConnectionClosedError:
    """What a socket call that failed with ``exc`` while ``doing`` raises
    (the C pump's failures too, whose errno Python makes into ``exc``)."""
    return ConnectionClosedError(f"connection broken while {doing}: {exc}")
