"""Inline serving on the direct-socket transport: the readiness hub reads
the socket, runs the connection's step and sends its output, and the task
sleeps until the connection needs it (:meth:`InlineServing.serve_inline`,
the hub's :meth:`InlineServing.serve_ready`).  The C pump's twin.
"""

from __future__ import annotations

import math

import trio

from trioecho.framing.base import Buffer
from trioecho.io.socket_base import NO_HANDBACK, SocketTransportBase
from trioecho.io.transport import InlineStep
from trioecho.io.watch import AGAIN, HAND_BACK, WAIT

__all__ = ["InlineServing"]


class InlineServing(SocketTransportBase):
    """The direct-socket transport's inline serving (see the module docstring)."""

    __slots__ = ()

    @property
    def can_serve_inline(self) -> bool:
        return self._watch is not None and not self._closed

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
        watch = self._start_serving(deadline, pump=False)
        self._step = step
        self._inline_size = max_bytes
        self._turn_bytes = watch.turn_bytes
        try:
            while not self._stopping:
                outcome = self.serve_ready()
                if outcome == AGAIN:
                    await trio.lowlevel.checkpoint()
                    continue
                if outcome == HAND_BACK:
                    return self._take_handback()
                # Sleep while the hub serves the connection (in this frame:
                # an idle connection keeps one coroutine less).
                self._start_parking()
                try:
                    await watch.park_inline(self)
                finally:
                    watch.inline = None
                    self._waiting = False
                if self._handback is not NO_HANDBACK:
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
            self._handback = NO_HANDBACK
            self._receiving = False

    def serve_ready(self) -> int:
        """One inline step: read until the socket is empty (a short read --
        over TLS, one after which nothing is unread -- or ``EAGAIN``) or
        this turn's bytes are used (each read asks for at most what is left
        of them), running the step on each read and sending what it
        returns.  Returns the hub's WAIT, AGAIN or
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
                except self._WOULD_BLOCK:
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
                if (
                    len(data) < wanted
                    and (self._SHORT_READ_EMPTIES or self._nothing_unread())
                    and not watch.input_ended
                ):
                    return WAIT  # nothing more: the next input brings an edge
                budget -= len(data)
                if budget <= 0:
                    return AGAIN
        except OSError as exc:
            self._handback = self._socket_error(exc, "receiving or sending")
        except Exception as exc:  # the step's own error: raised in the task
            self._handback = exc
        return HAND_BACK
