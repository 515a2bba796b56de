"""The listening sockets of ``--workers N``, opened by the supervisor.

Either one set of listening sockets that every worker inherits (one accept
queue: the connections the kernel has queued belong to no worker), or, with
``SO_REUSEPORT``, a reserved port (bound, never listening: ``--port 0``
picks one port for all) on which each worker opens its own socket.
"""

from __future__ import annotations

import dataclasses
import socket

from trioecho.server.listeners import bind_reuse_port, open_listening_sockets

__all__ = ["WorkerSockets", "open_worker_sockets", "reserve_port"]


@dataclasses.dataclass(frozen=True)
class WorkerSockets:
    """What the supervisor opened or was given for its workers."""

    owned: list[socket.socket]
    """The sockets opened here: the supervisor closes them when it ends."""
    shared: list[socket.socket]
    """The listening sockets every worker inherits (empty with ``SO_REUSEPORT``)."""
    port: int
    """The port: for ``SO_REUSEPORT``, the one reserved (never 0)."""

    @property
    def announced(self) -> list[socket.socket]:
        """The sockets whose addresses the service is listening on."""
        return self.shared or self.owned


def open_worker_sockets(
    host: str | None,
    port: int,
    sockets: list[socket.socket] | None,
    *,
    reuse_port: bool,
    backlog: int | None,
) -> WorkerSockets:
    """The given ``sockets`` (inherited: they stay the caller's), else
    listening sockets on ``host``:``port`` (with ``backlog``), or with
    ``reuse_port`` the port reserved.  The shared sockets are made
    non-inheritable: each worker gets them explicitly.  Raises ``OSError``
    if it cannot listen or reserve."""
    owned: list[socket.socket] = []
    if sockets is None and reuse_port:
        owned, port = reserve_port(host, port)
    elif sockets is None:
        owned = open_listening_sockets(host, port, backlog=backlog)
    shared = owned if sockets is None and not reuse_port else (sockets or [])
    for sock in shared:
        sock.set_inheritable(False)  # passed to each worker explicitly (pass_fds)
    return WorkerSockets(owned, shared, port)


def reserve_port(host: str | None, port: int) -> tuple[list[socket.socket], int]:
    """Bind (without listening) an ``SO_REUSEPORT`` socket per address of
    ``host``, all on one port (``port`` or, for 0, the one the kernel picks).
    Returns the sockets, which hold the port while they are open, and the
    port.  Raises ``OSError`` (``EADDRINUSE``) if anything holds the port,
    with ``SO_REUSEPORT`` or without.
    """
    if port != 0:
        _check_port_free(host, port)
    reserved = bind_reuse_port(host, port)
    return reserved, reserved[0].getsockname()[1]


def _check_port_free(host: str | None, port: int) -> None:
    """Bind each address of ``host``:``port`` once without ``SO_REUSEPORT``:
    that fails if any socket holds the port, even one that allows sharing it
    (another supervisor's).  ``SO_REUSEADDR`` still lets a port whose old
    connections linger in TIME_WAIT be reused, as a listener may."""
    for family, kind, protocol, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)
