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

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol, TypeVar

from trioecho.framing.base import Buffer
from trioecho.stream.receiving import must_wait_for_memory, wait_for_memory

if TYPE_CHECKING:
    from trioecho.stream.message_stream import MessageStream

__all__ = ["Run", "drive", "ready_to_read"]

T_co = TypeVar("T_co", covariant=True)


class Run(Protocol[T_co]):
    """What :func:`drive` needs of a run.

    ``begin`` checks the stream and claims its receiving (raising what the
    method raises for a stream that cannot); ``release`` gives receiving
    back, whatever happened; ``finish`` is the run's end once it ``ended``:
    its result, or the error it owes.  ``reads_at_once``: False if the run
    waits for the memory budget before its first read.

    ``step`` is what the hub calls inline on each read (``b""``: the end of
    the input): the bytes to send back, or None when the connection needs
    its task.  ``deadline`` bounds the hub's waits (Trio's clock).
    ``serve_pumped`` returns the awaitable that serves the run with the
    hub's C pump until it hands the connection back (a plain call that
    returns it: no coroutine more while a connection is parked);
    ``serve_in_task`` is one read and its step in this task.  After each
    turn what the run ``owes`` is settled (:meth:`settle`); ``ended`` says
    the run is over (the input ended, or an error waits to be raised).
    """

    reads_at_once: bool
    deadline: float
    owed: Buffer
    ended: bool

    def begin(self) -> None: ...

    def release(self) -> None: ...

    def finish(self) -> T_co: ...

    def step(self, data: bytes) -> Buffer | None: ...

    def serve_pumped(self) -> Awaitable[None]: ...

    async def serve_in_task(self) -> None: ...

    async def settle(self) -> None: ...


async def drive(stream: MessageStream, run: Run[T_co]) -> T_co | None:
    """Serve ``run`` on ``stream`` from its :meth:`~Run.begin` until it ends
    (its :meth:`~Run.finish`) or receiving stops (None).  This coroutine is
    the whole of a parked connection's run: the methods that start one
    return it, and it awaits the transport's serving directly (an idle
    connection keeps as few coroutines as it can)."""
    run.begin()
    try:
        if not run.reads_at_once and not await ready_to_read(stream):
            return None
        transport = stream.transport
        while True:
            if transport.can_pump and (
                transport.deadlines_handed_over or transport.idle_timeout is None
            ):
                await run.serve_pumped()
            elif transport.can_serve_inline and (
                transport.deadlines_handed_over or transport.idle_timeout is None
            ):
                # Inline, until the hub hands the connection back.
                rest = await transport.serve_inline(run.step, stream._receive_size, run.deadline)
                if rest is not None:
                    await stream.send_framed(rest, 0)  # its replies were counted
            else:
                await run.serve_in_task()
            if run.owed:
                await run.settle()
            if run.ended:
                return run.finish()
            if not await ready_to_read(stream):
                return None
    finally:
        run.release()
        # An exception's traceback holds this frame: without the run (its
        # session and unfinished message) in it, nothing big lives in a cycle.
        del run


async def ready_to_read(stream: MessageStream) -> bool:
    """Before a run reads again: False once receiving has stopped; waits
    for the memory budget."""
    if stream.transport.stopping:
        return False
    if must_wait_for_memory(stream):
        await wait_for_memory(stream)
    return not stream.transport.stopping
