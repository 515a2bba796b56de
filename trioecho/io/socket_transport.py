"""The direct-socket transport: non-blocking socket calls on the stdlib socket
under a ``trio.SocketStream``, waits on the readiness hub (or Trio's), and
inline serving by the hub (:meth:`SocketTransport.serve_inline`) or by its C
pump (:meth:`SocketTransport.serve_pumped`).

:class:`SocketTransport` is assembled from one class per concern, each in
its own module: the state, the receive and the plain send
(:mod:`~trioecho.io.socket_base`), the send that waits by the send rule
(:mod:`~trioecho.io.socket_sending`), inline serving
(:mod:`~trioecho.io.socket_inline`) and serving by the C pump
(:mod:`~trioecho.io.socket_pumped`).
"""

from __future__ import annotations

import socket

from trioecho.io.hub import current_hub
from trioecho.io.socket_base import broken_while
from trioecho.io.socket_inline import InlineServing
from trioecho.io.socket_pumped import PumpedServing
from trioecho.io.socket_sending import SocketSending
from trioecho.io.watch import Watch

__all__ = ["SocketTransport", "broken_while", "hub_watch"]


class SocketTransport(PumpedServing, InlineServing, SocketSending):
    """A transport over a plain ``trio.SocketStream``'s non-blocking socket.

    With ``watch`` (the socket's registration in a
    :class:`~trioecho.io.hub.ReadinessHub`) every wait goes through the hub;
    without, through Trio's ``wait_readable``/``wait_writable``.  Either way a read that had
    to wait and came up short makes the next receive wait first, without
    the read that would fail (safe for the hub's edges too: a short read
    leaves nothing unread, so new input brings a new edge -- over TLS only
    when :func:`~trioecho.io.tls_socket.unread` says so too).

    On the hub it can also be served inline (:meth:`serve_inline`): the hub
    itself reads, runs the connection's step and sends, and the task sleeps
    until the connection needs it; or by the hub's C pump
    (:meth:`serve_pumped`), the same with no Python per message.
    """

    __slots__ = ()

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


def hub_watch(sock: socket.socket) -> Watch | None:
    """The socket's registration in the run's hub, or None where there is no hub."""
    try:
        return current_hub().watch(sock.fileno())
    except (RuntimeError, OSError, AttributeError):
        # RuntimeError: not in a Trio run; AttributeError: no select.epoll;
        # OSError: the kernel refused (out of memory or descriptors).
        return None
