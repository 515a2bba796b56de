"""The readiness hub: one edge-triggered epoll set for many sockets.

Part of the transport layer (only :mod:`trioecho.transport` uses it).

Trio waits for a socket with a one-shot epoll registration: every
``wait_readable`` re-arms the descriptor (an ``epoll_ctl`` call) and goes
through the I/O manager's per-descriptor bookkeeping.  In request/reply
traffic that is paid once per message, and it costs more than the rest of
the exchange.  The hub registers each socket **once** (read and write
interest, ``EPOLLET``) in a private epoll set; one task waits on that set's
descriptor with ``trio.lowlevel.wait_readable`` and, for each event, wakes
the task parked on that socket with ``trio.lowlevel.reschedule``, or
remembers the socket as ready when nobody waits.

Edge-triggered rules, which the callers keep: wait for input only after a
read came up short or raised ``BlockingIOError`` (an edge only comes with
*new* input), and for output only after a send came up short or raised it.
A wake-up can be spurious (an edge for bytes a read already took): the
caller simply tries again and waits again.  The end of the input (and an
error) is sticky: once seen, every wait returns at once, since the read
that took the last bytes leaves the end still to be read, and no new edge
would announce it.

A :class:`Watch` is one socket's registration:

``await watch.wait_readable()`` / ``await watch.wait_writable()``
    return True once the socket had an edge since the last wait (at once if
    it already had one), False if :meth:`Watch.interrupt_reader` woke the
    wait; raise ``trio.ClosedResourceError`` if the watch is (or gets)
    closed, ``trio.BusyResourceError`` if another task already waits the same
    way.  Cancellation works as for any Trio wait.  They are checkpoints
    only when they park: a wait that finds an edge returns at once.
``watch.interrupt_reader()``
    wake a parked reader (its wait returns False); no effect otherwise.
``watch.close()``
    forget the socket (call it *before* closing the socket) and wake its
    waiters with ``ClosedResourceError``.  Idempotent.

**Inline serving.**  A reader may park with ``watch.inline`` set to an
:class:`InlineServed` (:meth:`Watch.park_inline`): the transport, whose
``serve_ready()`` reads the socket, runs the connection's sans-IO session on
the bytes and sends its output.  On an input edge the hub then calls it
itself instead of waking the task, so a request/reply exchange costs no
task wake-up.  ``serve_ready()`` returns:

``WAIT``
    it read until the socket had nothing more (the next edge calls it again);
``AGAIN``
    it used up its share of one turn (``turn_bytes``) and more may be
    waiting: the hub calls it again on its next turn, after a checkpoint, so
    that one busy peer cannot hold the hub (nor other tasks) for long;
``HAND_BACK``
    the connection needs its task (the session ended, a send came up short,
    an error): the hub wakes the parked task, which finds why in its
    transport.

It must not raise (the transport turns every exception into a
hand-back).  A task that is cancelled while parked inline is never served
inline again until it parks again.

**The C pump.**  Where it is enabled (:func:`~trioecho.io.pump.pump_enabled`)
the hub's turn is one C call (:class:`~trioecho.io.pump.Pump`): it polls the
set and serves every *pumped* connection itself -- an echo session attached
in C (:meth:`Watch.serve_pumped`, :meth:`Watch.park_pumped`) -- and returns
the rest to Python: the events of the other watches, dispatched as above,
and the pumped connections owed a turn, whose memory account must be
updated (the transport's ``pump_account()``: True to go on, False to hand
back), whose input the pump read for Python (the transport's
``pump_input()`` runs the session's step on it and sends the answer from
C: a session with Python code, such as a ``respond`` handler's), or that
the pump handed back (the transport's ``pumped_handback``
is set to the outcome, and the task woken).  A pumped connection is
detached from the pump before its task runs again: on a hand-back, when
it is interrupted or cancelled, and when its watch closes.

:func:`current_hub` returns the hub of the running Trio run, starting it (a
system task) on first use.  A socket closed without :meth:`Watch.close`
leaves the kernel to drop it from the set; its stale watch is closed when
its descriptor number is registered again.
"""

from __future__ import annotations

