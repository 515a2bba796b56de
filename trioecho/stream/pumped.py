"""Serving a run with the readiness hub's C pump
(:meth:`~trioecho.io.transport.Transport.serve_pumped`), one function per
kind of run, each passed to :func:`~trioecho.stream.driver.drive`:

* :func:`serve_engine_pumped`: a session with a C engine (the echo
  session): the pump reads, answers and sends with no Python per message;
* :func:`serve_reads_pumped`: a session with Python code (a ``respond``
  handler's): the pump reads (and splits the messages, where the session
  lets it) and sends, the session's step answers;
* :func:`forward_pumped`: a forwarding: the pump checks every frame header
  with the source's C framer and sends the input on to the sink's socket.

Each serves until the pump hands the connection back, then leaves the run
as its Python step would have: the rest of a short send sent or owed, the
end of the input seen, an ending or an error recorded.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, cast

from trioecho.errors import SinkError
from trioecho.framing.base import ForwardingFramer
from trioecho.io.pump import END_OF_INPUT, ENDED, SHORT_SEND, SOCKET_ERROR, PumpedConnection
from trioecho.io.socket_transport import broken_while

if TYPE_CHECKING:
    from trioecho.stream.forwarding import _Forwarding
    from trioecho.stream.session_run import _SessionRun

__all__ = ["forward_pumped", "serve_engine_pumped", "serve_reads_pumped"]


async def serve_engine_pumped(run: _SessionRun) -> None:
    """Serve the session with the hub's C pump until it hands the
    connection back, then do what the hand-back asks: send the rest of a
    short send, end the session at the end of the input or where the C
    engine ended it (the replies before the end owed), or nothing (the
    memory budget, or receiving stopped: the driver sees to it)."""
    conn = run.pumped_connection()
    session = run.pumpable
    assert session is not None
    conn.set_input(session.take_input())
    try:
        outcome = await run.stream.transport.serve_pumped(conn, run.account, run.deadline)
    finally:
        session.put_input(conn.take_input())
        run.take_pumped_counts()
    if await _after_pumped(run, conn, outcome):
        return
    if outcome == ENDED:
        rest, replies = conn.take_unsent()
        status, length = conn.ending
        run.end(session.end_pumped(status, length, replies), rest, replies)


async def serve_reads_pumped(run: _SessionRun) -> None:
    """Serve a session with Python code (a ``respond`` handler's) with the
    hub's C pump: it reads, the session's step answers each turn's bytes,
    and the pump sends the answer.  Then do what the hand-back asks, as
    :func:`serve_engine_pumped` does (the step's own hand-backs are in
    ``run``, for the driver)."""
    conn = run.reading_connection()
    try:
        answer = run.answer if run.splits else run.step
        outcome = await run.stream.transport.serve_pumped(
            conn, run.account, run.deadline, answer=answer
        )
    finally:
        run.take_pumped_counts()
        run.restore_splitting()
    if await _after_pumped(run, conn, outcome):
        return
    if outcome == ENDED:
        # A bad header the pump would not split past: the framer, given
        # the bytes from it on back, raises its own error for them.
        wire = run.rescan()
        if wire:
            await run.stream.send_framed(wire, 0)


async def _after_pumped(run: _SessionRun, conn: PumpedConnection, outcome: int | None) -> bool:
    """The hand-backs both session paths take alike: send the rest of a
    short send (its replies were counted), or give the session the end
    of its input, as the task path does.  Whether it was one of them."""
    if outcome == SHORT_SEND:
        rest, _ = conn.take_unsent()
        await run.stream.send_framed(rest, 0)
        return True
    if outcome == END_OF_INPUT:
        run.step(b"")
        return True
    return False


async def forward_pumped(run: _Forwarding) -> None:
    """Forward with the hub's C pump until it hands the connection back,
    then leave ``run`` as the Python step would: the rest of a short
    send owed, the end of the input, a bad header's error (the read that
    holds it checked again by the framer, the bytes before it passed
    on), or the sink's error.  While the sink cannot be sent to from C
    (or the framer cannot forward from C), the hub runs the step inline
    instead (the pump's twin)."""
    source = run.source
    framer = cast(ForwardingFramer, source.framer)
    sink_fd = run.sink.transport.pump_sink
    # (forwarding_state() hands the framer's state over: asked last)
    state = None if sink_fd < 0 else framer.forwarding_state()
    if state is None:
        await source.transport.serve_inline(run.step, source._receive_size)  # the twin
        return
    scanner, due, held = state
    conn = run.pumped_connection(scanner, sink_fd, due, source._receive_size)
    conn.set_input(held)
    outcome: int | None = None
    try:
        outcome = await source.transport.serve_pumped(conn, _fits, sink=sink_fd)
    finally:
        held = conn.take_input()
        framer.restore_forwarding(conn.due, b"" if outcome == ENDED else held)
        run.take_pumped_counts()
    if outcome == SHORT_SEND:
        run.owed, run.owed_frames = conn.take_unsent()
    elif outcome == END_OF_INPUT:
        run.ended = True
    elif outcome == ENDED:
        run.step(held)  # the framer finds the bad header again and says why
    elif outcome == SOCKET_ERROR:  # sending to the sink failed
        code = conn.error
        run.fail(SinkError(broken_while("sending", OSError(code, os.strerror(code)))))


def _fits(size: int) -> bool:
    """A forwarding holds at most an incomplete header: no account to update."""
    return True
