"""How a task parks on a readiness hub's watch with no object made per wait.

A parked task is marked with its watch in its ``custom_sleep_data`` (Trio
resets it whenever the task is rescheduled, a cancellation included), so a
watch's ``reader``/``writer`` may name a task that no longer waits there:
only a task still marked (:func:`parked`) is woken.  That lets every watch
share one trap and one abort function (:func:`wait_marked`).

The trap is Trio's own, yielded directly (:func:`park`): a wait then
creates no coroutine and no trap object.  It is private to Trio, so where it
is missing (``WaitTrap`` is None) the public ``wait_task_rescheduled`` is
used.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Generator
from typing import Any, TypeGuard

import trio

WaitTrap: Any
try:
    from trio._core._traps import WaitTaskRescheduled as WaitTrap
except ImportError:  # pragma: no cover - another Trio
    WaitTrap = None

__all__ = ["SUCCEEDED", "TRAP", "WaitTrap", "mark_current_task", "park", "parked", "wait_marked"]

SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED


@types.coroutine
def park(trap: Any) -> Generator[Any, Any, Any]:
    """``trio.lowlevel.wait_task_rescheduled`` with a trap made once
    (``TRAP``, or a watch's own): what Trio's function does, one coroutine
    and one object less."""
    return (yield trap).unwrap()


def parked(task: trio.lowlevel.Task | None, watch: object) -> TypeGuard[trio.lowlevel.Task]:
    """Whether ``task`` is parked on ``watch`` (and not woken yet)."""
    return task is not None and task.custom_sleep_data is watch


def mark_current_task(watch: object) -> trio.lowlevel.Task:
    """Mark the current task as parked on ``watch``; the task."""
    task = trio.lowlevel.current_task()
    task.custom_sleep_data = watch
    return task


def _abort(_: object) -> trio.lowlevel.Abort:
    # Cancelled: Trio reschedules the task, which clears its mark.
    return SUCCEEDED


def wait_marked() -> Awaitable[object]:
    """The wait of a marked task: Trio's trap yielded directly (one shared
    trap object), or the public ``wait_task_rescheduled`` without it."""
    if TRAP is None:
        return trio.lowlevel.wait_task_rescheduled(_abort)
    return park(TRAP)


TRAP = None if WaitTrap is None else WaitTrap(_abort)
