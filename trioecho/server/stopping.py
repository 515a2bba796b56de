"""How a :class:`~trioecho.server.server.MessageServer` stops: the
:class:`Stopping` part of the server, with its three ways to stop.

* :meth:`~Stopping.shutdown`: stop accepting now, let every connection
  finish the messages it has already received, wait up to ``grace``
  seconds for the handlers to return, then cancel the rest.
* :meth:`~Stopping.drain` (``trioecho serve`` on SIGTERM): stop reporting
  ready, accept for ``drain_delay`` seconds more, stop accepting without
  resetting a queued connection, serve the open connections on until their
  clients end them or ``grace`` runs out, then shut down.
* :meth:`~Stopping.retire` (a worker replaced by a rolling reload): stop
  accepting, leaving the shared socket's queue to the other workers, serve
  the open connections on for up to ``grace`` seconds, then shut down.

Stopping accepting for good (a shutdown, a drain) first takes the
connections the kernel has queued (:mod:`trioecho.io.refusing`), except on
listening sockets that outlive the process (systemd's, ``--fd``).
"""

from __future__ import annotations

import logging

import trio

from trioecho.io.refusing import empty_accept_queues
from trioecho.stream.message_stream import MessageStream

__all__ = ["QUEUE_EMPTYING_LIMIT", "Stopping"]

logger = logging.getLogger("trioecho.server")

# At most this long, at a stop for good, accepting takes what the kernel had
# queued before the listeners close (longer only if accepting is stuck).
QUEUE_EMPTYING_LIMIT = 1.0


class Stopping:
    """The stopping of a :class:`~trioecho.server.server.MessageServer`
    (a part of it, in a module of its own: see the module docstring)."""

    grace: float
    drain_delay: float
    _streams: set[MessageStream]
    _setting_up: set[trio.CancelScope]  # cancelled at once by a shutdown

    def _init_stopping(self) -> None:
        """The stop's state, unset (called when the server is configured)."""
        self._shutdown_requested = trio.Event()
        self._accepting_stopped = trio.Event()  # by shutdown(), retire() or a drain
        self._drain_requested = trio.Event()  # drain(): accepting stops after drain_delay
        # The listeners close for good (shutdown, drain), not for a retirement
        # (on a shared socket the other workers go on taking its queue).
        self._closing_for_good = False
        self._draining = False
        self._listeners_inherited = False
        self._streams_changed = trio.Event()  # a connection closed, or shutdown()
        self._all_closed = trio.Event()
        self._stopped = trio.Event()
        self._connections_scope: trio.CancelScope | None = None

    @property
    def shutting_down(self) -> bool:
        return self._shutdown_requested.is_set()

    async def _take_queued_connections(self, listeners: list[trio.SocketListener]) -> None:
        """Before the listeners close for good: refuse new connections and
        accept those the kernel has queued, which closing would reset
        (:mod:`trioecho.io.refusing`)."""
        sockets = [listener.socket for listener in listeners]
        left = await empty_accept_queues(sockets, QUEUE_EMPTYING_LIMIT)
        if left:
            logger.warning(
                "%d queued connections reset: accepting could not take them in %s s",
                left,
                QUEUE_EMPTYING_LIMIT,
            )

    def drain(self) -> None:
        """Stop for good and lose nothing (``trioecho serve`` on SIGTERM):
        stop reporting ready now (``stats()["serving"]`` is 0, ``/readyz``
        answers 503), go on accepting for ``drain_delay`` seconds, then
        refuse new connections and accept those already queued, close the
        listeners, serve the open connections on as usual (idle ones
        included) until their clients end them or ``grace`` runs out, and
        then shut down as :meth:`shutdown` does.  :meth:`shutdown` at any
        point cuts the delay and the wait short."""
        if self._draining or self.shutting_down:
            return
        self._draining = True
        self._drain_requested.set()
        logger.info(
            "draining: not ready; accepting for %s s more, then %d connections may run on for %s s",
            self.drain_delay,
            len(self._streams),
            self.grace,
        )

    @property
    def draining(self) -> bool:
        """True once :meth:`drain` was called."""
        return self._draining

    async def _stop_accepting_after_drain_delay(self) -> None:
        await self._drain_requested.wait()
        with trio.move_on_after(self.drain_delay):
            await self._shutdown_requested.wait()
        self._closing_for_good = True
        self._accepting_stopped.set()

    def retire(self) -> None:
        """Stop accepting, and let the open connections run on as usual for
        up to ``grace`` seconds; those still open then are shut down as by
        :meth:`shutdown` (which may also be called at any time).  For a
        worker replaced by a rolling reload: the listening socket it shares
        with the other workers keeps its queued connections for them."""
        if not self._accepting_stopped.is_set():
            logger.info(
                "retiring: accepting stopped, %d connections may run on for %ss",
                len(self._streams),
                self.grace,
            )
        self._accepting_stopped.set()

    async def _let_connections_finish(self) -> None:
        with trio.move_on_after(self.grace):
            while self._streams and not self.shutting_down:
                self._streams_changed = trio.Event()
                await self._streams_changed.wait()

    def shutdown(self, *, grace: float | None = None) -> None:
        """Stop gracefully: see the module docstring.  Safe to call more than once;
        a later call with a shorter ``grace`` (0: now) cuts the wait short."""
        if grace is not None:
            self.grace = min(self.grace, grace)
            if self.grace == 0 and self._shutdown_requested.is_set():
                self._cancel_connections()
        if not self._accepting_stopped.is_set():
            self._closing_for_good = True
        self._shutdown_requested.set()
        self._accepting_stopped.set()
        self._streams_changed.set()

    async def wait_stopped(self) -> None:
        """Return once :meth:`serve` has shut down."""
        await self._stopped.wait()

    async def _drain(self) -> None:
        for setup in self._setting_up:
            setup.cancel()
        streams = list(self._streams)
        logger.info("shutting down: %d connections finishing", len(streams))
        for stream in streams:
            stream.stop_receiving()
        if not self._streams:
            return
        with trio.move_on_after(self.grace):
            await self._all_closed.wait()
            return
        self._cancel_connections()

    def _cancel_connections(self) -> None:
        if self._streams:
            logger.warning("grace period over: cancelling %d connections", len(self._streams))
        if self._connections_scope is not None:
            self._connections_scope.cancel()
