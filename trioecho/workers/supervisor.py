"""``trioecho serve --workers N``: a supervisor and N worker processes on one port.

One Trio process uses one core.  With ``--workers N`` the ``trioecho``
process becomes a supervisor that starts N copies of the server through a
Python entry point (``python -m trioecho.cli.worker FD INDEX PORT``, which
receives its configuration over the socket pair ``FD``, not as command-line
flags to parse again); each opens its own
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
* refuses a port another process already serves (``Address already in
  use``, exit 1), even another trioecho supervisor whose sockets allow
  ``SO_REUSEPORT``: it first binds the port without that option;
* checks that every worker's event loop is turning: a worker sends a
  heartbeat every ``HEARTBEAT_INTERVAL`` seconds over its socket pair, and
  one silent for ``--worker-timeout`` seconds (stopped, or stuck in a busy
  loop) is killed with SIGKILL, logged, and restarted like a worker that died;
* ignores SIGHUP, with a warning: it never stops the service (a rolling
  reload is still to be built);
* forwards SIGINT/SIGTERM to the workers as SIGTERM (a second signal is
  forwarded again: the workers then close at once), waits for them to
  drain, and exits 0 if all of them exited 0.  A worker still running
  ``KILL_MARGIN`` seconds after the grace period is killed: shutdown always
  completes.

Workers run in their own session, so a terminal's Ctrl-C reaches the
supervisor only.  No worker outlives its supervisor: if the supervisor dies,
its end of each socket pair closes and the workers shut down gracefully on
their own; a worker whose event loop is stuck cannot, so a watchdog thread
in each worker (which needs no event loop) kills its process once the grace
period after the supervisor's death is over.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys

import trio

from trioecho.logtext import format_address
from trioecho.server.listeners import bind_reuse_port
from trioecho.workers.link import KILL_MARGIN, READY, send_configuration

__all__ = ["cpu_count", "reserve_port", "supervise"]

logger = logging.getLogger("trioecho.workers")

READY_TIMEOUT = 30.0  # seconds a worker gets to start listening
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
DIED_YOUNG = 1.0  # a worker that dies sooner than this after starting backs off more
DEFAULT_WORKER_TIMEOUT = 10.0  # seconds of silence after which a worker is killed


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


class _Supervisor:
    def __init__(
        self,
        configuration: bytes,
        workers: int,
        port: int,
        *,
        worker_module: str,
        grace: float,
        worker_timeout: float,
    ) -> None:
        self.configuration = configuration
        self.worker_module = worker_module
        self.workers = workers
        self.port = port
        self.grace = grace
        self.worker_timeout = worker_timeout
        self.processes: dict[int, trio.Process] = {}
        self.stopping = False
        self.failed = False
        self.exit_codes: dict[int, int] = {}
        self.started = 0
        self.all_started = trio.Event()
        self.stop_requested = trio.Event()

    def command(self, index: int, fd: int) -> list[str]:
        return [sys.executable, "-m", self.worker_module, str(fd), str(index), str(self.port)]

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
                with contextlib.suppress(OSError):  # it died already: _wait_ready sees it
                    await send_configuration(link, self.configuration)
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
                async with trio.open_nursery() as watching:
                    if became_ready:
                        watching.start_soon(self._watch_heartbeats, link, index, process)
                    code = await process.wait()
                    watching.cancel_scope.cancel()
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

    async def _watch_heartbeats(
        self, link: trio.socket.SocketType, index: int, process: trio.Process
    ) -> None:
        """Kill the worker if its heartbeats stop for ``worker_timeout`` seconds."""
        while True:
            with trio.move_on_after(self.worker_timeout):
                try:
                    if not await link.recv(4096):
                        return  # the worker closed its end: it is exiting
                except OSError:
                    return
                continue
            if process.returncode is not None:
                return
            logger.error(
                "worker %d (pid %d) silent for %.1f s (its event loop is stuck or stopped): "
                "killing it",
                index,
                process.pid,
                self.worker_timeout,
            )
            process.kill()
            return

    async def kill_stragglers(self) -> None:
        """Once stopping: kill the workers still running after the grace period."""
        await trio.sleep(self.grace + KILL_MARGIN)
        for index, process in list(self.processes.items()):
            if process.returncode is None:
                logger.error(
                    "worker %d (pid %d) still running %.1f s after SIGTERM: killing it",
                    index,
                    process.pid,
                    self.grace + KILL_MARGIN,
                )
                process.kill()

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
    configuration: bytes,
    workers: int,
    host: str | None,
    port: int,
    *,
    worker_module: str,
    grace: float = 5.0,
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
) -> int:
    """Run ``workers`` worker processes on ``host``:``port``; return the exit code.

    Each worker is ``python -m worker_module FD INDEX PORT``: ``FD`` its end
    of the socket pair, on which it first receives ``configuration`` (bytes
    the supervisor does not read; see :func:`~trioecho.workers.link.receive_configuration`).
    ``grace`` is the workers' (``--grace``), ``worker_timeout`` how long a
    worker may stay silent.
    """
    try:
        reserved, port = reserve_port(host, port)
    except OSError as exc:
        where = format_address((host, port))
        reason = exc.strerror or os.strerror(exc.errno or errno.EADDRINUSE)
        print(f"trioecho: cannot listen on {where}: {reason}", file=sys.stderr)
        return 1
    supervisor = _Supervisor(
        configuration,
        workers,
        port,
        worker_module=worker_module,
        grace=grace,
        worker_timeout=worker_timeout,
    )
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:

                async def relay_signals() -> None:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if signum == signal.SIGHUP:
                            logger.warning(
                                "SIGHUP: a rolling reload of the workers is not built yet; "
                                "still serving (restart the service to load new code or "
                                "certificates)"
                            )
                        elif not supervisor.stopping:
                            logger.info("%s: stopping all %d workers", name, workers)
                            supervisor.stop()
                            nursery.start_soon(supervisor.kill_stragglers)
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
