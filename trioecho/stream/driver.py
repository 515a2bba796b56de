"""The one loop that serves a run on a message stream: a session
(:meth:`~trioecho.stream.message_stream.MessageStream.run_session`, run by
:class:`~trioecho.stream.session_run._SessionRun`) or a forwarding
(:meth:`~trioecho.stream.message_stream.MessageStream.forward_to`, by
:class:`~trioecho.stream.forwarding._Forwarding`).

Each turn of :func:`drive` serves the run the fastest way the transport
allows -- the hub's C pump, the hub running the run's ``step`` inline on
each read, or this task reading once -- then settles what the run owes,
and reads on only while the input has not ended, receiving has not stopped
and the memory budget lets it.  What differs between the runs is behind the
small interface :class:`Run`; the loop adds no call per message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from trioecho.framing.base import Buffer
from trioecho.stream.receiving import must_wait_for_memory, wait_for_memory

if TYPE_CHECKING:
    from trioecho.stream.message_stream import MessageStream

__all__ = ["Run", "drive", "ready_to_read"]


class Run(Protocol):
    """What :func:`drive` needs of a run.

    ``step`` is what the hub calls inline on each read (``b""``: the end of
    the input): the bytes to send back, or None when the connection needs
    its task.  ``deadline`` bounds the hub's waits (Trio's clock).
    ``serve_in_task`` is one read and its step in this task.  After each
    turn what the run ``owes`` is settled (:meth:`settle`); ``ended`` says
    the run is over (the input ended, or an error waits to be raised).
    """

    deadline: float
    owed: Buffer
    ended: bool

    def step(self, data: bytes) -> Buffer | None: ...

    async def serve_in_task(self) -> None: ...

    async def settle(self) -> None: ...


R = TypeVar("R", bound=Run)


async def drive(
    stream: MessageStream, run: R, serve_pumped: Callable[[R], Awaitable[None]]
) -> bool:
    """Serve ``run`` on ``stream`` until it ends (True) or receiving stops
    (False).  ``serve_pumped(run)`` serves it with the hub's C pump until
    the pump hands the connection back.  The caller has claimed receiving
    on ``stream``; it reads at once (a caller that must wait for memory
    first calls :func:`ready_to_read`)."""
    transport = stream.transport
    while True:
        if transport.can_pump and (
            transport.deadlines_handed_over or transport.idle_timeout is None
        ):
            await serve_pumped(run)
        elif transport.can_serve_inline and (
            transport.deadlines_handed_over or transport.idle_timeout is None
        ):
            # Inline, until the hub hands the connection back (awaited
            # here: an idle connection keeps one coroutine less).
            rest = await transport.serve_inline(run.step, stream._receive_size, run.deadline)
            if rest is not None:
                await stream.send_framed(rest, 0)  # its replies were counted
        else:
            await run.serve_in_task()
        if run.owed:
            await run.settle()
        if run.ended:
            return True
        if not await ready_to_read(stream):
            return False


async def ready_to_read(stream: MessageStream) -> bool:
    """Before a run reads again: False once receiving has stopped; waits
    for the memory budget."""
    if stream.transport.stopping:
        return False
    if must_wait_for_memory(stream):
        await wait_for_memory(stream)
    return not stream.transport.stopping
