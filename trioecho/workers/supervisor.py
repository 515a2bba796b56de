"""``trioecho serve --workers N``: a supervisor and N worker processes on one socket.

One Trio process uses one core.  With ``--workers N`` the ``trioecho``
process becomes a supervisor that starts N copies of the server through a
Python entry point (``python -m trioecho.cli.worker FD INDEX PORT
[LISTEN_FD...]``, which receives its configuration over the socket pair
``FD``, not as command-line flags to parse again).

The supervisor:

* opens the listening sockets (or takes them from ``--fd``, systemd or
  ``--uds``) and every worker inherits them: one accept queue, so the
  connections the kernel has queued belong to no worker, and a worker that
  dies, is killed or retires resets only those it had accepted.  With
  ``--reuse-port`` each worker opens its own ``SO_REUSEPORT`` socket instead;
  the supervisor then reserves the port (binds, never listens) so that
  ``--port 0`` picks one port for all;
* waits for every worker to report that it listens (over its socket pair),
  then prints ``listening on`` and tells systemd ``READY=1``;
* restarts a worker that dies, after a back-off that grows while it keeps
  dying young (0.1 s doubling up to 5 s); a worker that fails its very
  first start is a configuration error: everything stops, exit code 1;
* refuses a port another process already serves (``Address already in
  use``, exit 1);
* checks that every worker's event loop is turning: a worker sends a
  heartbeat every ``HEARTBEAT_INTERVAL`` seconds over its socket pair, and
  one silent for ``--worker-timeout`` seconds (stopped, or stuck in a busy
  loop) is killed with SIGKILL, logged, and restarted like a worker that died;
* on SIGHUP, reloads: one slot at a time, it starts a new worker (fresh code,
  the TLS certificate read again), waits until it serves, then tells the old
  one to retire (:meth:`MessageServer.retire`: stop accepting, let its
  connections run on for ``--grace`` seconds, then drain as on SIGTERM).  A
  new worker that fails to start ends the reload and the old ones serve on;
* on SIGTTIN starts one worker more, on SIGTTOU retires the newest (never
  the last);
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
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import trio

from trioecho.logtext import format_address, format_listen_address
from trioecho.server.listeners import bind_reuse_port, open_listening_sockets
from trioecho.workers.link import (
    KILL_MARGIN,
    READY,
    RETIRE,
    LinkReader,
    add_snapshots,
    send_configuration,
)
from trioecho.workers.systemd import Notifier

__all__ = ["cpu_count", "reserve_port", "supervise"]

logger = logging.getLogger("trioecho.workers")

READY_TIMEOUT = 30.0  # seconds a worker gets to start listening
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
DIED_YOUNG = 1.0  # a worker that dies sooner than this after starting backs off more
DEFAULT_WORKER_TIMEOUT = 10.0  # seconds of silence after which a worker is killed
# Snapshot figures that are levels, not counts: a departed worker's are dropped.
GAUGES = frozenset(
    {"connections_open", "memory_budget_used", "memory_budget_limit", "accepting_paused", "serving"}
)


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


class _Worker:
    """One worker process: its slot ``index``, and what the supervisor knows of it."""

    def __init__(self, index: int, process: trio.Process, link: trio.socket.SocketType) -> None:
        self.index = index
        self.process = process
        self.link = link
        self.began = trio.current_time()
        self.ready = False
        self.retired = False  # replaced by a reload, or removed by SIGTTOU
        self.exited = trio.Event()
        self.reader = LinkReader()  # its heartbeats, and its latest figures

    @property
    def pid(self) -> int:
        return self.process.pid


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
        listen_fds: tuple[int, ...] = (),
        notifier: Notifier | None = None,
    ) -> None:
        self.configuration = configuration
        self.worker_module = worker_module
        self.workers = workers  # the number wanted (SIGTTIN and SIGTTOU change it)
        self.port = port
        self.listen_fds = listen_fds  # shared listening sockets; () for one SO_REUSEPORT each
        self.grace = grace
        self.worker_timeout = worker_timeout
        self.notifier = notifier
        self.slots: dict[int, _Worker] = {}  # index -> the worker serving in that slot
        self.live: set[_Worker] = set()  # every worker process still running
        self.slot_locks: dict[int, trio.Lock] = {}
        self.reload_lock = trio.Lock()
        self.reloads = 0
        self.restarts = 0
        self.stopping = False
        self.failed = False
        self.exit_codes: dict[int, int] = {}
        self.started = 0
        self.all_started = trio.Event()
        self.stop_requested = trio.Event()
        self.nursery: trio.Nursery | None = None  # where worker processes run
        self.departed: dict[str, Any] = {}  # the counters of workers gone

    def command(self, index: int, fd: int) -> list[str]:
        port = str(self.port if not self.listen_fds else 0)
        fds = [str(listen_fd) for listen_fd in self.listen_fds]
        return [sys.executable, "-m", self.worker_module, str(fd), str(index), port, *fds]

    def forward(self, signum: int) -> None:
        for worker in list(self.live):
            if worker.process.returncode is None:
                worker.process.send_signal(signum)

    def stop(self, *, failed: bool = False) -> None:
        self.failed = self.failed or failed
        if not self.stopping:
            self.stopping = True
            if self.notifier is not None:
                self.notifier.stopping()
            self.forward(signal.SIGTERM)
        self.stop_requested.set()

    # -- one worker process ----------------------------------------------------

    async def _start(self, index: int) -> _Worker:
        """Start a worker for slot ``index`` and wait until it serves (its
        ``ready`` is then true) or has failed (it has exited, or is about to)."""
        assert self.nursery is not None
        worker: _Worker = await self.nursery.start(self._run_process, index)
        return worker

    async def _run_process(self, index: int, *, task_status: trio.TaskStatus[_Worker]) -> None:
        ours, theirs = socket.socketpair()
        try:
            process = await trio.lowlevel.open_process(
                self.command(index, theirs.fileno()),
                pass_fds=(theirs.fileno(), *self.listen_fds),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        with ours:
            worker = _Worker(index, process, trio.socket.from_stdlib_socket(ours))
            self.live.add(worker)
            try:
                if self.stopping:
                    process.send_signal(signal.SIGTERM)
                with contextlib.suppress(OSError):  # it died already: _wait_ready sees it
                    await send_configuration(worker.link, self.configuration)
                worker.ready = await self._wait_ready(worker)
                if worker.ready:
                    logger.info("worker %d (pid %d) ready", index, process.pid)
                    task_status.started(worker)
                    async with trio.open_nursery() as watching:
                        watching.start_soon(self._watch_heartbeats, worker)
                        await process.wait()
                        watching.cancel_scope.cancel()
                else:
                    await process.wait()
                    task_status.started(worker)
            finally:
                self.live.discard(worker)
                self._keep_counters_of(worker)
                worker.exited.set()
        if worker.retired:
            logger.info(
                "worker %d (pid %d), retired, %s",
                index,
                process.pid,
                _describe_exit(process.returncode),
            )

    async def _watch_heartbeats(self, worker: _Worker) -> None:
        """Kill the worker if its heartbeats stop for ``worker_timeout`` seconds."""
        while True:
            with trio.move_on_after(self.worker_timeout):
                try:
                    data = await worker.link.recv(65536)
                    if not data:
                        return  # the worker closed its end: it is exiting
                    worker.reader.feed(data)
                except OSError:
                    return
                except ValueError as exc:  # not our worker's bytes: a bug
                    logger.error("worker %d (pid %d): %s", worker.index, worker.pid, exc)
                    return
                continue
            if worker.process.returncode is not None:
                return
            logger.error(
                "worker %d (pid %d) silent for %.1f s (its event loop is stuck or stopped): "
                "killing it",
                worker.index,
                worker.pid,
                self.worker_timeout,
            )
            worker.process.kill()
            return

    async def _wait_ready(self, worker: _Worker) -> bool:
        with trio.move_on_after(READY_TIMEOUT):
            try:
                return await worker.link.recv(len(READY)) == READY
            except OSError:
                return False
        logger.error(
            "worker %d (pid %d) not listening after %.0f s: killing it",
            worker.index,
            worker.pid,
            READY_TIMEOUT,
        )
        worker.process.kill()
        return False

    async def _retire(self, worker: _Worker) -> None:
        """Tell ``worker`` to stop accepting and finish its connections
        (:meth:`MessageServer.retire`); kill it if it is still running when
        its grace and its drain's are over."""
        worker.retired = True
        try:
            await worker.link.send(RETIRE)
        except OSError:  # it is exiting anyway
            return
        assert self.nursery is not None
        self.nursery.start_soon(self._kill_if_still_running, worker, 2 * self.grace + KILL_MARGIN)

    async def _kill_if_still_running(self, worker: _Worker, after: float) -> None:
        with trio.move_on_after(after):
            await worker.exited.wait()
            return
        logger.error(
            "worker %d (pid %d), retired, still running after %.1f s: killing it",
            worker.index,
            worker.pid,
            after,
        )
        worker.process.kill()

    # -- figures ---------------------------------------------------------------

    def _keep_counters_of(self, worker: _Worker) -> None:
        """A worker is gone: its counters stay in the service's totals."""
        last = worker.reader.snapshot
        if last is not None:
            counters = {key: value for key, value in last.items() if key not in GAUGES}
            add_snapshots(self.departed, counters)

    def snapshot(self) -> dict[str, Any]:
        """The whole service's figures: every live worker's latest, the
        counters of those gone, and the supervisor's own."""
        total = add_snapshots({}, self.departed)
        for worker in list(self.live):
            if worker.reader.snapshot is not None:
                add_snapshots(total, worker.reader.snapshot)
        total.pop("serving", None)
        total.update(restarts=self.restarts, reloads=self.reloads, workers=len(self.slots))
        return total

    def ready(self) -> bool:
        return self.all_started.is_set() and not self.stopping

    # -- slots -----------------------------------------------------------------

    def _lock(self, index: int) -> trio.Lock:
        return self.slot_locks.setdefault(index, trio.Lock())

    async def keep_slot(self, index: int, *, initial: bool = True) -> None:
        """Run a worker in slot ``index`` and restart it whenever it dies,
        until the supervisor stops or the slot is removed (SIGTTOU).  A
        reload replaces the slot's worker under the slot's lock."""
        async with self._lock(index):
            worker = await self._start(index)
            if worker.ready:
                self.slots[index] = worker
        if not worker.ready:
            if not self.stopping:
                logger.error(
                    "worker %d (pid %d) failed to start (%s); %s",
                    index,
                    worker.pid,
                    _describe_exit(worker.process.returncode),
                    "stopping" if initial else "not added",
                )
                if initial:
                    self.exit_codes[index] = worker.process.returncode or 1
                    self.stop(failed=True)
                else:
                    self.workers -= 1
            return
        if initial:
            self.started += 1
            if self.started == self.workers:
                self.all_started.set()
        backoff = BACKOFF_FIRST
        while True:
            await worker.exited.wait()
            current = self.slots.get(index)
            if current is not worker:  # replaced by a reload, or the slot removed
                if current is None:
                    return
                worker = current
                continue
            code = worker.process.returncode
            if self.stopping:
                logger.info("worker %d (pid %d) %s", index, worker.pid, _describe_exit(code))
                self.exit_codes[index] = code if code is not None else 1
                del self.slots[index]
                return
            lived = trio.current_time() - worker.began
            backoff = backoff * 2 if lived < DIED_YOUNG else BACKOFF_FIRST
            backoff = min(backoff, BACKOFF_MAX)
            logger.warning(
                "worker %d (pid %d) %s after %.1f s; restarting in %.1f s",
                index,
                worker.pid,
                _describe_exit(code),
                lived,
                backoff,
            )
            with trio.move_on_after(backoff):
                await self.stop_requested.wait()
            async with self._lock(index):
                if self.slots.get(index) is not worker:
                    continue  # a reload or SIGTTOU dealt with the slot meanwhile
                if self.stopping:
                    self.exit_codes[index] = code if code is not None else 1
                    del self.slots[index]
                    return
                worker = self.slots[index] = await self._start(index)
                self.restarts += 1

    async def reload(self) -> None:
        """SIGHUP: replace the workers one at a time.  Each new worker starts
        on fresh code and re-reads its TLS certificate; once it serves, the
        old one retires.  A new worker that fails to start ends the reload:
        the old workers go on serving."""
        async with self.reload_lock:
            if self.stopping:
                return
            logger.info("SIGHUP: reloading %d workers, one at a time", len(self.slots))
            if self.notifier is not None:
                self.notifier.reloading()
            for index in sorted(self.slots):
                async with self._lock(index):
                    old = self.slots.get(index)
                    if old is None or self.stopping:
                        continue
                    new = await self._start(index)
                    if not new.ready:
                        if not self.stopping:
                            logger.error(
                                "reload stopped: the new worker %d (pid %d) failed to start "
                                "(%s); the old workers go on serving",
                                index,
                                new.pid,
                                _describe_exit(new.process.returncode),
                            )
                        break
                    self.slots[index] = new
                    await self._retire(old)
            else:
                self.reloads += 1
                logger.info("reload %d done: %d workers serving", self.reloads, len(self.slots))
            if self.notifier is not None and not self.stopping:
                self.notifier.ready(f"serving with {len(self.slots)} workers")

    def add_worker(self) -> None:
        """SIGTTIN: one worker more, in a new slot."""
        assert self.nursery is not None
        if self.stopping:
            return
        index = max([*self.slots, *self.slot_locks, -1]) + 1
        self.workers += 1
        logger.info("SIGTTIN: adding worker %d (%d workers)", index, self.workers)
        self.nursery.start_soon(functools.partial(self.keep_slot, index, initial=False))

    async def remove_worker(self) -> None:
        """SIGTTOU: one worker less (never the last): the newest slot's
        worker retires."""
        if self.stopping:
            return
        if self.workers <= 1:
            logger.warning("SIGTTOU: only one worker left: not removed")
            return
        self.workers -= 1
        index = max(self.slots)
        async with self._lock(index):
            worker = self.slots.pop(index, None)
        if worker is not None:
            logger.info("SIGTTOU: retiring worker %d (%d workers)", index, self.workers)
            await self._retire(worker)

    async def kill_stragglers(self) -> None:
        """Once stopping: kill the workers still running after the grace period."""
        await trio.sleep(self.grace + KILL_MARGIN)
        for worker in list(self.live):
            if worker.process.returncode is None:
                logger.error(
                    "worker %d (pid %d) still running %.1f s after SIGTERM: killing it",
                    worker.index,
                    worker.pid,
                    self.grace + KILL_MARGIN,
                )
                worker.process.kill()


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
    sockets: list[socket.socket] | None = None,
    reuse_port: bool = False,
    backlog: int | None = None,
    notifier: Notifier | None = None,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Run ``workers`` worker processes; return the exit code.

    They share the listening ``sockets`` (inherited: ``--fd``, systemd,
    ``--uds``), or, without them, listening sockets this function opens on
    ``host``:``port`` (with ``backlog``); with ``reuse_port`` each worker
    opens its own ``SO_REUSEPORT`` socket on the port instead.  The sockets
    given stay open (the caller closes them).

    Each worker is ``python -m worker_module FD INDEX PORT [LISTEN_FD...]``:
    ``FD`` its end of the socket pair, on which it first receives
    ``configuration`` (bytes the supervisor does not read; see
    :func:`~trioecho.workers.link.receive_configuration`), ``PORT`` the port
    for ``SO_REUSEPORT`` (0 when it inherits listening sockets).  ``grace``
    is the workers' (``--grace``), ``worker_timeout`` how long a worker may
    stay silent.  ``notifier`` gets READY, RELOADING and STOPPING.
    ``metrics`` is the (host, port) of the whole service's ``/metrics``.
    """
    owned: list[socket.socket] = []
    try:
        if sockets is None and reuse_port:
            owned, port = reserve_port(host, port)
        elif sockets is None:
            owned = open_listening_sockets(host, port, backlog=backlog)
    except OSError as exc:
        where = format_address((host, port))
        reason = exc.strerror or os.strerror(exc.errno or errno.EADDRINUSE)
        print(f"trioecho: cannot listen on {where}: {reason}", file=sys.stderr)
        return 1
    shared = owned if sockets is None and not reuse_port else (sockets or [])
    for sock in shared:
        sock.set_inheritable(False)  # passed to each worker explicitly (pass_fds)
    supervisor = _Supervisor(
        configuration,
        workers,
        port,
        worker_module=worker_module,
        grace=grace,
        worker_timeout=worker_timeout,
        listen_fds=tuple(sock.fileno() for sock in shared),
        notifier=notifier,
    )
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
    try:
        with trio.open_signal_receiver(*handled) as signals:
            async with trio.open_nursery() as nursery:

                async def relay_signals() -> None:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if signum == signal.SIGHUP:
                            nursery.start_soon(supervisor.reload)
                        elif signum == signal.SIGTTIN:
                            supervisor.add_worker()
                        elif signum == signal.SIGTTOU:
                            nursery.start_soon(supervisor.remove_worker)
                        elif not supervisor.stopping:
                            logger.info("%s: stopping all %d workers", name, supervisor.workers)
                            supervisor.stop()
                            nursery.start_soon(supervisor.kill_stragglers)
                        else:
                            logger.warning("%s again: workers close every connection now", name)
                            supervisor.forward(signal.SIGTERM)

                async def announce() -> None:
                    await supervisor.all_started.wait()
                    for sock in shared or owned:
                        print(
                            f"listening on {format_listen_address(sock.getsockname())}", flush=True
                        )
                    if shared:
                        where = format_listen_address(shared[0].getsockname())
                        logger.info(
                            "%d workers listening on %s (one shared socket)", workers, where
                        )
                    else:
                        logger.info("%d workers listening on port %d (SO_REUSEPORT)", workers, port)
                    if notifier is not None:
                        notifier.ready(f"serving with {workers} workers")

                nursery.start_soon(relay_signals)
                nursery.start_soon(announce)
                if notifier is not None:
                    nursery.start_soon(notifier.keep_watchdog_fed)
                if metrics is not None:
                    # prometheus_client and h11 are loaded only for --metrics.
                    from trioecho.workers.metrics import metrics_registry, open_metrics

                    registry = metrics_registry(supervisor.snapshot)
                    await open_metrics(nursery, metrics, registry, supervisor.ready)
                async with trio.open_nursery() as worker_tasks:
                    supervisor.nursery = worker_tasks
                    for index in range(workers):
                        worker_tasks.start_soon(supervisor.keep_slot, index)
                nursery.cancel_scope.cancel()
    finally:
        supervisor.forward(signal.SIGKILL)  # only if we are being torn down abnormally
        for sock in owned:
            sock.close()
    if supervisor.failed:
        return 1
    bad = {index: code for index, code in supervisor.exit_codes.items() if code != 0}
    if bad:
        logger.warning("workers exited with errors: %s", bad)
        return 1
    logger.info("all %d workers stopped", supervisor.workers)
    return 0
