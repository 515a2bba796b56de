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

A socket's registration, its waits and their edge-triggered rules, are a
:class:`~trioecho.io.watch.Watch` (:mod:`trioecho.io.watch`, which also
says how a parked reader is served inline).  The hub's part of inline
serving: on an input edge it calls the parked reader's ``serve_ready()``
itself instead of waking the task, at most once a turn; ``AGAIN`` owes the
connection a call on the next turn, ``HAND_BACK`` wakes the task.

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

import trio

from trioecho.io.parking import parked
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
    pump_enabled,
)
from trioecho.io.watch import AGAIN, HAND_BACK, WAIT, InlineServed, Watch

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

if hasattr(select, "epoll"):
    _REGISTER = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
    _INPUT = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
    _OUTPUT = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
    _INPUT_ENDS = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
    _OUTPUT_ENDS = select.EPOLLHUP | select.EPOLLERR
else:  # no epoll: ReadinessHub() raises AttributeError, and transports use Trio's waits
    _REGISTER = _INPUT = _OUTPUT = _INPUT_ENDS = _OUTPUT_ENDS = 0


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
                    elif watch.inline is not None and parked(watch.reader, watch):
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
            elif watch.inline is not None and not watch.pumped:
                self._serve_inline(watch)
            else:  # a plain wait, or a pumped one the pump left to Python: its task serves it again
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
        if parked(reader, watch):
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
        if parked(reader, watch):
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
