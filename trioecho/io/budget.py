"""A server-wide memory budget: backpressure instead of growth.

Each connection holds memory a peer controls: the bytes of an unfinished
message, and replies that the peer has not read yet.  ``max_frame`` bounds
one connection; a budget bounds them all.  Every connection has an
:class:`Account` that says what it holds (its ``buffered`` and ``sending``
bytes); the :class:`MemoryBudget` adds them up.

The rule, checked before each read (:meth:`Account.admit`):

* a connection that holds less than ``share`` bytes always reads: clients of
  small messages keep being served, whatever the others do;
* a larger one reads only while the total stays within ``limit``; past it,
  it waits (it stops reading, so its peer's TCP window closes: backpressure)
  until other connections free memory;
* one that has waited ``patience`` seconds while holding part of a message
  raises :class:`MemoryBudgetError`: that message cannot complete within the
  budget.  The server logs it and closes that connection alone, which frees
  its memory for the others.

Accounting is what the connections report, not the process's RSS: Python
objects add their overhead, and a handler may hold copies of its own.
"""

from __future__ import annotations

import gc

import trio

from trioecho.errors import MemoryBudgetError
from trioecho.io import memory

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_PATIENCE",
    "DEFAULT_SHARE",
    "Account",
    "MemoryBudget",
    "memory_budget_of",
    "return_freed_memory",
]

DEFAULT_MEMORY_BUDGET = 192 << 20  # bytes, over all connections
DEFAULT_SHARE = 64 << 10  # bytes a connection may hold without asking
DEFAULT_PATIENCE = 5.0  # seconds a connection holding part of a message may wait


def memory_budget_of(budget: object) -> MemoryBudget:
    """A server's budget: ``None`` for the default, a byte count, or a
    :class:`MemoryBudget` (shared by the servers given it)."""
    if budget is None:
        return MemoryBudget()
    if isinstance(budget, MemoryBudget):
        return budget
    if isinstance(budget, int) and not isinstance(budget, bool):
        if budget < 1:
            raise ValueError(f"memory_budget must be at least 1 byte, not {budget}")
        return MemoryBudget(budget)
    raise TypeError(
        f"memory_budget must be a byte count (an int) or a MemoryBudget, not {budget!r}"
    )


class MemoryBudget:
    """``limit`` bytes for all connections together; see the module docstring."""

    def __init__(
        self,
        limit: int = DEFAULT_MEMORY_BUDGET,
        *,
        share: int = DEFAULT_SHARE,
        patience: float = DEFAULT_PATIENCE,
    ) -> None:
        if limit < 1 or share < 0 or not patience > 0:
            raise ValueError(f"bad memory budget: limit={limit} share={share} patience={patience}")
        self.limit = limit
        self.share = share
        self.patience = patience
        self.used = 0  # bytes all accounts hold
        self.peak = 0
        self.waiting = 0  # connections waiting for memory now
        self.refused = 0  # MemoryBudgetErrors raised so far
        self._freed = trio.Event()

    def open_account(self) -> Account:
        return Account(self)

    def _change(self, delta: int) -> None:
        self.used += delta
        if delta > 0:
            self.peak = max(self.peak, self.used)
        elif delta < 0 and self.waiting:
            self._freed.set()
            self._freed = trio.Event()


class Account:
    """One connection's share of a :class:`MemoryBudget`."""

    __slots__ = ("_budget", "buffered", "sending")

    def __init__(self, budget: MemoryBudget) -> None:
        self._budget = budget
        self.buffered = 0  # bytes of unfinished messages (and messages not yet handled)
        self.sending = 0  # bytes of replies handed to the transport, not yet sent

    @property
    def budget(self) -> MemoryBudget:
        """The budget this is a share of (a relay opens its upstream
        connection's account from it)."""
        return self._budget

    @property
    def held(self) -> int:
        return self.buffered + self.sending

    def set_buffered(self, size: int) -> None:
        self.buffer(size, 0)

    def buffer(self, size: int, incoming: int) -> bool:
        """Record ``size`` bytes buffered (:meth:`set_buffered`) and say
        whether ``incoming`` more may be read now (:meth:`fits`), in one call:
        the inline step makes it once per read."""
        budget = self._budget
        if size != self.buffered:
            budget._change(size - self.buffered)
            self.buffered = size
        return size + self.sending < budget.share or budget.used + incoming <= budget.limit

    def set_sending(self, size: int) -> None:
        if size != self.sending:
            self._budget._change(size - self.sending)
            self.sending = size

    def close(self) -> None:
        """Give everything back (the connection is closed)."""
        self.set_buffered(0)
        self.set_sending(0)

    def fits(self, incoming: int) -> bool:
        """Whether this connection may read ``incoming`` more bytes now (the
        common case: a test without a coroutine on the hot path)."""
        return self.buffer(self.buffered, incoming)

    async def admit(self, incoming: int) -> None:
        """Return once this connection may read ``incoming`` more bytes
        (at once if :meth:`fits`).

        Raises :class:`MemoryBudgetError` after waiting ``patience`` seconds
        while holding part of a message."""
        budget = self._budget
        if self.fits(incoming):
            return
        deadline = trio.current_time() + budget.patience
        budget.waiting += 1
        try:
            while not self.fits(incoming):
                with trio.move_on_at(deadline):
                    await budget._freed.wait()
                    continue
                if self.buffered:
                    budget.refused += 1
                    raise MemoryBudgetError(
                        f"a message of at least {self.buffered} bytes cannot complete within "
                        f"the server's memory budget ({budget.limit} bytes, "
                        f"{budget.used} in use)"
                    )
                deadline = trio.current_time() + budget.patience
        finally:
            budget.waiting -= 1


MEMORY_CHECK_SECONDS = 1.0  # how often freed memory is considered for return to the OS
MEMORY_TRIM_BYTES = 4 << 20  # freed since the peak: worth a malloc_trim


async def return_freed_memory(budget: MemoryBudget) -> None:
    """Give freed memory back to the OS after a peak of ``budget`` (a full
    garbage collection, then :func:`~trioecho.io.memory.trim`; at most once
    a second, and only once ``MEMORY_TRIM_BYTES`` of the budget were
    freed): RSS falls again once large messages are gone.  Runs until
    cancelled."""
    memory.serve_large_blocks_with_mmap()
    high = budget.used
    while True:
        await trio.sleep(MEMORY_CHECK_SECONDS)
        used = budget.used
        high = max(high, budget.peak)
        if high - used >= MEMORY_TRIM_BYTES:
            # A connection's end can leave its buffers in reference cycles
            # (an error's traceback holding the frame that holds its
            # stream) until the next full collection, which tune_gc makes
            # rare: on Python 3.12 tens of MiB stayed resident after 900
            # --generic clients left.  Collect them first.
            gc.collect()
            memory.trim()
            budget.peak = high = used
