"""The supervisor's decisions (:mod:`trioecho.workers.decisions`) in-process:
stand-in workers that follow a script, on Trio's autojump clock, so that every
delay (back-off, timeouts, grace) is exact.  Each test asserts the exact
sequence of what the supervisor did to its workers, with the time it did it
(the workers of slot N have pids N+1 hundred and up: 100, 101, ... in slot 0).
Trio runs the tasks ready at one instant in any order, so the events of one
instant are compared in slot order.

The real processes, pipes and signals: tests/test_workers.py and
tests/test_reload.py."""

from __future__ import annotations

import dataclasses
import logging
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from trioecho.workers import decisions
from trioecho.workers.decisions import BACKOFF_FIRST, BACKOFF_MAX, Supervisor, next_backoff
from trioecho.workers.link import KILL_MARGIN
from trioecho.workers.signals import SignalActions, act_on_signals
from trioecho.workers.worker_process import describe_exit

HEARTBEAT = 0.5  # seconds between a stand-in's heartbeats
GRACE = 5.0
TIMEOUT = 1.5  # --worker-timeout


@dataclasses.dataclass(frozen=True)
class Script:
    """What one stand-in worker does, in seconds from its start."""

    ready_after: float | None = 0.1  # None: never says ready
    exits_after: float | None = None  # exits on its own then, with ``code``
    code: int = 0
    silent_after: float | None = None  # its heartbeats stop then (a stuck event loop)
    drains: float | None = 1.0  # after SIGTERM or retire, exits 0 this much later; None: never
    figures: dict[str, int] | None = None  # what its heartbeats carry


class FakeWorker:
    """A stand-in :class:`~trioecho.workers.worker_process.WorkerProcess`."""

    def __init__(self, world: FakeWorld, index: int, pid: int, script: Script) -> None:
        self.world, self.index, self.pid, self.script = world, index, pid, script
        self.began = trio.current_time()
        self.returncode: int | None = None
        self.figures = script.figures
        self._exited = trio.Event()
        self._ready = trio.Event()
        self._draining = False

    async def live(self) -> None:
        """Its own course: ready, then perhaps exit."""
        script = self.script
        if script.ready_after is not None:
            await self._sleep_until(script.ready_after)
            self._ready.set()
        if script.exits_after is not None:
            await self._sleep_until(script.exits_after)
            self.exit(script.code)

    async def _sleep_until(self, offset: float) -> None:
        await trio.sleep_until(self.began + offset)

    def exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self.world.note("exit", self.index, self.pid, code)
            self._exited.set()

    def drain(self) -> None:
        """SIGTERM or retire: exit 0 once its connections are done."""
        if self._draining or self.script.drains is None:
            return
        self._draining = True

        async def drained() -> None:
            await trio.sleep(self.script.drains or 0)
            self.exit(0)

        self.world.nursery.start_soon(drained)

    # -- what the supervisor calls --------------------------------------------

    async def send_configuration(self) -> None:
        pass

    async def wait_ready(self) -> bool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cancel_when, self._ready, nursery)
            nursery.start_soon(self._cancel_when, self._exited, nursery)
        return self._ready.is_set() and self.returncode is None

    @staticmethod
    async def _cancel_when(event: trio.Event, nursery: trio.Nursery) -> None:
        await event.wait()
        nursery.cancel_scope.cancel()

    async def next_heartbeat(self) -> bool:
        silent = self.script.silent_after
        if silent is not None and trio.current_time() >= self.began + silent:
            await self._exited.wait()
            return False
        with trio.move_on_after(HEARTBEAT):
            await self._exited.wait()
            return False
        return True

    async def retire(self) -> bool:
        if self.returncode is not None:
            return False
        self.world.note("retire", self.index, self.pid)
        self.drain()
        return True

    def send_signal(self, signum: int) -> None:
        self.world.note(signal.Signals(signum).name, self.index, self.pid)
        if signum == signal.SIGKILL:
            self.exit(-signal.SIGKILL)
        elif signum == signal.SIGTERM:
            self.drain()

    def kill(self) -> None:
        self.world.note("kill", self.index, self.pid)
        self.exit(-signal.SIGKILL)

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def close(self) -> None:
        pass


# (time, what, slot, pid) and, for "exit", the exit code.
Event = tuple[Any, ...]


