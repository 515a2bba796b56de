"""The direct-socket transport: non-blocking socket calls on the stdlib socket
under a ``trio.SocketStream``, waits on the readiness hub (or Trio's), and
inline serving by the hub (:meth:`SocketTransport.serve_inline`).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Awaitable, Callable

import trio

from trioecho.errors import ConnectionClosedError
from trioecho.framing.base import Buffer
from trioecho.io.hub import AGAIN, HAND_BACK, WAIT, Watch, current_hub
from trioecho.io.keepalive import restore_user_timeout, suspend_user_timeout
from trioecho.io.pump import (
    ACCOUNT,
    BUDGET,
    INPUT,
    INPUT_MORE,
    MESSAGES,
    MESSAGES_MORE,
    NO_MEMORY,
    PUMP_AGAIN,
    PUMP_WAIT,
    SOCKET_ERROR,
    STEP_FAILED,
    STEPPED,
    PumpedConnection,
)
from trioecho.io.transport import InlineStep, PumpedAnswer, Transport

__all__ = ["SocketTransport", "broken_while", "hub_watch"]


_NO_HANDBACK = object()  # _handback while the hub did not hand the connection back


class SocketTransport(Transport):
    """A transport over a plain ``trio.SocketStream``'s non-blocking socket.

    With ``watch`` (the socket's registration in a
    :class:`~trioecho.io.hub.ReadinessHub`) every wait goes through the hub;
    without, through Trio's ``wait_readable``/``wait_writable``.  Either way a read that had
    to wait and came up short makes the next receive wait first, without
    the read that would fail (safe for the hub's edges too: a short read
    leaves nothing unread, so new input brings a new edge).

    On the hub it can also be served inline (:meth:`serve_inline`): the hub
    itself reads, runs the connection's step and sends, and the task sleeps
    until the connection needs it.
    """

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
        stream: trio.SocketStream,
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
        # connection back (_NO_HANDBACK while it did not).
        self._step: InlineStep | None = None
        self._inline_size = 0
        self._turn_bytes = 0
        self._handback: object = _NO_HANDBACK
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

    @property
    def can_serve_inline(self) -> bool:
        return self._watch is not None and not self._closed

    @property
    def can_pump(self) -> bool:
        watch = self._watch
        return watch is not None and not self._closed and watch.can_pump

    @property
    def pump_sink(self) -> int:
        """The socket's descriptor if the C pump may send to it now (open,
        on a hub, no send waiting), else -1."""
        if self._closed or self._sending or self._watch is None or self._watch.closed:
            return -1
        return self._socket.fileno()

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
                    self._wait_first = len(data) < max_bytes
                    return data
        finally:
            self._receiving = False

    def _try_receive(self, max_bytes: int) -> bytes | None:
        """One non-blocking read: the bytes (``b""`` at the end), or None if
        there are none yet."""
        try:
            data = self._socket.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise self._socket_error(exc, "receiving") from exc
        self.bytes_received += len(data)
        return data

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
            self._answer = None
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
                self.bytes_received += len(data)
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

    # -- serving with the C pump ---------------------------------------------

    async def serve_pumped(
        self,
        conn: PumpedConnection,
        on_account: Callable[[int], bool],
        deadline: float = math.inf,
        sink: int = -1,
        answer: PumpedAnswer | None = None,
    ) -> int | None:
        """Serve the connection with the hub's C pump until it needs this task.

        The pump reads, answers with the session ``conn`` was made for (or
        forwards to the socket ``sink``), and sends, with no Python per
        message (:mod:`~trioecho.io.pump`).  When the unfinished message it
        holds changes size, ``on_account(size)`` updates the memory account
        and says whether the connection may read on.  A reading ``conn``
        (:meth:`PumpedConnection.reading`) is answered by ``answer``
        instead, as :meth:`serve_inline` runs its step: called with what
        the pump read (each turn's bytes, or, with a framer, the messages
        the pump split), it returns the bytes to send (sent from C), or None
        to hand the connection back (``STEPPED``); an exception it raises
        is raised here.  Returns
        the reason it needs the task: ``END_OF_INPUT``, ``ENDED``,
        ``SHORT_SEND`` (the rest is in ``conn``), ``BUDGET`` (the account
        said no), ``STEPPED``, ``SOCKET_ERROR`` when sending to
        ``sink`` failed; None after
        :meth:`stop_receiving`, if the hub stopped, or when ``sink`` can no
        longer be sent to from C (the caller decides again).  The counts are
        left in ``conn``.  Raises :class:`ConnectionClosedError` if this
        socket broke, :class:`IdleTimeoutError` as :meth:`serve_inline`
        does, ``MemoryError`` if C could not allocate, and ``trio.Cancelled``.
        Needs :attr:`can_pump`.
        """
        self._claim_receiving()
        watch = self._watch
        if watch is None or not watch.can_pump:
            self._receiving = False
            raise RuntimeError("serve_pumped() needs the readiness hub's pump")
        self._pumped = conn
        self._on_account = on_account
        self._answer = answer
        self._pump_fd = watch.fd
        self._wait_deadline = deadline
        try:
            watch.take_readable()  # the pump reads until the socket is empty anyway
            while not self._stopping:
                try:
                    outcome = watch.serve_pumped(conn, sink)
                except trio.ClosedResourceError:
                    self._watch_lost()  # raises if this transport was closed
                    return None
                if outcome == ACCOUNT:
                    outcome = PUMP_AGAIN if self.pump_account() else BUDGET
                elif outcome in (INPUT, INPUT_MORE, MESSAGES, MESSAGES_MORE):
                    # Detached (serve_pumped hands back all but WAIT): serve
                    # it again after a checkpoint, which attaches it anew.
                    items = watch.pumped_input()
                    outcome = self.pump_input(items[0] if outcome in (INPUT, INPUT_MORE) else items)
                    if outcome == PUMP_WAIT:
                        outcome = PUMP_AGAIN
                if outcome == PUMP_AGAIN:
                    await trio.lowlevel.checkpoint()
                    continue
                if outcome != PUMP_WAIT:
                    return self._pumped_outcome(conn, outcome)
                self._expired = False
                self._waiting = True
                self._unyielded = 0
                try:
                    await watch.park_pumped(self)
                finally:
                    watch.unpump()
                    watch.inline = None
                    self._waiting = False
                outcome, self.pumped_handback = self.pumped_handback, -1
                if outcome >= 0:
                    return self._pumped_outcome(conn, outcome)
                if not self._woken(watch) or self._watch is None:
                    # stop_receiving() (None), the idle timeout (raises), the
                    # sink released (None: the caller decides again), or a
                    # lost hub (None)
                    self._interrupted()
                    return None
            return None
        finally:
            watch.unpump()  # detached before the state can be freed
            self._pumped = None
            self._on_account = None
            self._answer = None
            self._handback = _NO_HANDBACK
            self.pumped_handback = -1
            self._receiving = False

    def pump_account(self) -> bool:
        """The hub's call when the pumped connection's unfinished message
        changed size: update the account; whether it may read on."""
        conn, on_account = self._pumped, self._on_account
        assert conn is not None and on_account is not None
        size = conn.buffered
        conn.accounted = size
        return on_account(size)

    def pump_input(self, given: bytes | list[bytes]) -> int:
        """The hub's call when the pump read for the ``answer`` given to
        :meth:`serve_pumped` (``INPUT``: the bytes; ``MESSAGES``: the
        messages it split): run it and send its answer from C.  The
        outcome: PUMP_WAIT, or a hand-back (``STEPPED``, ``STEP_FAILED``
        with the exception kept for the task, or the reply's ``SHORT_SEND``,
        ``SOCKET_ERROR``, ``NO_MEMORY``).  Never raises."""
        conn, answer = self._pumped, self._answer
        assert conn is not None and answer is not None
        try:
            wire = answer(given)
        except Exception as exc:  # the answer's own error: raised in the task
            self._handback = exc
            return STEP_FAILED
        if wire is None:
            return STEPPED
        if wire:
            return conn.reply(self._pump_fd, wire)
        return PUMP_WAIT

    def _pumped_outcome(self, conn: PumpedConnection, outcome: int) -> int:
        if outcome == STEP_FAILED:
            self._take_handback()  # raises the step's exception
        if outcome == SOCKET_ERROR and not conn.sink_failed:
            code = conn.error
            raise self._socket_error(OSError(code, os.strerror(code)), "receiving or sending")
        if outcome == NO_MEMORY:
            raise MemoryError("the C pump could not allocate a connection's buffer")
        return outcome

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
        self.bytes_sent += sent
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

    def send_nowait(self, data: Buffer) -> Buffer | None:
        self._check_can_send()
        try:
            return self._send_now(data)
        except OSError as exc:
            raise self._socket_error(exc, "sending") from exc

    async def _send_rest(self, rest: Buffer) -> None:
        """Send ``rest``, waiting for the peer to read as needed, by the send
        rule (:mod:`~trioecho.io.send_deadline`): each time the kernel takes
        more, the deadline moves; past it, close and raise SlowReaderError."""
        self._sending = True
        if self._watch is not None:
            self._watch.release_as_sink()  # the pump sends to it no more meanwhile
        limit = self._send_deadline()
        unsent: Buffer | None = rest
        held = self.on_held_send
        # The send rule, not the kernel's user timeout, decides while we wait.
        user_timeout = suspend_user_timeout(self._socket)
        try:
            with trio.CancelScope(deadline=math.inf if limit is None else limit.deadline) as scope:
                while unsent is not None:
                    if held is not None:
                        held(len(unsent))
                    self._unyielded = 0
                    await self._wait_writable()
                    waiting = len(unsent)
                    try:
                        unsent = self._send_now(unsent)
                    except OSError as exc:
                        raise self._socket_error(exc, "sending") from exc
                    taken = waiting - (0 if unsent is None else len(unsent))
                    if limit is not None and taken:
                        scope.deadline = limit.took(taken, trio.current_time())
                return
        finally:
            self._sending = False
            restore_user_timeout(self._socket, user_timeout)
            if held is not None:
                held(0)
        assert limit is not None  # only its deadline cancels the scope
        error = limit.error(trio.current_time())
        # Shielded: a task woken by this close (the relay's other pump) may
        # cancel ours, and the error that says why must not be lost.
        with trio.CancelScope(shield=True):
            await self.aclose()
        raise error

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

    async def close_gracefully(self, linger: float, limit: float | None = None) -> None:
        self._closed = True
        self._close_watch()
        await super().close_gracefully(linger, limit)


def broken_while(doing: str, exc: OSError) -> ConnectionClosedError:
    """What a socket call that failed with ``exc`` while ``doing`` raises
    (the C pump's failures too, whose errno Python makes into ``exc``)."""
    return ConnectionClosedError(f"connection broken while {doing}: {exc}")


def hub_watch(sock: socket.socket) -> Watch | None:
    """The socket's registration in the run's hub, or None where there is no hub."""
    try:
        return current_hub().watch(sock.fileno())
    except (RuntimeError, OSError, AttributeError):
        # RuntimeError: not in a Trio run; AttributeError: no select.epoll;
        # OSError: the kernel refused (out of memory or descriptors).
        return None
