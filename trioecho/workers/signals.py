"""What a serving process does on each signal it handles: one loop for the
single process (``trioecho serve``, ``trioecho relay``) and for the
supervisor of ``--workers N``; each says what its actions are.

* ``SIGHUP``: reload;
* ``SIGTTIN`` / ``SIGTTOU``: one worker more / less;
* ``SIGINT`` / ``SIGTERM``: stop (drain); the same signal again, while
  stopping, stops at once.

:func:`open_signal_receiver` is opened before the server starts (a signal
that comes while it starts waits for the loop instead of killing the
process); :func:`act_on_signals` is the loop, run as a task.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager

import trio

__all__ = ["HANDLED_SIGNALS", "SignalActions", "act_on_signals", "open_signal_receiver"]

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)

# Each action gets the signal's name ("SIGHUP") for its log line.
Action = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class SignalActions:
    """A process's answer to each handled signal."""

    reload: Action
    """``SIGHUP``."""
    add_worker: Action
    """``SIGTTIN``."""
    remove_worker: Action
    """``SIGTTOU``."""
    stop: Action
    """``SIGINT`` or ``SIGTERM`` while not stopping: drain and stop."""
    stop_now: Action
    """``SIGINT`` or ``SIGTERM`` while stopping already: stop at once."""
    stopping: Callable[[], bool]
    """Whether the process is stopping (by a signal or for any other reason)."""


def open_signal_receiver() -> AbstractContextManager[AsyncIterator[int]]:
    """Trio's receiver of :data:`HANDLED_SIGNALS` (a context manager)."""
    return trio.open_signal_receiver(*HANDLED_SIGNALS)


async def act_on_signals(signals: AsyncIterator[int], actions: SignalActions) -> None:
    """Call the action of each signal from ``signals`` as it comes, in order
    (run it as a task; it returns when ``signals`` ends)."""
    async for signum in signals:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            actions.reload(name)
        elif signum == signal.SIGTTIN:
            actions.add_worker(name)
        elif signum == signal.SIGTTOU:
            actions.remove_worker(name)
        elif not actions.stopping():
            actions.stop(name)
        else:
            actions.stop_now(name)