import contextlib
import logging
import select
import types
from collections.abc import Awaitable, Generator
from typing import Any, Protocol, TypeGuard

import trio

from trioecho.io.pump import (
    ACCOUNT,
    BUDGET,
    EVENT,
    INPUT,
    INPUT_MORE,
    MESSAGES,
    MESSAGES_MORE,
    PUMP_AGAIN,
    PUMP_WAIT,
    Pump,
    PumpedConnection,
    pump_enabled,
)

# Trio's own trap, yielded directly (see _park): a wait then creates no
# coroutine and no trap object.  Private to Trio, so without it the public
# wait_task_rescheduled() is used.
_Trap: Any
try:
    from trio._core._traps import WaitTaskRescheduled as _Trap
except ImportError:  # pragma: no cover - another Trio
    _Trap = None

__all__ = [
    "AGAIN",
    "DEFAULT_TURN_BYTES",
    "HAND_BACK",
    "MAX_EVENTS",
    "WAIT",
    "InlineServed",
    "ReadinessHub",
    "Watch",
    "current_hub",
]

logger = logging.getLogger("trioecho.hub")

MAX_EVENTS = 1024  # events taken per poll; more wait for the hub's next turn
# Bytes one connection's inline step may read in one turn of the hub before
# it yields to the others (the rest is read on a later turn).
DEFAULT_TURN_BYTES = 256 * 1024
# The pump's output buffer: the replies to one read (it grows for a larger
# reply, and shrinks back after the turn).
PUMP_OUTPUT_BYTES = 256 * 1024

# What an inline step returns (see the module docstring).
WAIT = 0
AGAIN = 1
HAND_BACK = 2

if hasattr(select, "epoll"):
    _REGISTER = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
    _INPUT = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
    _OUTPUT = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
    _INPUT_ENDS = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
    _OUTPUT_ENDS = select.EPOLLHUP | select.EPOLLERR
else:  # no epoll: ReadinessHub() raises AttributeError, and transports use Trio's waits
    _REGISTER = _INPUT = _OUTPUT = _INPUT_ENDS = _OUTPUT_ENDS = 0

_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED


class InlineServed(Protocol):
    """What the hub serves inline (a transport): see the module docstring."""

    def serve_ready(self) -> int: ...

    def pump_account(self) -> bool: ...

    def pump_input(self, given: bytes | list[bytes]) -> int: ...

    pumped_handback: int


@types.coroutine
def _park(trap: Any) -> Generator[Any, Any, Any]:
    """``trio.lowlevel.wait_task_rescheduled`` with the one trap every wait
    shares (``_TRAP``): what Trio's function does, one coroutine and one
    object less."""
    return (yield trap).unwrap()