class FakeWorld:
    """The stand-ins' :class:`~trioecho.workers.worker_process.Spawner`, and
    the record of what happened: ``(time, what, slot, pid, ...)``."""

    def __init__(self, nursery: trio.Nursery, scripts: dict[int, list[Script]]) -> None:
        self.nursery = nursery
        self.scripts = scripts  # per slot, one script per start; then Script()
        self.events: list[Event] = []
        self.spawned: dict[int, int] = {}  # slot -> workers started in it

    def note(self, what: str, index: int, pid: int, *code: int) -> None:
        self.events.append((round(trio.current_time(), 6), what, index, pid, *code))

    async def spawn(self, index: int) -> FakeWorker:
        queue = self.scripts.get(index, [])
        started = self.spawned.get(index, 0)
        self.spawned[index] = started + 1
        pid = 100 * (index + 1) + started
        worker = FakeWorker(self, index, pid, queue.pop(0) if queue else Script())
        self.note("spawn", index, pid)
        self.nursery.start_soon(worker.live)
        return worker

    def timeline(self, start: float = 0.0) -> list[Event]:
        """The events from ``start`` on, those of one instant in slot order."""
        events = [event for event in self.events if event[0] >= start]
        return sorted(events, key=lambda event: (event[0], event[2]))


class FakeNotifier:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def ready(self, status: str) -> None:
        self.notes.append(f"READY {status}")

    def reloading(self) -> None:
        self.notes.append("RELOADING")

    def stopping(self) -> None:
        self.notes.append("STOPPING")


class Harness:
    """A :class:`Supervisor` of stand-ins, run in a test's nursery."""

    def __init__(self, nursery: trio.Nursery, world: FakeWorld, supervisor: Supervisor) -> None:
        self.nursery, self.world, self.supervisor = nursery, world, supervisor
        self.code: int | None = None
        self.done = trio.Event()

    async def run(self) -> None:
        await self.supervisor.run()
        self.code = self.supervisor.exit_code()
        self.done.set()

    async def finish(self) -> int:
        await self.done.wait()
        assert self.code is not None
        return self.code


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="trioecho.workers")
    yield caplog


def start(
    nursery: trio.Nursery,
    workers: int,
    scripts: dict[int, list[Script]] | None = None,
    *,
    grace: float = GRACE,
    drain_delay: float = 0.0,
    notifier: FakeNotifier | None = None,
) -> Harness:
    world = FakeWorld(nursery, scripts or {})
    supervisor = Supervisor(
        world,
        workers,
        grace=grace,
        drain_delay=drain_delay,
        worker_timeout=TIMEOUT,
        notifier=notifier,  # type: ignore[arg-type]
    )
    harness = Harness(nursery, world, supervisor)
    nursery.start_soon(harness.run)
    return harness


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trioecho.workers"]


# -- pure rules ----------------------------------------------------------------


def test_the_back_off_doubles_while_a_worker_dies_young_up_to_the_most() -> None:
    delays = [BACKOFF_FIRST]
    for _ in range(8):
        delays.append(next_backoff(delays[-1], lived=0.5))
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert BACKOFF_MAX == 5.0
    assert next_backoff(5.0, lived=decisions.DIED_YOUNG) == BACKOFF_FIRST  # lived long: reset


def test_exits_are_described_for_the_log() -> None:
    assert describe_exit(None) == "still running"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-200) == "killed by signal 200"


# -- start, crash, restart -------------------------------------------------------


async def test_a_crashing_worker_is_restarted_with_a_growing_back_off(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    young = Script(exits_after=0.12, code=1)  # ready at 0.1, dead at 0.12
    scripts = {0: [young, young, young, Script(exits_after=1.5, code=1)]}
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 1, scripts)
        await trio.sleep(5.0)
        harness.supervisor.stop()
        assert await harness.finish() == 0
    assert harness.world.timeline() == [
        (0.0, "spawn", 0, 100),
        (0.12, "exit", 0, 100, 1),
        (0.32, "spawn", 0, 101),  # 0.2 s later
        (0.44, "exit", 0, 101, 1),
        (0.84, "spawn", 0, 102),  # 0.4 s
        (0.96, "exit", 0, 102, 1),
        (1.76, "spawn", 0, 103),  # 0.8 s
        (3.26, "exit", 0, 103, 1),  # it lived 1.5 s: the back-off starts again
        (3.36, "spawn", 0, 104),  # 0.1 s
        (5.0, "SIGTERM", 0, 104),
        (6.0, "exit", 0, 104, 0),
    ]
    assert harness.supervisor.restarts == 4
    assert [m for m in messages(caplog_info) if "restarting" in m] == [
        "worker 0 (pid 100) exited with code 1 after 0.1 s; restarting in 0.2 s",
        "worker 0 (pid 101) exited with code 1 after 0.1 s; restarting in 0.4 s",
        "worker 0 (pid 102) exited with code 1 after 0.1 s; restarting in 0.8 s",
        "worker 0 (pid 103) exited with code 1 after 1.5 s; restarting in 0.1 s",
    ]


