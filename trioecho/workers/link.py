"""A worker's side of ``--workers N``: its link with the supervisor (the
socket pair each worker inherits: "ready", heartbeats, and the supervisor's
end closing when it dies), and the watchdog thread that kills a worker whose
supervisor is gone while its event loop is stuck.  See
:mod:`trioecho.workers.supervisor`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import trio

__all__ = [
    "HEARTBEAT",
    "HEARTBEAT_INTERVAL",
    "KILL_MARGIN",
    "ORPHAN_CHECK",
    "READY",
    "RETIRE",
    "LinkReader",
    "Snapshot",
    "WorkerLink",
    "add_snapshots",
    "encode_snapshot",
    "receive_configuration",
    "send_configuration",
    "start_orphan_watchdog",
]

READY = b"ready\n"
RETIRE = b"R"  # supervisor to worker: stop accepting and let the connections finish
HEARTBEAT = b"."
HEARTBEAT_INTERVAL = 0.5  # seconds between a worker's heartbeats
KILL_MARGIN = 2.0  # seconds past the grace period before stopping workers are killed
ORPHAN_CHECK = 0.2  # seconds between a worker's checks that its supervisor lives


class WorkerLink:
    """The worker's end of its socket pair with the supervisor.

    ``await ready()`` tells the supervisor the worker listens;
    ``await wait_orphaned(on_retire)`` returns when the supervisor is gone.
    """

    def __init__(self, fd: int) -> None:
        self._socket = trio.socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM)
        os.close(fd)  # fromfd duplicated it

    async def ready(self) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: wait_orphaned() sees it
            await self._socket.send(READY)

    async def wait_orphaned(self, on_retire: Callable[[], None] | None = None) -> None:
        """Return when the supervisor is gone; call ``on_retire()`` each time
        it says :data:`RETIRE` (a rolling reload replaced this worker)."""
        while True:
            try:
                data = await self._socket.recv(64)
            except OSError:
                return
            if not data:
                return
            if RETIRE in data and on_retire is not None:
                on_retire()

    async def heartbeat(
        self,
        interval: float = HEARTBEAT_INTERVAL,
        snapshot: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """Tell the supervisor, every ``interval`` seconds, that this
        worker's event loop turns, with the server's figures if
        ``snapshot`` is given (run it as a task; it never returns)."""
        while True:
            await self.send_heartbeat(snapshot() if snapshot is not None else None)
            await trio.sleep(interval)

    async def send_heartbeat(self, snapshot: dict[str, Any] | None = None) -> None:
        """One heartbeat (with ``snapshot``: the figures, see :func:`encode_snapshot`)."""
        message = HEARTBEAT if snapshot is None else encode_snapshot(snapshot)
        view = memoryview(message)
        with contextlib.suppress(OSError):  # the supervisor is gone
            while view:
                view = view[await self._socket.send(view) :]


def start_orphan_watchdog(grace: float, check: float = ORPHAN_CHECK) -> threading.Thread:
    """In a worker: a thread that kills this process (SIGKILL) once its
    supervisor has been gone for ``grace`` + ``KILL_MARGIN`` seconds.

    A healthy worker has shut down by then (``wait_orphaned``); this is for
    one whose event loop is stuck and can no longer notice.  The thread
    needs no event loop: only the GIL, which a busy loop releases too.
    """
    supervisor = os.getppid()

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(check)
        time.sleep(grace + KILL_MARGIN)
        logging.getLogger("trioecho.workers").error(
            "the supervisor has been gone for %.1f s and this worker is still running: killing it",
            grace + KILL_MARGIN,
        )
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="trioecho-orphan-watchdog", daemon=True)
    thread.start()
    return thread


# The worker's configuration: sent by the supervisor on the socket pair
# before anything else, as an 8-byte big-endian length and that many bytes.
MAX_CONFIGURATION = 16 << 20
CONFIGURATION_TIMEOUT = 30.0  # seconds a new worker waits for it


async def send_configuration(sock: trio.socket.SocketType, data: bytes) -> None:
    """The supervisor's side: send a worker its configuration (opaque bytes)."""
    if len(data) > MAX_CONFIGURATION:
        raise ValueError(f"a worker configuration of {len(data)} bytes is over {MAX_CONFIGURATION}")
    view = memoryview(len(data).to_bytes(8, "big") + data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


def receive_configuration(fd: int, timeout: float = CONFIGURATION_TIMEOUT) -> bytes:
    """The worker's side, before its event loop starts: the configuration its
    supervisor sent on ``fd`` (left open for :class:`WorkerLink`).  Raises
    ``OSError`` (``TimeoutError`` included) or ``ValueError`` if none came."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        sock.settimeout(timeout)
        size = int.from_bytes(_receive_exactly(sock, 8), "big")
        if size > MAX_CONFIGURATION:
            raise ValueError(f"a worker configuration of {size} bytes is over {MAX_CONFIGURATION}")
        return _receive_exactly(sock, size)


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ValueError(f"the supervisor closed the link after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


# A heartbeat with the worker's figures: SNAPSHOT, a 4-byte big-endian
# length, and that many bytes of JSON (MessageServer.stats()).
SNAPSHOT = b"S"
MAX_SNAPSHOT = 1 << 20


def encode_snapshot(snapshot: dict[str, Any]) -> bytes:
    data = json.dumps(snapshot, separators=(",", ":")).encode()
    return SNAPSHOT + len(data).to_bytes(4, "big") + data


class LinkReader:
    """The supervisor's side: splits what a worker sent into heartbeats and
    the latest snapshot.  Raises ``ValueError`` for bytes that are neither
    (the link is then useless: the caller treats the worker as gone)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.snapshot: dict[str, Any] | None = None  # the latest one

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while buffer:
            if buffer[0:1] == HEARTBEAT:
                del buffer[0]
                continue
            if buffer[0:1] != SNAPSHOT:
                raise ValueError(f"the worker sent {bytes(buffer[:16])!r}")
            if len(buffer) < 5:
                return
            size = int.from_bytes(buffer[1:5], "big")
            if size > MAX_SNAPSHOT:
                raise ValueError(f"a snapshot of {size} bytes is over {MAX_SNAPSHOT}")
            if len(buffer) < 5 + size:
                return
            self.snapshot = json.loads(bytes(buffer[5 : 5 + size]))
            del buffer[: 5 + size]


# A worker's figures as its heartbeat carries them (MessageServer.stats()).
Snapshot = Mapping[str, Any]


def add_snapshots(total: dict[str, Any], snapshot: Snapshot) -> dict[str, Any]:
    """Add ``snapshot``'s figures into ``total`` (nested dicts key by key); returns it."""
    for key, value in snapshot.items():
        if isinstance(value, Mapping):
            add_snapshots(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total