class Watch:
    """One socket's registration in a :class:`ReadinessHub` (see the module docstring).

    A parked task is marked with the watch in its ``custom_sleep_data``
    (Trio resets it whenever the task is rescheduled, a cancellation
    included), so ``reader``/``writer`` may name a task that no longer waits
    here: only a task still marked is woken.  That lets every watch share
    one trap and one abort function, with no object made per wait.
    """

    __slots__ = (
        "_hub",
        "_pump_wait",
        "_pumped_conn",
        "_sink",
        "closed",
        "fd",
        "inline",
        "input_ended",
        "interrupted",
        "output_ended",
        "pumped",
        "readable",
        "reader",
        "served_turn",
        "writable",
        "writer",
    )

    def __init__(self, hub: ReadinessHub, fd: int) -> None:
        self._hub = hub
        self.fd = fd
        self.reader: trio.lowlevel.Task | None = None  # parked if marked with this watch
        self.writer: trio.lowlevel.Task | None = None  # likewise
        self.readable = False  # an input edge came while no reader waited
        self.writable = False  # an output edge came while no writer waited
        # The peer's end of input (or an error) came: it stays, so every later
        # wait returns at once (a read that took the last bytes before it
        # leaves the end to read, with no new edge to announce it).
        self.input_ended = False
        self.output_ended = False  # the connection broke: writes fail at once
        self.interrupted = False
        self.closed = False
        # What serves the parked reader inline (see the module docstring), or None.
        self.inline: InlineServed | None = None
        self.served_turn = -1  # the hub's turn that last ran the inline step
        self.pumped = False  # attached to the hub's C pump
        self._pump_wait: Any = None  # the pumped wait's trap (its abort detaches)
        self._pumped_conn: PumpedConnection | None = None  # what is attached
        self._sink = -1  # the socket the attached connection forwards to

    @property
    def turn_bytes(self) -> int:
        """What an inline step may read per turn of the hub."""
        return self._hub.turn_bytes

    async def wait_readable(self) -> bool:
        if self.take_readable():
            return True
        await self.park_reader()
        return self.reader_woken()

    async def wait_writable(self) -> bool:
        if self.closed:
            raise trio.ClosedResourceError("the socket's watch was closed")
        if self.writable or self.output_ended:
            self.writable = False
            return True
        if _parked(self.writer, self):
            raise trio.BusyResourceError("another task is already waiting to write this socket")
        self.writer = _mark_current_task(self)
        if self._pumped_conn is not None:
            self._pumped_conn.want_output(True)  # the pump reports this socket's output edges
        try:
            await _wait()
        finally:
            if self._pumped_conn is not None:
                self._pumped_conn.want_output(False)
        if self.closed:
            raise trio.ClosedResourceError("the socket's watch was closed")
        return True

    # wait_readable() in three steps, for a caller that cannot afford one
    # more coroutine per wait (the transport's receive):
    #
    #     if not watch.take_readable():
    #         await watch.park_reader()
    #         ok = watch.reader_woken()

    def take_readable(self) -> bool:
        """Whether an input edge (or the end) came since the last wait, which
        a wait would return at once; consumes it."""
        if self.readable or self.input_ended:
            self.readable = False
            return True
        return False

    def park_reader(self) -> Awaitable[object]:
        """Make the current task this socket's reader and return the wait,
        to be awaited at once; then call :meth:`reader_woken`."""
        if self.closed:
            raise trio.ClosedResourceError("the socket's watch was closed")
        if _parked(self.reader, self):
            raise trio.BusyResourceError("another task is already waiting to read this socket")
        self.reader = _mark_current_task(self)
        return _wait()

    def park_inline(self, served: InlineServed) -> Awaitable[object]:
        """Make the current task this socket's reader, parked while the hub
        serves it with ``step`` (see the module docstring); await the result
        at once, then call :meth:`reader_woken`.  ``inline`` is cleared when
        the hub hands the connection back; the caller clears it otherwise."""
        wait = self.park_reader()
        self.inline = served
        return wait

    @property
    def can_pump(self) -> bool:
        """Whether the hub has a C pump to serve this socket with."""
        return self._hub._pump is not None and not self.closed

    def serve_pumped(self, conn: PumpedConnection, sink: int = -1) -> int:
        """Attach ``conn`` to the pump and serve it once now; the outcome
        (:mod:`~trioecho.io.pump`).  It stays attached after WAIT, to be
        parked with :meth:`park_pumped` at once; after any other outcome it
        is detached.  ``sink``: the socket ``conn`` forwards to; it is
        detached (and its task woken) when that socket's watch closes or a
        send to it must wait (:meth:`release_as_sink`)."""
        hub = self._hub
        pump = hub._pump
        if pump is None or self.closed:
            raise trio.ClosedResourceError("the socket's watch was closed")
        if self.input_ended:
            conn.mark_input_ended()
        pump.attach(self.fd, conn)
        self.pumped = True
        self._pumped_conn = conn
        # A task waiting to write this socket (a relay's other way) must
        # still hear of its output edges.
        conn.want_output(_parked(self.writer, self))
        if sink >= 0:
            self._sink = sink
            hub._sinks[sink] = self
        outcome = pump.serve(self.fd)
        if outcome != PUMP_WAIT:
            self.unpump()
        return outcome

    def pumped_input(self) -> list[bytes]:
        """After :meth:`serve_pumped` said ``INPUT`` or ``MESSAGES`` (or
        their ``_MORE``): what the pump read, the bytes (one item) or the
        messages it split (until the pump's next call)."""
        pump = self._hub._pump
        return [] if pump is None else pump.items

    def park_pumped(self, served: InlineServed) -> Awaitable[object]:
        """Park the current task while the pump serves its attached
        connection (after :meth:`serve_pumped` said WAIT); await at once,
        then call :meth:`unpump` and :meth:`reader_woken`."""
        if self.closed:
            raise trio.ClosedResourceError("the socket's watch was closed")
        if _parked(self.reader, self):
            raise trio.BusyResourceError("another task is already waiting to read this socket")
        self.reader = _mark_current_task(self)
        self.inline = served
        if self._pump_wait is None:
            self._pump_wait = None if _Trap is None else _Trap(self._abort_pumped)
        if self._pump_wait is None:
            return trio.lowlevel.wait_task_rescheduled(self._abort_pumped)
        return _park(self._pump_wait)

    def _abort_pumped(self, _: object) -> trio.lowlevel.Abort:
        self.unpump()  # cancelled: the pump must not serve it any more
        return _SUCCEEDED

    def unpump(self) -> None:
        """Detach this socket's connection from the pump (idempotent)."""
        if self.pumped:
            self.pumped = False
            self._pumped_conn = None
            hub = self._hub
            if self._sink >= 0:
                if hub._sinks.get(self._sink) is self:
                    del hub._sinks[self._sink]
                self._sink = -1
            if hub._pump is not None:
                hub._pump.detach(self.fd)

    def release_as_sink(self) -> None:
        """Python is about to wait to send to this socket, or close it: a
        connection the pump forwards to it is detached, and its task woken
        (its wait returns False, as if interrupted)."""
        source = self._hub._sinks.get(self.fd)
        if source is not None:
            source.interrupt_reader()

    def reader_woken(self) -> bool:
        """After a parked wait: True for an edge, False if
        :meth:`interrupt_reader` woke it; ``ClosedResourceError`` if closed."""
        if self.closed:
            raise trio.ClosedResourceError("the socket's watch was closed")
        if self.interrupted:
            self.interrupted = False
            return False
        return True

    def interrupt_reader(self) -> None:
        self.unpump()
        reader = self.reader
        if _parked(reader, self):
            self.reader = None
            self.interrupted = True
            trio.lowlevel.reschedule(reader)

    def close(self) -> None:
        if self.closed:
            return
        self.release_as_sink()
        self.unpump()
        self.closed = True
        self.inline = None
        self._pump_wait = None  # it holds a bound method of this watch: no cycle
        self._hub._forget(self)
        reader, writer = self.reader, self.writer
        self.reader = self.writer = None
        if _parked(reader, self):
            trio.lowlevel.reschedule(reader)
        if writer is not reader and _parked(writer, self):
            trio.lowlevel.reschedule(writer)


