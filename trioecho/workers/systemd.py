"""Started by systemd: socket activation (``LISTEN_FDS``) and service
notifications (``sd_notify``), as ``sd_listen_fds_with_names(3)`` and
``sd_notify(3)`` define them, with no library.

* :func:`inherited_sockets` adopts the listening sockets systemd (or
  ``systemd-socket-activate``) passed: ``LISTEN_FDS`` descriptors from 3 on,
  when ``LISTEN_PID`` is this process, named by ``LISTEN_FDNAMES``.
* :class:`Notifier` sends ``READY=1``, ``RELOADING=1``, ``STOPPING=1``,
  ``STATUS=`` and ``WATCHDOG=1`` to ``$NOTIFY_SOCKET`` (``Type=notify``,
  ``WatchdogSec=``).  Without ``NOTIFY_SOCKET`` it does nothing.

Both remove the variables they read from ``os.environ``, as the C functions
do when asked, so that the service's own child processes (its workers) do not
take them for theirs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

import trio

from trioecho.server.listeners import adopt_listening_socket

__all__ = ["LISTEN_FDS_START", "InheritedSocket", "Notifier", "inherited_sockets"]

logger = logging.getLogger("trioecho.systemd")

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START
MAX_LISTEN_FDS = 1024  # more than any unit passes; a bigger LISTEN_FDS is a mistake


class InheritedSocket:
    """A listening socket passed by systemd: its descriptor, its name (from
    ``LISTEN_FDNAMES``; ``"unknown"`` if unnamed, as systemd says) and the
    socket."""

    def __init__(self, fd: int, name: str, sock: socket.socket) -> None:
        self.fd = fd
        self.name = name
        self.socket = sock

    def __repr__(self) -> str:
        return f"<InheritedSocket fd {self.fd} {self.name!r}>"


def inherited_sockets(environ: dict[str, str] | None = None) -> list[InheritedSocket]:
    """The sockets systemd passed to this process (empty if none, or if they
    were meant for another process: ``LISTEN_PID`` is not ours).  Raises
    ``ValueError`` for variables that make no sense, or a descriptor that is
    not a listening stream socket.  The variables are removed from
    ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    pid, count, names = env.get("LISTEN_PID"), env.get("LISTEN_FDS"), env.get("LISTEN_FDNAMES")
    for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(variable, None)
    if count is None:
        return []
    if pid is None or not pid.isdigit() or not count.isdigit():
        raise ValueError(f"LISTEN_PID={pid!r} and LISTEN_FDS={count!r} must be numbers")
    if int(pid) != os.getpid():
        logger.debug("LISTEN_FDS is for process %s, not this one: ignored", pid)
        return []
    number = int(count)
    if number > MAX_LISTEN_FDS:
        raise ValueError(f"LISTEN_FDS={number} is over {MAX_LISTEN_FDS}")
    labels = names.split(":") if names else []
    if labels and len(labels) != number:
        raise ValueError(f"LISTEN_FDNAMES names {len(labels)} sockets, LISTEN_FDS={number}")
    adopted: list[InheritedSocket] = []
    try:
        for offset in range(number):
            fd = LISTEN_FDS_START + offset
            name = labels[offset] if labels else "unknown"
            try:
                sock = adopt_listening_socket(fd)
            except ValueError as exc:
                raise ValueError(f"LISTEN_FDS: {exc}") from None
            os.set_inheritable(fd, False)  # ours, not our children's (workers get them explicitly)
            adopted.append(InheritedSocket(fd, name, sock))
    except BaseException:
        for inherited in adopted:
            inherited.socket.detach()
        raise
    return adopted


class Notifier:
    """Service notifications to ``$NOTIFY_SOCKET`` (read and removed from
    ``environ`` at construction).  Each method sends one datagram and never
    raises: a manager that went away is logged once at DEBUG."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None) or None
        usec, watchdog_pid = env.pop("WATCHDOG_USEC", None), env.pop("WATCHDOG_PID", None)
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        self.address = address
        self.watchdog_interval: float | None = None
        if (
            address is not None
            and usec is not None
            and usec.isdigit()
            and int(usec) > 0
            and (watchdog_pid is None or watchdog_pid == str(os.getpid()))
        ):
            self.watchdog_interval = int(usec) / 1e6
        self._socket: socket.socket | None = None
        if address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, *states: str) -> None:
        """Send ``states`` (``"READY=1"``, ``"STATUS=..."``), one per line."""
        if self._socket is None or self.address is None:
            return
        try:
            self._socket.sendto("\n".join(states).encode(), self.address)
        except OSError as exc:
            logger.debug("cannot notify %r: %s", self.address, exc)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=draining connections")

    async def keep_watchdog_fed(self) -> None:
        """Send ``WATCHDOG=1`` from the event loop at half ``WATCHDOG_USEC``
        (a task; returns at once without a watchdog): if the loop stops
        turning, systemd notices."""
        if self.watchdog_interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval / 2)

    def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None