async def test_a_stop_during_the_back_off_starts_nothing_more(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 2, {0: [Script(exits_after=0.15, code=1)]})
        await trio.sleep(0.2)  # worker 0 died at 0.15 and waits 0.2 s
        harness.supervisor.stop()
        assert await harness.finish() == 1  # slot 0's last worker exited with 1
    assert harness.world.timeline() == [
        (0.0, "spawn", 0, 100),
        (0.0, "spawn", 1, 200),
        (0.15, "exit", 0, 100, 1),
        (0.2, "SIGTERM", 1, 200),
        (1.2, "exit", 1, 200, 0),
    ]
    assert harness.supervisor.exit_codes == {0: 1, 1: 0}
    assert messages(caplog_info)[-1] == "workers exited with errors: {0: 1}"


async def test_a_worker_failing_its_first_start_stops_everything(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    notifier = FakeNotifier()
    fails = Script(ready_after=None, exits_after=0.05, code=3)
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 2, {1: [fails]}, notifier=notifier)
        assert await harness.finish() == 1
    assert harness.world.timeline() == [
        (0.0, "spawn", 0, 100),
        (0.0, "spawn", 1, 200),
        (0.05, "SIGTERM", 0, 100),  # as worker 1 exits (slot order at one instant)
        (0.05, "exit", 1, 200, 3),
        (1.05, "exit", 0, 100, 0),
    ]
    assert "worker 1 (pid 200) failed to start (exited with code 3); stopping" in messages(
        caplog_info
    )
    assert harness.supervisor.exit_codes == {0: 0, 1: 3}
    assert not harness.supervisor.all_started.is_set()
    assert notifier.notes == ["STOPPING"]


async def test_a_worker_that_never_says_ready_is_killed_after_the_ready_timeout(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 1, {0: [Script(ready_after=None)]})
        assert await harness.finish() == 1
    assert harness.world.timeline() == [
        (0.0, "spawn", 0, 100),
        (30.0, "kill", 0, 100),  # READY_TIMEOUT
        (30.0, "exit", 0, 100, -9),
    ]
    assert decisions.READY_TIMEOUT == 30.0
    assert messages(caplog_info)[:2] == [
        "worker 0 (pid 100) not listening after 30 s: killing it",
        "worker 0 (pid 100) failed to start (killed by SIGKILL); stopping",
    ]


# -- hung workers ----------------------------------------------------------------


async def test_a_silent_worker_is_declared_hung_killed_and_restarted(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 1, {0: [Script(silent_after=1.0)]})
        await trio.sleep(4.0)
        harness.supervisor.stop()
        assert await harness.finish() == 0
    # Ready at 0.1, heartbeats at 0.6 and 1.1, then none: 1.5 s after the
    # last one it is killed.  It lived 2.6 s: the first back-off.
    assert harness.world.timeline() == [
        (0.0, "spawn", 0, 100),
        (2.6, "kill", 0, 100),
        (2.6, "exit", 0, 100, -9),
        (2.7, "spawn", 0, 101),
        (4.0, "SIGTERM", 0, 101),
        (5.0, "exit", 0, 101, 0),
    ]
    assert messages(caplog_info)[1:3] == [
        "worker 0 (pid 100) silent for 1.5 s (its event loop is stuck or stopped): killing it",
        "worker 0 (pid 100) killed by SIGKILL after 2.6 s; restarting in 0.1 s",
    ]


async def test_a_worker_that_keeps_its_heartbeats_is_never_killed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 1)
        await trio.sleep(100.0)
        harness.supervisor.stop()
        assert await harness.finish() == 0
    assert harness.world.timeline() == [
        (0.0, "spawn", 0, 100),
        (100.0, "SIGTERM", 0, 100),
        (101.0, "exit", 0, 100, 0),
    ]


