"""What the supervisor's decisions (:mod:`trioecho.workers.decisions`) need
of a worker process and of what starts one: the real ones are
:mod:`trioecho.workers.processes`; tests drive the decisions with stand-ins.
"""

from __future__ import annotations

import signal
from typing import Protocol

from trioecho.workers.link import Snapshot

__all__ = ["Spawner", "WorkerProcess", "describe_exit"]


class WorkerProcess(Protocol):
    """One started worker, as the decisions see it."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None:
        """None while it runs; then its exit code (negative: killed by that signal)."""

    @property
    def figures(self) -> Snapshot | None:
        """The latest figures it sent, if any."""

    async def send_configuration(self) -> None: ...

    async def wait_ready(self) -> bool:
        """True once it listens; false if it is exiting first."""

    async def next_heartbeat(self) -> bool:
        """True at its next heartbeat; false if it is exiting first."""

    async def retire(self) -> bool:
        """Ask it to stop accepting and finish its connections; false if it is exiting."""

    def send_signal(self, signum: int) -> None: ...

    def kill(self) -> None: ...

    async def wait(self) -> int:
        """Wait until it has exited; its exit code."""

    def close(self) -> None:
        """Release what the supervisor holds for it (once it has exited)."""


class Spawner(Protocol):
    async def spawn(self, index: int) -> WorkerProcess:
        """Start a worker for slot ``index``."""


def describe_exit(code: int | None) -> str:
    """How a process ended, for a log line."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
