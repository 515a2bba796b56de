"""The supervisor's decisions for ``--workers N``, apart from processes and
pipes: when a worker counts as started, failed or hung; when and after
what back-off it is restarted; the rolling reload's order and when it stops;
SIGTTIN/SIGTTOU; draining, and killing what outlives the grace period.

:class:`Supervisor` acts on workers only through a
:class:`~trioecho.workers.worker_process.Spawner` and the
:class:`~trioecho.workers.worker_process.WorkerProcess` it starts (real
ones: :mod:`trioecho.workers.processes`), so
that the decisions run in-process against stand-ins, on a fake clock.  Every
delay is Trio's clock: ``trio.current_time()``, ``move_on_after``.

The rules (see :mod:`trioecho.workers.supervisor` for the whole picture):

* a worker is started when it says "ready" within ``READY_TIMEOUT`` (else
  it is killed); one that fails its very first start stops everything
  (exit code 1), one added by SIGTTIN is just not added;
* a worker that dies is restarted after a back-off (:func:`next_backoff`);
* a worker silent for ``worker_timeout`` seconds is killed (then restarted);
* a reload replaces the slots in index order, one at a time, each new
  worker serving before the old one retires; a new worker that fails to
  start ends the reload (the slots not yet replaced keep their workers);
* a retired worker still running ``2 * grace + KILL_MARGIN`` seconds later
  is killed, and so is one still running ``drain_delay + 2 * grace +
  KILL_MARGIN`` seconds after the stop (:attr:`Supervisor.stop_limit`).
"""

from __future__ import annotations

import functools
import logging
import signal
from typing import Any

import trio

from trioecho.workers.link import KILL_MARGIN
from trioecho.workers.signals import SignalActions
from trioecho.workers.systemd import Notifier
from trioecho.workers.totals import ServiceTotals
from trioecho.workers.worker_process import Spawner, WorkerProcess, describe_exit

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "DEFAULT_WORKER_TIMEOUT",
    "DIED_YOUNG",
    "READY_TIMEOUT",
    "Supervisor",
    "next_backoff",
]

logger = logging.getLogger("trioecho.workers")

READY_TIMEOUT = 30.0  # seconds a worker gets to start listening
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
DIED_YOUNG = 1.0  # a worker that dies sooner than this after starting backs off more
DEFAULT_WORKER_TIMEOUT = 10.0  # seconds of silence after which a worker is killed


def next_backoff(previous: float, lived: float) -> float:
    """The delay before restarting a worker that died after ``lived``
    seconds, the previous delay of its slot being ``previous``: double it
    while the worker dies young, back to the first once it lived long."""
    backoff = previous * 2 if lived < DIED_YOUNG else BACKOFF_FIRST
    return min(backoff, BACKOFF_MAX)


class _Worker:
    """The supervisor's record of one worker in slot ``index``."""

    def __init__(self, index: int, process: WorkerProcess) -> None:
        self.index = index
        self.process = process
        self.began = trio.current_time()
        self.ready = False
        self.retired = False  # replaced by a reload, or removed by SIGTTOU
        self.exited = trio.Event()

    @property
    def pid(self) -> int:
        return self.process.pid