# -- rolling reloads ---------------------------------------------------------------


async def test_a_reload_replaces_the_slots_in_order_each_new_one_serving_first(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    notifier = FakeNotifier()
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 2, notifier=notifier)
        supervisor = harness.supervisor
        await trio.sleep(1.0)
        await supervisor.reload()
        serving = {index: worker.pid for index, worker in supervisor.slots.items()}
        await trio.sleep(2.0)
        supervisor.stop()
        assert await harness.finish() == 0
    assert harness.world.timeline(1.0) == [
        (1.0, "spawn", 0, 101),
        (1.1, "retire", 0, 100),  # once the new worker 0 is ready
        (1.1, "spawn", 1, 201),
        (1.2, "retire", 1, 200),
        (2.1, "exit", 0, 100, 0),  # each old one drains for 1 s
        (2.2, "exit", 1, 200, 0),
        (3.2, "SIGTERM", 0, 101),
        (3.2, "SIGTERM", 1, 201),
        (4.2, "exit", 0, 101, 0),
        (4.2, "exit", 1, 201, 0),
    ]
    assert serving == {0: 101, 1: 201}
    assert (supervisor.reloads, supervisor.restarts) == (1, 0)
    assert notifier.notes == ["RELOADING", "READY serving with 2 workers", "STOPPING"]
    log = messages(caplog_info)
    assert log[2:5] == [
        "SIGHUP: reloading 2 workers, one at a time",
        "worker 0 (pid 101) ready",
        "worker 1 (pid 201) ready",
    ]
    assert "reload 1 done: 2 workers serving" in log
    assert "worker 0 (pid 100), retired, exited with code 0" in log
    assert "worker 1 (pid 200), retired, exited with code 0" in log


async def test_a_new_worker_failing_ends_the_reload_and_the_rest_keep_serving(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    broken = Script(ready_after=None, exits_after=0.05, code=1)  # e.g. a broken certificate
    notifier = FakeNotifier()
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 3, {1: [Script(), broken]}, notifier=notifier)
        supervisor = harness.supervisor
        await trio.sleep(1.0)
        await supervisor.reload()
        serving = {index: worker.pid for index, worker in supervisor.slots.items()}
        await trio.sleep(3.0)
        supervisor.stop()
        assert await harness.finish() == 0
    # Slot 0 was replaced (its old worker retires); slot 1's new worker
    # failed: the reload stops there, slots 1 and 2 keep their workers.
    assert harness.world.timeline(1.0)[:5] == [
        (1.0, "spawn", 0, 101),
        (1.1, "retire", 0, 100),
        (1.1, "spawn", 1, 201),
        (1.15, "exit", 1, 201, 1),
        (2.1, "exit", 0, 100, 0),
    ]
    assert serving == {0: 101, 1: 200, 2: 300}
    assert (supervisor.reloads, supervisor.restarts) == (0, 0)
    assert notifier.notes == ["RELOADING", "READY serving with 3 workers", "STOPPING"]
    assert (
        "reload stopped: the new worker 1 (pid 201) failed to start (exited with code 1); "
        "the old workers go on serving"
    ) in messages(caplog_info)


async def test_a_retired_worker_that_does_not_finish_is_killed(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 1, {0: [Script(drains=None)]}, grace=1.0)
        await trio.sleep(1.0)
        await harness.supervisor.reload()
        await trio.sleep(10.0)
        harness.supervisor.stop()
        assert await harness.finish() == 0
    assert 2 * 1.0 + KILL_MARGIN == 4.0  # twice the grace (its own and its drain's), and a margin
    assert harness.world.timeline(1.0) == [
        (1.0, "spawn", 0, 101),
        (1.1, "retire", 0, 100),
        (5.1, "kill", 0, 100),
        (5.1, "exit", 0, 100, -9),
        (11.1, "SIGTERM", 0, 101),
        (12.1, "exit", 0, 101, 0),
    ]
    assert "worker 0 (pid 100), retired, still running after 4.0 s: killing it" in messages(
        caplog_info
    )


