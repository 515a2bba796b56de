"""A worker's side of ``--workers N``: its link with the supervisor (the
socket pair each worker inherits: "ready", heartbeats, and the supervisor's
end closing when it dies), and the watchdog thread that kills a worker whose
supervisor is gone while its event loop is stuck.  See
:mod:`trioecho.workers.supervisor`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time

import trio

__all__ = [
    "HEARTBEAT",
    "HEARTBEAT_INTERVAL",
    "KILL_MARGIN",
    "ORPHAN_CHECK",
    "READY",
    "WorkerLink",
    "start_orphan_watchdog",
]

READY = b"ready\n"
HEARTBEAT = b"."
HEARTBEAT_INTERVAL = 0.5  # seconds between a worker's heartbeats
KILL_MARGIN = 2.0  # seconds past the grace period before stopping workers are killed
ORPHAN_CHECK = 0.2  # seconds between a worker's checks that its supervisor lives


class WorkerLink:
    """The worker's end of its socket pair with the supervisor.

    ``await ready()`` tells the supervisor the worker listens;
    ``await wait_orphaned()`` returns when the supervisor is gone.
    """

    def __init__(self, fd: int) -> None:
        self._socket = trio.socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM)
        os.close(fd)  # fromfd duplicated it

    async def ready(self) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: wait_orphaned() sees it
            await self._socket.send(READY)

    async def wait_orphaned(self) -> None:
        while True:
            try:
                if not await self._socket.recv(64):
                    return
            except OSError:
                return

    async def heartbeat(self, interval: float = HEARTBEAT_INTERVAL) -> None:
        """Tell the supervisor, every ``interval`` seconds, that this
        worker's event loop turns (run it as a task; it never returns)."""
        while True:
            with contextlib.suppress(OSError):  # the supervisor is gone
                await self._socket.send(HEARTBEAT)
            await trio.sleep(interval)


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