def _parked(task: trio.lowlevel.Task | None, watch: Watch) -> TypeGuard[trio.lowlevel.Task]:
    """Whether ``task`` is parked on ``watch`` (and not woken yet)."""
    return task is not None and task.custom_sleep_data is watch


def _mark_current_task(watch: Watch) -> trio.lowlevel.Task:
    task = trio.lowlevel.current_task()
    task.custom_sleep_data = watch
    return task


def _abort(_: object) -> trio.lowlevel.Abort:
    # Cancelled: Trio reschedules the task, which clears its mark.
    return _SUCCEEDED


def _wait() -> Awaitable[object]:
    """The wait of a marked task: Trio's trap yielded directly (one shared
    trap object), or the public ``wait_task_rescheduled`` without it."""
    if _TRAP is None:
        return trio.lowlevel.wait_task_rescheduled(_abort)
    return _park(_TRAP)


_TRAP = None if _Trap is None else _Trap(_abort)


class ReadinessHub:
    """A private edge-triggered epoll set and the task that serves it.

    ``max_events`` bounds the events taken per poll (the rest stay queued
    in the kernel for the next turn); ``turn_bytes`` is what one
    connection's inline step may read per turn.  :meth:`run` is the hub's
    task; :func:`current_hub` starts one per Trio run.

    One turn: wait for the epoll set (a Trio wait, so every other runnable
    task runs first), or only checkpoint when a step is owed another turn;
    then serve the steps owed a turn, then every event of one poll.  A turn
    is therefore bounded: at most ``max_events`` events and the steps owed,
    each reading at most ``turn_bytes``.
    """

    def __init__(
        self,
        max_events: int = MAX_EVENTS,
        turn_bytes: int = DEFAULT_TURN_BYTES,
        *,
        pump: bool | None = None,
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        if turn_bytes < 1:
            raise ValueError(f"turn_bytes must be at least 1, not {turn_bytes}")
        self.max_events = max_events
        self.turn_bytes = turn_bytes
        self._epoll = select.epoll()
        if pump is None:
            pump = pump_enabled()
        # The C pump (None: the Python inline step serves): see the module docstring.
        self._pump = (
            Pump(self._epoll.fileno(), max_events, turn_bytes, PUMP_OUTPUT_BYTES) if pump else None
        )
        self._watches: dict[int, Watch] = {}
        self._sinks: dict[int, Watch] = {}  # a sink's fd -> the pumped watch forwarding to it
        self._owed: list[Watch] = []  # inline steps owed another turn
        self.turns = 0  # turns taken (for tests and statistics)
        self.closed = False

    def __len__(self) -> int:
        return len(self._watches)

    @property
    def pumps(self) -> bool:
        """Whether this hub serves echo sessions with the C pump."""
        return self._pump is not None

    def watch(self, fd: int) -> Watch:
        """Register the socket ``fd`` (once for its lifetime) and return its watch."""
        if self.closed:
            raise RuntimeError("the readiness hub has stopped")
        stale = self._watches.get(fd)
        if stale is not None:
            stale.close()  # its socket was closed without closing the watch
        watch = Watch(self, fd)
        self._epoll.register(fd, _REGISTER)
        self._watches[fd] = watch
        return watch

    def _forget(self, watch: Watch) -> None:
        if self._watches.get(watch.fd) is watch:
            del self._watches[watch.fd]
            # OSError: the socket is already closed, and the kernel dropped it
            # from the set; ValueError: the hub itself is closed.
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(watch.fd)

    async def run(self) -> None:
        """Serve every socket with an edge, until cancelled."""
        epoll = self._epoll
        pump = self._pump
        try:
            while True:
                if self._owed:
                    await trio.lowlevel.checkpoint()  # other tasks run, then the steps owed
                else:
                    await trio.lowlevel.wait_readable(epoll.fileno())
                self.turns += 1
                owed, self._owed = self._owed, []
                pumped: list[int] = []
                for watch in owed:
                    if watch.pumped:
                        pumped.append(watch.fd)
                    elif watch.inline is not None and _parked(watch.reader, watch):
                        self._serve_inline(watch)
                if pump is None:
                    for fd, mask in epoll.poll(0, self.max_events):
                        self._dispatch(fd, mask)
                else:
                    events = pump.turn(pumped)
                    items, taken = pump.items, 0
                    for fd, mask, outcome in events:
                        if outcome == EVENT:
                            self._dispatch(fd, mask)
                        elif outcome in (MESSAGES, MESSAGES_MORE):
                            first, taken = taken, taken + mask  # mask: how many
                            self._pumped_input(fd, items[first:taken], outcome == MESSAGES_MORE)
                        elif outcome in (INPUT, INPUT_MORE):
                            taken += 1
                            self._pumped_input(fd, items[taken - 1], outcome == INPUT_MORE)
                        else:
                            self._pumped(fd, mask, outcome)
                    if taken:
                        pump.release_input()
                    # Nothing read for Python is held while the hub waits.
                    del events, items
        finally:
            self.close()

    def _dispatch(self, fd: int, mask: int) -> None:
        """Wake, serve inline or mark the watch of an event."""
        watch = self._watches.get(fd)
        if watch is None:
            return
        if mask & _INPUT_ENDS:
            watch.input_ended = True
            if mask & _OUTPUT_ENDS:
                watch.output_ended = True
        if mask & _INPUT:
            reader = watch.reader
            if reader is None or reader.custom_sleep_data is not watch:
                watch.readable = True
            elif watch.inline is not None:
                self._serve_inline(watch)
            else:
                watch.reader = None
                trio.lowlevel.reschedule(reader)
        if mask & _OUTPUT:
            writer = watch.writer
            if writer is not None and writer.custom_sleep_data is watch:
                watch.writer = None
                trio.lowlevel.reschedule(writer)
            else:
                watch.writable = True

    def _pumped(self, fd: int, mask: int, outcome: int) -> None:
        """A pumped connection's outcome: owe it a turn, update its memory
        account, or hand it back to its task (the pump detached it)."""
        watch = self._watches.get(fd)
        if watch is None or not watch.pumped:
            return  # detached meanwhile
        if outcome == PUMP_AGAIN:
            self._owed.append(watch)
            return
        served = watch.inline
        assert served is not None
        if outcome == ACCOUNT:
            if served.pump_account():
                self._owed.append(watch)  # more may be waiting: no edge would say so
                return
            outcome = BUDGET
        if mask & _INPUT_ENDS:
            watch.input_ended = True
            if mask & _OUTPUT_ENDS:
                watch.output_ended = True
        self._hand_back(watch, served, outcome)

    def _pumped_input(self, fd: int, data: bytes | list[bytes], more: bool) -> None:
        """What the pump read for a reading connection (still attached):
        its transport's ``pump_input(data)`` answers it (the bytes, or the
        messages the pump split); owe it a turn if ``more`` or
        the answer says so, or hand it back."""
        watch = self._watches.get(fd)
        if watch is None or not watch.pumped:
            return  # detached meanwhile: its connection is going away
        served = watch.inline
        assert served is not None
        outcome = served.pump_input(data)
        if outcome == PUMP_WAIT:
            if more:
                self._owed.append(watch)
            return
        if outcome == PUMP_AGAIN:
            self._owed.append(watch)
            return
        self._hand_back(watch, served, outcome)

    def _hand_back(self, watch: Watch, served: InlineServed, outcome: int) -> None:
        """Detach a pumped connection and wake its task with ``outcome``."""
        watch.unpump()
        served.pumped_handback = outcome
        reader = watch.reader
        watch.inline = None
        watch.reader = None
        if _parked(reader, watch):
            trio.lowlevel.reschedule(reader)

    def _serve_inline(self, watch: Watch) -> None:
        """Run the parked reader's inline step; hand the connection back to
        its task, or owe it another turn, as the step says."""
        served = watch.inline
        assert served is not None
        if watch.served_turn == self.turns:
            self._owed.append(watch)  # once a turn: this edge waits for the next one
            return
        watch.served_turn = self.turns
        outcome = served.serve_ready()
        if outcome == WAIT:
            return
        if outcome == AGAIN:
            self._owed.append(watch)
            return
        reader = watch.reader
        watch.inline = None
        watch.reader = None
        if _parked(reader, watch):
            trio.lowlevel.reschedule(reader)

    def close(self) -> None:
        """Stop: every watch is closed (its waiters get ``ClosedResourceError``)."""
        if self.closed:
            return
        self.closed = True
        for watch in list(self._watches.values()):
            watch.close()
        self._epoll.close()


_hub_var: trio.lowlevel.RunVar[ReadinessHub] = trio.lowlevel.RunVar("trioecho.hub")


def current_hub() -> ReadinessHub:
    """The running Trio run's hub, started as a system task on first use."""
    try:
        hub = _hub_var.get()
        if not hub.closed:
            return hub
    except LookupError:
        pass
    hub = ReadinessHub()
    _hub_var.set(hub)
    trio.lowlevel.spawn_system_task(_serve, hub, name="trioecho readiness hub")
    return hub


async def _serve(hub: ReadinessHub) -> None:
    # A system task must not raise: an unexpected error closes this hub (its
    # transports fall back to Trio's waits) and the next connection starts
    # another.
    try:
        await hub.run()
    except trio.Cancelled:
        raise
    except Exception:
        logger.exception("the readiness hub failed; its connections are closed")
