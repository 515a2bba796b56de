"""Worker processes and their socket pairs: the supervisor's hands, which
decide nothing (:mod:`trioecho.workers.decisions` does).

:class:`ProcessSpawner` starts ``python -m WORKER_MODULE FD INDEX PORT
[LISTEN_FD...]`` in its own session, with ``FD`` its end of a new socket
pair and the shared listening sockets inherited; :class:`SpawnedWorker` is
one such process with the supervisor's end of its pair: the configuration it
is sent, "ready", heartbeats and figures read, "retire" sent, signals.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys

import trio

from trioecho.workers.link import READY, RETIRE, LinkReader, Snapshot, send_configuration

__all__ = ["ProcessSpawner", "SpawnedWorker"]

logger = logging.getLogger("trioecho.workers")

LINK_READ_SIZE = 65536


class SpawnedWorker:
    """A worker process for slot ``index`` and the supervisor's end of its
    socket pair (closed by :meth:`close`)."""

    def __init__(
        self,
        index: int,
        process: trio.Process,
        link: trio.socket.SocketType,
        configuration: bytes,
    ) -> None:
        self.index = index
        self._process = process
        self._link = link
        self._configuration = configuration
        self._reader = LinkReader()  # its heartbeats, and its latest figures

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    @property
    def figures(self) -> Snapshot | None:
        """The latest figures its heartbeats carried (``--metrics``), if any."""
        return self._reader.snapshot

    async def send_configuration(self) -> None:
        """Send the worker its configuration; if it died already, nothing
        (:meth:`wait_ready` sees it)."""
        with contextlib.suppress(OSError):
            await send_configuration(self._link, self._configuration)

    async def wait_ready(self) -> bool:
        """True once it says it listens; false if its link closes first."""
        try:
            return await self._link.recv(len(READY)) == READY
        except OSError:
            return False

    async def next_heartbeat(self) -> bool:
        """Wait for its next heartbeat (with or without figures): true when
        one came, false when its link closed or broke (it is exiting) or
        carried bytes that are not a worker's (logged: a bug)."""
        try:
            data = await self._link.recv(LINK_READ_SIZE)
        except OSError:
            return False
        if not data:
            return False
        try:
            self._reader.feed(data)
        except ValueError as exc:
            logger.error("worker %d (pid %d): %s", self.index, self.pid, exc)
            return False
        return True

    async def retire(self) -> bool:
        """Tell it to stop accepting and finish its connections; false if
        its link is closed (it is exiting anyway)."""
        try:
            await self._link.send(RETIRE)
        except OSError:
            return False
        return True

    def send_signal(self, signum: int) -> None:
        self._process.send_signal(signum)

    def kill(self) -> None:
        self._process.kill()

    async def wait(self) -> int:
        """Wait until it has exited; its exit code (negative: killed by that signal)."""
        return await self._process.wait()

    def close(self) -> None:
        """Close the supervisor's end of the socket pair."""
        self._link.close()


class ProcessSpawner:
    """Starts worker processes: each gets its slot's index, the port (for
    ``SO_REUSEPORT``; 0 when ``listen_fds`` are shared) and the listening
    descriptors, and is sent ``configuration`` (bytes not read here)."""

    def __init__(
        self,
        configuration: bytes,
        *,
        worker_module: str,
        port: int,
        listen_fds: tuple[int, ...] = (),
    ) -> None:
        self.configuration = configuration
        self.worker_module = worker_module
        self.port = port
        self.listen_fds = listen_fds  # shared listening sockets; () for one SO_REUSEPORT each

    def command(self, index: int, fd: int) -> list[str]:
        port = str(self.port if not self.listen_fds else 0)
        fds = [str(listen_fd) for listen_fd in self.listen_fds]
        return [sys.executable, "-m", self.worker_module, str(fd), str(index), port, *fds]

    async def spawn(self, index: int) -> SpawnedWorker:
        """Start a worker for slot ``index`` (not yet sent its configuration)."""
        ours, theirs = socket.socketpair()
        try:
            process = await trio.lowlevel.open_process(
                self.command(index, theirs.fileno()),
                pass_fds=(theirs.fileno(), *self.listen_fds),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        link = trio.socket.from_stdlib_socket(ours)
        return SpawnedWorker(index, process, link, self.configuration)