async def test_a_worker_dying_as_the_reload_replaces_it_is_not_restarted(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    scripts = {
        0: [Script(), Script(ready_after=0.5)],
        1: [Script(exits_after=1.55, code=1)],  # dies while its successor starts
    }
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 2, scripts)
        supervisor = harness.supervisor
        await trio.sleep(1.0)
        await supervisor.reload()
        await trio.sleep(1.0)
        serving = {index: worker.pid for index, worker in supervisor.slots.items()}
        supervisor.stop()
        assert await harness.finish() == 0
    assert harness.world.timeline(1.0)[:4] == [
        (1.0, "spawn", 0, 101),
        (1.5, "retire", 0, 100),
        (1.5, "spawn", 1, 201),
        (1.55, "exit", 1, 200, 1),  # its slot is locked: the reload's new worker takes it
    ]
    assert serving == {0: 101, 1: 201}
    assert harness.world.spawned == {0: 2, 1: 2}
    assert (supervisor.reloads, supervisor.restarts) == (1, 0)


# -- SIGTTIN, SIGTTOU --------------------------------------------------------------


async def test_sigttin_adds_a_slot_and_sigttou_retires_the_newest_never_the_last(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 2)
        supervisor = harness.supervisor
        await trio.sleep(1.0)
        supervisor.add_worker()
        await trio.sleep(1.0)
        await supervisor.remove_worker()
        await trio.sleep(0.5)
        await supervisor.remove_worker()
        await supervisor.remove_worker()
        await trio.sleep(2.0)
        assert (sorted(supervisor.slots), supervisor.workers) == ([0], 1)
        supervisor.stop()
        assert await harness.finish() == 0
    assert harness.world.timeline(1.0) == [
        (1.0, "spawn", 2, 300),
        (2.0, "retire", 2, 300),
        (2.5, "retire", 1, 200),
        (3.0, "exit", 2, 300, 0),
        (3.5, "exit", 1, 200, 0),
        (4.5, "SIGTERM", 0, 100),
        (5.5, "exit", 0, 100, 0),
    ]
    assert [m for m in messages(caplog_info) if m.startswith("SIGTT")] == [
        "SIGTTIN: adding worker 2 (3 workers)",
        "SIGTTOU: retiring worker 2 (2 workers)",
        "SIGTTOU: retiring worker 1 (1 workers)",
        "SIGTTOU: only one worker left: not removed",
    ]
    assert messages(caplog_info)[-1] == "all 1 workers stopped"


async def test_a_worker_sigttin_added_that_fails_is_not_added(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    fails = Script(ready_after=None, exits_after=0.05, code=2)
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 1, {1: [fails]})
        supervisor = harness.supervisor
        await trio.sleep(1.0)
        supervisor.add_worker()
        await trio.sleep(1.0)
        assert (supervisor.workers, supervisor.stopping) == (1, False)  # unlike a first start
        supervisor.stop()
        assert await harness.finish() == 0
    assert harness.world.timeline(1.0) == [
        (1.0, "spawn", 1, 200),
        (1.05, "exit", 1, 200, 2),
        (2.0, "SIGTERM", 0, 100),
        (3.0, "exit", 0, 100, 0),
    ]
    assert "worker 1 (pid 200) failed to start (exited with code 2); not added" in messages(
        caplog_info
    )


# -- stop and drain ----------------------------------------------------------------


async def test_stop_drains_every_worker_and_exits_0(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 2)
        supervisor = harness.supervisor
        await trio.sleep(1.0)
        assert supervisor.ready()
        supervisor.stop()
        assert not supervisor.ready()
        assert await harness.finish() == 0
    assert harness.world.timeline(1.0) == [
        (1.0, "SIGTERM", 0, 100),
        (1.0, "SIGTERM", 1, 200),
        (2.0, "exit", 0, 100, 0),
        (2.0, "exit", 1, 200, 0),
    ]
    log = messages(caplog_info)
    assert sorted(log[-3:-1]) == [  # one instant: in either order
        "worker 0 (pid 100) exited with code 0",
        "worker 1 (pid 200) exited with code 0",
    ]
    assert log[-1] == "all 2 workers stopped"