class Supervisor:
    """Keeps ``workers`` workers serving, each in a slot (an index from 0),
    started by ``spawner``.  ``grace`` is the workers' (``--grace``),
    ``drain_delay`` theirs (``--drain-delay``), ``worker_timeout`` how long
    a worker may stay silent; ``notifier`` hears
    RELOADING, READY and STOPPING.  :meth:`run` runs it until every slot
    has ended (after :meth:`stop`, or a failed first start)."""

    def __init__(
        self,
        spawner: Spawner,
        workers: int,
        *,
        grace: float,
        drain_delay: float = 0.0,
        worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
        notifier: Notifier | None = None,
    ) -> None:
        self.spawner = spawner
        self.workers = workers  # the number wanted (SIGTTIN and SIGTTOU change it)
        self.grace = grace
        self.drain_delay = drain_delay
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
        self.totals = ServiceTotals()  # the counters of workers gone

    async def run(self) -> None:
        """Start the slots and keep them until each has ended."""
        async with trio.open_nursery() as worker_tasks:
            self.nursery = worker_tasks
            for index in range(self.workers):
                worker_tasks.start_soon(self.keep_slot, index)

    def exit_code(self) -> int:
        """Once :meth:`run` returned: 0 if every worker exited 0 (logged)."""
        if self.failed:
            return 1
        bad = {index: code for index, code in self.exit_codes.items() if code != 0}
        if bad:
            logger.warning("workers exited with errors: %s", bad)
            return 1
        logger.info("all %d workers stopped", self.workers)
        return 0

    def forward(self, signum: int) -> None:
        """Send ``signum`` to every worker still running."""
        for worker in list(self.live):
            if worker.process.returncode is None:
                worker.process.send_signal(signum)

    def stop(self, *, failed: bool = False) -> None:
        """Stop: every worker gets SIGTERM (drains), none is started again."""
        self.failed = self.failed or failed
        if not self.stopping:
            self.stopping = True
            if self.notifier is not None:
                self.notifier.stopping()
            self.forward(signal.SIGTERM)
        self.stop_requested.set()

    def signal_actions(self, nursery: trio.Nursery) -> SignalActions:
        """The supervisor's answer to each signal; its tasks run in ``nursery``."""

        def stop(name: str) -> None:
            logger.info("%s: stopping all %d workers", name, self.workers)
            self.stop()
            nursery.start_soon(self.kill_stragglers)

        def stop_now(name: str) -> None:
            logger.warning("%s again: workers close every connection now", name)
            self.forward(signal.SIGTERM)

        return SignalActions(
            reload=lambda name: nursery.start_soon(self.reload),
            add_worker=lambda name: self.add_worker(),
            remove_worker=lambda name: nursery.start_soon(self.remove_worker),
            stop=stop,
            stop_now=stop_now,
            stopping=lambda: self.stopping,
        )

    # -- one worker ------------------------------------------------------------

    async def _start(self, index: int) -> _Worker:
        """Start a worker for slot ``index`` and wait until it serves (its
        ``ready`` is then true) or has failed (it has exited, or is about to)."""
        assert self.nursery is not None
        worker: _Worker = await self.nursery.start(self._run_worker, index)
        return worker

    async def _run_worker(self, index: int, *, task_status: trio.TaskStatus[_Worker]) -> None:
        process = await self.spawner.spawn(index)
        worker = _Worker(index, process)
        self.live.add(worker)
        try:
            if self.stopping:
                process.send_signal(signal.SIGTERM)
            await process.send_configuration()
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
            self.totals.keep_counters_of(process.figures)
            worker.exited.set()
            process.close()
        if worker.retired:
            logger.info(
                "worker %d (pid %d), retired, %s",
                index,
                process.pid,
                describe_exit(process.returncode),
            )

    async def _wait_ready(self, worker: _Worker) -> bool:
        with trio.move_on_after(READY_TIMEOUT):
            return await worker.process.wait_ready()
        logger.error(
            "worker %d (pid %d) not listening after %.0f s: killing it",
            worker.index,
            worker.pid,
            READY_TIMEOUT,
        )
        worker.process.kill()
        return False

    async def _watch_heartbeats(self, worker: _Worker) -> None:
        """Kill the worker if its heartbeats stop for ``worker_timeout`` seconds."""
        while True:
            with trio.move_on_after(self.worker_timeout):
                if not await worker.process.next_heartbeat():
                    return  # it is exiting
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

    async def _retire(self, worker: _Worker) -> None:
        """Tell ``worker`` to stop accepting and finish its connections
        (:meth:`MessageServer.retire`); kill it if it is still running when
        its grace and its drain's are over."""
        worker.retired = True
        if not await worker.process.retire():
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

    def snapshot(self) -> dict[str, Any]:
        """The whole service's figures: every live worker's latest, the
        counters of those gone, and the supervisor's own."""
        return self.totals.total(
            [worker.process.figures for worker in list(self.live)],
            restarts=self.restarts,
            reloads=self.reloads,
            workers=len(self.slots),
        )

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
            self._failed_to_start(worker, initial=initial)
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
                logger.info("worker %d (pid %d) %s", index, worker.pid, describe_exit(code))
                self._slot_ended(index, code)
                return
            lived = trio.current_time() - worker.began
            backoff = next_backoff(backoff, lived)
            logger.warning(
                "worker %d (pid %d) %s after %.1f s; restarting in %.1f s",
                index,
                worker.pid,
                describe_exit(code),
                lived,
                backoff,
            )
            with trio.move_on_after(backoff):
                await self.stop_requested.wait()
            async with self._lock(index):
                if self.slots.get(index) is not worker:
                    continue  # a reload or SIGTTOU dealt with the slot meanwhile
                if self.stopping:
                    self._slot_ended(index, code)
                    return
                worker = self.slots[index] = await self._start(index)
                self.restarts += 1

    def _failed_to_start(self, worker: _Worker, *, initial: bool) -> None:
        """A slot's first worker failed: everything stops if the slot is one
        of the first ``workers``; a slot SIGTTIN added is given up."""
        if self.stopping:
            return
        logger.error(
            "worker %d (pid %d) failed to start (%s); %s",
            worker.index,
            worker.pid,
            describe_exit(worker.process.returncode),
            "stopping" if initial else "not added",
        )
        if initial:
            self.exit_codes[worker.index] = worker.process.returncode or 1
            self.stop(failed=True)
        else:
            self.workers -= 1

    def _slot_ended(self, index: int, code: int | None) -> None:
        self.exit_codes[index] = code if code is not None else 1
        del self.slots[index]

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
                                describe_exit(new.process.returncode),
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

    @property
    def stop_limit(self) -> float:
        """Seconds a worker may take to stop after SIGTERM: its drain delay,
        its connections' run-on and their shutdown (``grace`` each), and
        ``KILL_MARGIN``."""
        return self.drain_delay + 2 * self.grace + KILL_MARGIN

    async def kill_stragglers(self) -> None:
        """Once stopping: kill the workers still running after :attr:`stop_limit`."""
        await trio.sleep(self.stop_limit)
        for worker in list(self.live):
            if worker.process.returncode is None:
                logger.error(
                    "worker %d (pid %d) still running %.1f s after SIGTERM: killing it",
                    worker.index,
                    worker.pid,
                    self.stop_limit,
                )
                worker.process.kill()
