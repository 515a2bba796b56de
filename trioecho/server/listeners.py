"""Listening sockets: the connection limit (:class:`ConnectionSlots`) and
the out-of-descriptors pause around accept, and ``SO_REUSEPORT`` binding for
several processes on one port.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import stat

import trio

logger = logging.getLogger("trioecho.server")

__all__ = [
    "ACCEPT_RETRY_SECONDS",
    "DEFAULT_UNIX_MODE",
    "PAUSE_WARNING_SECONDS",
    "ConnectionSlots",
    "LimitedListener",
    "adopt_listening_socket",
    "bind_reuse_port",
    "bind_unix",
    "open_listening_sockets",
    "open_reuse_port_listeners",
    "open_unix_listener",
    "remove_unix_socket",
    "socket_listeners",
]


# accept() errors that mean "out of a resource", not "this connection failed":
# accepting pauses and retries (as trio.serve_listeners does, but logged once
# per episode rather than with a traceback every retry).
_ACCEPT_CAPACITY_ERRNOS = {
    errno.EMFILE: "out of file descriptors",
    errno.ENFILE: "out of file descriptors (system-wide)",
    errno.ENOMEM: "out of memory",
    errno.ENOBUFS: "out of socket buffers",
}
ACCEPT_RETRY_SECONDS = 0.1
PAUSE_WARNING_SECONDS = 10.0  # at most one "accepting paused" WARNING this often


class ConnectionSlots:
    """The connection limit (``max_connections``), shared by a server's
    listeners.

    An accept loop takes a slot (:meth:`take`) before it accepts, so that at
    the limit new clients wait in the kernel's listen backlog; the slot
    passes to the connection accepted (:meth:`opened`), which gives it back
    when it closes (:meth:`release`).  :attr:`paused` is exact: True while
    every slot belongs to an open connection (a slot an accept loop holds
    while it waits for a client does not count).

    Logged on the ``trioecho.server`` logger: one WARNING when accepting
    pauses, at most one every ``PAUSE_WARNING_SECONDS``.  A pause within
    that window after a warning is not logged when it begins, but counted
    in the next warning; if it is still going on when the window ends, it
    gets its warning then.  One INFO when a logged pause ends.  Nothing once
    :meth:`stop` was called (the server no longer accepts).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = trio.Semaphore(limit)
        self.open = 0  # slots that belong to open connections
        self.paused = False
        self._paused_at = 0.0
        self._logged = False  # the current pause's WARNING is written
        self._last_warning = -math.inf
        self._unlogged = 0  # pauses that began since the last warning, unlogged
        self._stopped = False

    async def take(self) -> None:
        """For an accept loop: wait for a free slot and hold it.  While it
        waits through a pause that was not logged, it logs it once the
        warning window ends."""
        while self.paused and not self._logged and not self._stopped:
            with trio.move_on_at(self._last_warning + PAUSE_WARNING_SECONDS):
                await self._free.acquire()
                return
            if self.paused and not self._logged and not self._stopped:
                self._unlogged -= 1  # this one is logged now
                self._warn()
        await self._free.acquire()

    def opened(self) -> None:
        """The accept loop's slot now belongs to the connection it accepted."""
        self.open += 1
        if self.open >= self.limit and not self.paused:
            self.paused = True
            self._paused_at = trio.current_time()
            if self._stopped or self._paused_at - self._last_warning < PAUSE_WARNING_SECONDS:
                self._unlogged += 1
            else:
                self._warn()

    def give_back(self) -> None:
        """The accept loop gives its slot back, unused (it failed or stopped)."""
        self._free.release()

    def release(self) -> None:
        """A connection closed: its slot is free again."""
        self.open -= 1
        self._free.release()
        if self.paused:
            self.paused = False
            if self._logged and not self._stopped:
                logger.info(
                    "accepting again after %.1f s paused: %d of max_connections=%d open",
                    trio.current_time() - self._paused_at,
                    self.open,
                    self.limit,
                )
            self._logged = False

    def stop(self) -> None:
        """The server stopped accepting: nothing is paused (or logged) any more."""
        self._stopped = True
        self.paused = False

    def _warn(self) -> None:
        self._last_warning = trio.current_time()
        self._logged = True
        unlogged, self._unlogged = self._unlogged, 0
        logger.warning(
            "accepting paused: all max_connections=%d connections are open; new clients "
            "wait in the listen backlog until one closes%s",
            self.limit,
            f" ({unlogged} shorter pause{'' if unlogged == 1 else 's'} since the last warning)"
            if unlogged
            else "",
        )