async def test_signals_drive_the_supervisor_and_a_straggler_is_killed(
    autojump_clock: trio.testing.MockClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    """SIGTTIN, SIGTTOU, SIGTERM and SIGTERM again through the one signal
    loop; a worker that ignores SIGTERM is killed ``drain_delay + 2 * grace
    + KILL_MARGIN`` seconds after the first (its drain delay, its
    connections' run-on, their shutdown), and the exit code is 1."""
    send, receive = trio.open_memory_channel[int](10)
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 2, {1: [Script(drains=None)]}, grace=1.0, drain_delay=0.5)
        supervisor = harness.supervisor
        nursery.start_soon(act_on_signals, receive, supervisor.signal_actions(nursery))
        for delay, signum in [
            (1.0, signal.SIGTTIN),
            (1.0, signal.SIGTTOU),
            (2.0, signal.SIGTERM),
            (0.5, signal.SIGTERM),
        ]:
            await trio.sleep(delay)
            await send.send(signum)
        assert await harness.finish() == 1
        await send.aclose()
    assert harness.world.timeline(1.0) == [
        (1.0, "spawn", 2, 300),
        (2.0, "retire", 2, 300),
        (3.0, "exit", 2, 300, 0),
        (4.0, "SIGTERM", 0, 100),
        (4.0, "SIGTERM", 1, 200),
        (4.5, "SIGTERM", 0, 100),  # the second signal, forwarded again
        (4.5, "SIGTERM", 1, 200),
        (5.0, "exit", 0, 100, 0),
        (8.5, "kill", 1, 200),  # 0.5 + 2 x 1 + KILL_MARGIN 2 s after the first
        (8.5, "exit", 1, 200, -9),
    ]
    assert supervisor.exit_codes == {0: 0, 1: -9}
    log = messages(caplog_info)
    assert "SIGTERM: stopping all 2 workers" in log
    assert "SIGTERM again: workers close every connection now" in log
    assert "worker 1 (pid 200) still running 4.5 s after SIGTERM: killing it" in log
    assert log[-1] == "workers exited with errors: {1: -9}"


async def test_a_reload_or_scaling_while_stopping_does_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 2)
        supervisor = harness.supervisor
        await trio.sleep(1.0)
        supervisor.stop()
        await supervisor.reload()
        supervisor.add_worker()
        await supervisor.remove_worker()
        assert await harness.finish() == 0
    assert harness.world.timeline(1.0) == [
        (1.0, "SIGTERM", 0, 100),
        (1.0, "SIGTERM", 1, 200),
        (2.0, "exit", 0, 100, 0),
        (2.0, "exit", 1, 200, 0),
    ]


# -- the signal loop, figures --------------------------------------------------------


async def test_the_signal_loop_calls_one_action_per_signal_in_order() -> None:
    calls: list[str] = []
    stopping = False

    def stop(name: str) -> None:
        nonlocal stopping
        stopping = True
        calls.append(f"stop {name}")

    actions = SignalActions(
        reload=lambda name: calls.append(f"reload {name}"),
        add_worker=lambda name: calls.append(f"add {name}"),
        remove_worker=lambda name: calls.append(f"remove {name}"),
        stop=stop,
        stop_now=lambda name: calls.append(f"stop now {name}"),
        stopping=lambda: stopping,
    )
    send, receive = trio.open_memory_channel[int](10)
    for signum in (
        signal.SIGHUP,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGHUP,
    ):
        send.send_nowait(signum)
    send.close()
    await act_on_signals(receive, actions)
    assert calls == [
        "reload SIGHUP",
        "add SIGTTIN",
        "remove SIGTTOU",
        "stop SIGINT",
        "stop now SIGTERM",
        "reload SIGHUP",
    ]


async def test_the_totals_keep_the_counters_of_workers_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    figures = {"connections_total": 5, "connections_open": 2, "serving": 1}
    async with trio.open_nursery() as nursery:
        harness = start(nursery, 2, {0: [Script(exits_after=2.0, code=1, figures=figures)]})
        harness.world.scripts[1] = [Script(figures=figures)]
        await trio.sleep(1.0)
        assert harness.supervisor.snapshot() == {
            "connections_total": 10,
            "connections_open": 4,
            "restarts": 0,
            "reloads": 0,
            "workers": 2,
        }
        await trio.sleep(1.05)  # worker 0 died at 2.0, its restart comes at 2.1
        assert harness.supervisor.snapshot() == {
            "connections_total": 10,  # the dead one's count stays, its open ones go
            "connections_open": 2,
            "restarts": 0,
            "reloads": 0,
            "workers": 2,
        }
        harness.supervisor.stop()
        await harness.finish()
