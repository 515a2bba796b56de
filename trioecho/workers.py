"""``trioecho serve --workers N``: a supervisor and N worker processes on one port.

One Trio process uses one core.  With ``--workers N`` the ``trioecho``
process becomes a supervisor that starts N copies of the server
(``python -m trioecho serve ... --worker-index I``); each opens its own
``SO_REUSEPORT`` listening socket on the same port and the kernel spreads new
connections over them.

The supervisor:

* reserves the port first: it binds (but never listens on) an
  ``SO_REUSEPORT`` socket, so ``--port 0`` picks one port for every worker
  and the port stays reserved while a worker restarts;
* waits for every worker to report that it listens (over a socket pair
  whose other end each worker inherits), then prints ``listening on``;
* restarts a worker that dies, after a back-off that grows while it keeps
  dying young (0.1 s doubling up to 5 s); a worker that fails its very
  first start is a configuration error: everything stops, exit code 1;
* forwards SIGINT/SIGTERM to the workers as SIGTERM (a second signal is
  forwarded again: the workers then close at once), waits for them to
  drain, and exits 0 if all of them exited 0.

Workers run in their own session, so a terminal's Ctrl-C reaches the
supervisor only; if the supervisor itself dies, its end of each socket pair
closes and the workers shut down gracefully on their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

import trio

from .server import bind_reuse_port, format_address

__all__ = ["WorkerLink", "cpu_count", "reserve_port", "supervise"]

logger = logging.getLogger("trioecho.workers")

READY_TIMEOUT = 30.0  # seconds a worker gets to start listening
READY = b"ready\n"
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
DIED_YOUNG = 1.0  # a worker that dies sooner than this after starting backs off more


def cpu_count() -> int:
    """The CPUs this process may run on (``--workers auto``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def reserve_port(host: str | None, port: int) -> tuple[list[socket.socket], int]:
    """Bind (without listening) an ``SO_REUSEPORT`` socket per address of
    ``host``, all on one port (``port`` or, for 0, the one the kernel picks).
    Returns the sockets, which hold the port while they are open, and the
    port.  Raises ``OSError`` if the port is taken without ``SO_REUSEPORT``.
    """
    reserved = bind_reuse_port(host, port)
    return reserved, reserved[0].getsockname()[1]


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


class _Supervisor:
    def __init__(self, worker_argv: Sequence[str], workers: int, port: int) -> None:
        self.worker_argv = list(worker_argv)
        self.workers = workers
        self.port = port
        self.processes: dict[int, trio.Process] = {}
        self.stopping = False
        self.failed = False
        self.exit_codes: dict[int, int] = {}
        self.started = 0
        self.all_started = trio.Event()
        self.stop_requested = trio.Event()

    def command(self, index: int, fd: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "trioecho",
            "serve",
            *self.worker_argv,
            "--workers",
            "1",
            "--port",
            str(self.port),
            "--worker-index",
            str(index),
            "--supervisor-fd",
            str(fd),
        ]

    def forward(self, signum: int) -> None:
        for process in list(self.processes.values()):
            if process.returncode is None:
                process.send_signal(signum)

    def stop(self, *, failed: bool = False) -> None:
        self.failed = self.failed or failed
        if not self.stopping:
            self.stopping = True
            self.forward(signal.SIGTERM)
        self.stop_requested.set()

    async def run_worker(self, index: int) -> None:
        """Run worker ``index``, restarting it until the supervisor stops."""
        backoff = BACKOFF_FIRST
        first = True
        while not self.stopping:
            ours, theirs = socket.socketpair()
            try:
                process = await trio.lowlevel.open_process(
                    self.command(index, theirs.fileno()),
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                )
            finally:
                theirs.close()
            self.processes[index] = process
            began = trio.current_time()
            with ours:
                link = trio.socket.from_stdlib_socket(ours)
                became_ready = await self._wait_ready(link, index, process)
                if became_ready:
                    logger.info("worker %d (pid %d) ready", index, process.pid)
                    if first:
                        self.started += 1
                        if self.started == self.workers:
                            self.all_started.set()
                elif first and not self.stopping:
                    await process.wait()
                    logger.error(
                        "worker %d (pid %d) failed to start (%s); stopping",
                        index,
                        process.pid,
                        _describe_exit(process.returncode),
                    )
                    self.exit_codes[index] = process.returncode or 1
                    self.stop(failed=True)
                    return
                first = False
                code = await process.wait()
            del self.processes[index]
            self.exit_codes[index] = code
            if self.stopping:
                logger.info("worker %d (pid %d) %s", index, process.pid, _describe_exit(code))
                return
            lived = trio.current_time() - began
            backoff = backoff * 2 if lived < DIED_YOUNG else BACKOFF_FIRST
            backoff = min(backoff, BACKOFF_MAX)
            logger.warning(
                "worker %d (pid %d) %s after %.1f s; restarting in %.1f s",
                index,
                process.pid,
                _describe_exit(code),
                lived,
                backoff,
            )
            with trio.move_on_after(backoff):
                await self.stop_requested.wait()

    async def _wait_ready(
        self, link: trio.socket.SocketType, index: int, process: trio.Process
    ) -> bool:
        with trio.move_on_after(READY_TIMEOUT):
            try:
                return await link.recv(len(READY)) == READY
            except OSError:
                return False
        logger.error(
            "worker %d (pid %d) not listening after %.0f s: killing it",
            index,
            process.pid,
            READY_TIMEOUT,
        )
        process.kill()
        return False


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


async def supervise(
    worker_argv: Sequence[str],
    workers: int,
    host: str | None,
    port: int,
) -> int:
    """Run ``workers`` worker processes on ``host``:``port``; return the exit code.

    ``worker_argv`` are the ``serve`` options every worker gets (``--port``,
    ``--workers`` and the worker's own options are appended).
    """
    try:
        reserved, port = reserve_port(host, port)
    except OSError as exc:
        where = format_address((host, port))
        print(f"trioecho: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    supervisor = _Supervisor(worker_argv, workers, port)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def relay_signals() -> None:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if not supervisor.stopping:
                            logger.info("%s: stopping all %d workers", name, workers)
                            supervisor.stop()
                        else:
                            logger.warning("%s again: workers close every connection now", name)
                            supervisor.forward(signal.SIGTERM)

                async def announce() -> None:
                    await supervisor.all_started.wait()
                    for sock in reserved:
                        where = format_address(sock.getsockname())
                        print(f"listening on {where}", flush=True)
                    logger.info("%d workers listening on port %d", workers, port)

                nursery.start_soon(relay_signals)
                nursery.start_soon(announce)
                async with trio.open_nursery() as worker_tasks:
                    for index in range(workers):
                        worker_tasks.start_soon(supervisor.run_worker, index)
                nursery.cancel_scope.cancel()
    finally:
        supervisor.forward(signal.SIGKILL)  # only if we are being torn down abnormally
        for sock in reserved:
            sock.close()
    if supervisor.failed:
        return 1
    bad = {index: code for index, code in supervisor.exit_codes.items() if code != 0}
    if bad:
        logger.warning("workers exited with errors: %s", bad)
        return 1
    logger.info("all %d workers stopped", workers)
    return 0