class LimitedListener(trio.abc.Listener[trio.SocketStream]):
    """Accepts only while a connection slot is free (:class:`ConnectionSlots`):
    at the limit, the server stops accepting (clients wait in the kernel's
    backlog) until one frees.  Out of file descriptors (or memory), it pauses
    and retries, logging the episode's start and end once each."""

    def __init__(self, listener: trio.SocketListener, slots: ConnectionSlots) -> None:
        self.listener = listener
        self.socket = listener.socket
        self._slots = slots
        self._short_of: str | None = None  # the resource accept() ran out of
        self.pauses = 0  # episodes of accepting paused for want of a resource

    async def accept(self) -> trio.SocketStream:
        await self._slots.take()
        try:
            while True:
                try:
                    stream = await self.listener.accept()
                except OSError as exc:
                    what = _ACCEPT_CAPACITY_ERRNOS.get(exc.errno or 0)
                    if what is None:
                        raise
                    if self._short_of is None:
                        self.pauses += 1
                        logger.warning(
                            "cannot accept: %s (%s): accepting paused, retrying every %ss",
                            what,
                            errno.errorcode.get(exc.errno or 0, exc.errno),
                            ACCEPT_RETRY_SECONDS,
                        )
                    self._short_of = what
                    await trio.sleep(ACCEPT_RETRY_SECONDS)
                    continue
                if self._short_of is not None:
                    logger.warning("accepting again (was %s)", self._short_of)
                    self._short_of = None
                self._slots.opened()
                return stream
        except BaseException:
            self._slots.give_back()
            raise

    @property
    def short_of_resource(self) -> bool:
        """Accepting waits for a resource (file descriptors, memory)."""
        return self._short_of is not None

    @property
    def paused(self) -> bool:
        """Accepting waits: every connection slot is taken, or a resource is short."""
        return self._short_of is not None or self._slots.paused

    async def aclose(self) -> None:
        await self.listener.aclose()


def bind_reuse_port(host: str | None, port: int) -> list[socket.socket]:
    """Bind, without listening, one ``SO_REUSEPORT`` socket per address of
    ``host``, all on one port: ``port``, or for 0 the one the kernel picks for
    the first address.  Raises ``OSError`` if the port is held without
    ``SO_REUSEPORT`` (or the platform lacks it).  Blocks on name resolution.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("SO_REUSEPORT is not available on this platform")
    return _bind_each_address(host, port, reuse_port=True)


def open_listening_sockets(
    host: str | None, port: int, *, backlog: int | None = None
) -> list[socket.socket]:
    """Listening TCP sockets, one per address of ``host`` (``None``: every
    address), all on ``port`` (0: the one the kernel picks for the first), as
    ``trio.open_tcp_listeners`` opens them but with the stdlib, for a process
    that hands them to others (the ``--workers`` supervisor).  Raises
    ``OSError``; blocks on name resolution."""
    return _listen_or_close(_bind_each_address(host, port, reuse_port=False), backlog)


def _listen_or_close(sockets: list[socket.socket], backlog: int | None) -> list[socket.socket]:
    """``sockets``, each listening with ``backlog`` (None: the system's
    maximum); if one cannot listen, all of them closed and the error raised."""
    try:
        for sock in sockets:
            sock.listen(backlog if backlog is not None else socket.SOMAXCONN)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_each_address(host: str | None, port: int, *, reuse_port: bool) -> list[socket.socket]:
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    bound: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in addresses:
            sock = socket.socket(family, kind, protocol)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def adopt_listening_socket(fd: int) -> socket.socket:
    """The listening stream socket open on ``fd`` (inherited: ``--fd``,
    systemd's ``LISTEN_FDS``, a supervisor's).  Raises ``ValueError``, saying
    what it is instead, for a descriptor that is not one; ``OSError`` for
    one that is not open."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        if exc.errno == errno.ENOTSOCK:
            raise ValueError(f"file descriptor {fd} is not a socket") from None
        raise
    try:
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"file descriptor {fd} is not a stream socket ({sock.type.name})")
        if sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            raise ValueError(
                f"file descriptor {fd} is a {sock.family.name} socket, not TCP or unix"
            )
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ValueError(f"file descriptor {fd} is a socket that is not listening")
    except BaseException:
        sock.detach()  # leave the descriptor as it was given
        raise
    return sock


def socket_listeners(sockets: list[socket.socket]) -> list[trio.SocketListener]:
    """Trio listeners on listening stdlib sockets (which they now own)."""
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]


async def open_reuse_port_listeners(
    port: int, *, host: str | None = None, backlog: int | None = None
) -> list[trio.SocketListener]:
    """Like ``trio.open_tcp_listeners``, with ``SO_REUSEPORT`` set on each
    socket (see :func:`bind_reuse_port`).

    Every process that opens the same ``host``:``port`` this way gets its own
    listening socket, and the kernel spreads new connections across them.
    """
    sockets = await trio.to_thread.run_sync(bind_reuse_port, host, port)
    return socket_listeners(_listen_or_close(sockets, backlog))


DEFAULT_UNIX_MODE = 0o660  # the socket file: owner and group may connect


def bind_unix(path: str, mode: int = DEFAULT_UNIX_MODE) -> socket.socket:
    """A ``SOCK_STREAM`` unix socket bound at ``path`` with file ``mode``
    (not listening yet).

    A socket file left by a process that is gone (nobody accepts on it) is
    replaced; one a live process serves is refused (``OSError`` EADDRINUSE),
    and so is a path that is not a socket (``FileExistsError``).
    """
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise FileExistsError(errno.EEXIST, "exists and is not a socket: not replaced", path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)  # stale: its server is gone
            else:
                raise OSError(errno.EADDRINUSE, "a live server listens on it", path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_unix_listener(
    path: str, *, mode: int = DEFAULT_UNIX_MODE, backlog: int | None = None
) -> trio.SocketListener:
    """A listener on the unix socket ``path`` (see :func:`bind_unix`)."""
    sock = await trio.to_thread.run_sync(bind_unix, path, mode)
    return socket_listeners(_listen_or_close([sock], backlog))[0]


def remove_unix_socket(path: str, inode: int) -> None:
    """Remove the socket file at ``path`` if it is still the one bound
    (``inode``): a newer server's file is left alone."""
    with contextlib.suppress(FileNotFoundError):
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
