"""Pumped serving on the direct-socket transport: the readiness hub's C pump
reads, answers (the C echo session, forwarding, or a Python session's step
on what it read) and sends, and the task sleeps until the connection needs
it (:meth:`PumpedServing.serve_pumped`; the hub's calls
:meth:`PumpedServing.pump_account` and :meth:`PumpedServing.pump_input`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import trio

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
from trioecho.io.socket_base import NO_HANDBACK, SocketTransportBase
from trioecho.io.transport import PumpedAnswer

__all__ = ["PumpedServing"]


class PumpedServing(SocketTransportBase):
    """The direct-socket transport's serving by the C pump (see the module
    docstring)."""

    __slots__ = ()

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
        watch = self._start_serving(deadline, pump=True)
        self._pumped = conn
        self._on_account = on_account
        self._answer = answer
        self._pump_fd = watch.fd
        try:
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
                self._start_parking()
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
            self._handback = NO_HANDBACK
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
