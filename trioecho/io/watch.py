"""A socket's registration in the readiness hub (:mod:`~trioecho.io.hub`).

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

**Pumped serving.**  Where the hub has the C pump, a connection is attached
to it (:meth:`Watch.serve_pumped`) and its task parked
(:meth:`Watch.park_pumped`) while the pump serves it; the hub reports what
the pump returns for Python to the :class:`InlineServed` (its
``pump_account()``, ``pump_input()`` and ``pumped_handback``).  The
connection is detached (:meth:`Watch.unpump`) before its task runs again:
on a hand-back, when it is interrupted or cancelled, and when its watch
closes -- or the watch of the socket it forwards to
(:meth:`Watch.release_as_sink`).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from trioecho.io.parking import (
    SUCCEEDED,
    WaitTrap,
    mark_current_task,
    park,
    parked,
    wait_marked,
)
from trioecho.io.pump import PUMP_WAIT, PumpedConnection

if TYPE_CHECKING:
    from trioecho.io.hub import ReadinessHub

__all__ = ["AGAIN", "HAND_BACK", "WAIT", "InlineServed", "Watch"]

# What an inline step returns (see the module docstring).
WAIT = 0
AGAIN = 1
HAND_BACK = 2


class InlineServed(Protocol):
    """What the hub serves inline (a transport): see the module docstring."""

    def serve_ready(self) -> int: ...

    def pump_account(self) -> bool: ...

    def pump_input(self, given: bytes | list[bytes]) -> int: ...

    pumped_handback: int


class Watch:
    """One socket's registration in a :class:`~trioecho.io.hub.ReadinessHub`
    (see the module docstring).

    ``reader``/``writer`` may name a task that no longer waits here: only a
    task still marked with this watch is woken (:mod:`~trioecho.io.parking`),
    so every watch shares one trap and one abort function, with no object
    made per wait.
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
        if parked(self.writer, self):
            raise trio.BusyResourceError("another task is already waiting to write this socket")
        self.writer = mark_current_task(self)
        if self._pumped_conn is not None:
            self._pumped_conn.want_output(True)  # the pump reports this socket's output edges
        try:
            await wait_marked()
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
        if parked(self.reader, self):
            raise trio.BusyResourceError("another task is already waiting to read this socket")
        self.reader = mark_current_task(self)
        return wait_marked()

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
        conn.want_output(parked(self.writer, self))
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
        if parked(self.reader, self):
            raise trio.BusyResourceError("another task is already waiting to read this socket")
        self.reader = mark_current_task(self)
        self.inline = served
        if self._pump_wait is None:
            self._pump_wait = None if WaitTrap is None else WaitTrap(self._abort_pumped)
        if self._pump_wait is None:
            return trio.lowlevel.wait_task_rescheduled(self._abort_pumped)
        return park(self._pump_wait)

    def _abort_pumped(self, _: object) -> trio.lowlevel.Abort:
        self.unpump()  # cancelled: the pump must not serve it any more
        return SUCCEEDED

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
        if parked(reader, self):
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
        if parked(reader, self):
            trio.lowlevel.reschedule(reader)
        if writer is not reader and parked(writer, self):
            trio.lowlevel.reschedule(writer)
