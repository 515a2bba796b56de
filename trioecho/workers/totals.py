"""The whole service's figures under ``--workers N``: every live worker's
latest snapshot (its heartbeats carry them), plus the counters of the workers
gone, plus the supervisor's own (restarts, reloads, workers)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trioecho.workers.link import Snapshot, add_snapshots

__all__ = ["GAUGES", "ServiceTotals"]

# Snapshot figures that are levels, not counts: a departed worker's are dropped.
GAUGES = frozenset(
    {"connections_open", "memory_budget_used", "memory_budget_limit", "accepting_paused", "serving"}
)


class ServiceTotals:
    """The counters of the workers gone, kept for the service's totals."""

    def __init__(self) -> None:
        self.departed: dict[str, Any] = {}

    def keep_counters_of(self, last: Snapshot | None) -> None:
        """A worker is gone, its ``last`` snapshot (if any) with it: its
        counters stay in the totals, its gauges do not."""
        if last is not None:
            counters = {key: value for key, value in last.items() if key not in GAUGES}
            add_snapshots(self.departed, counters)

    def total(self, live: Iterable[Snapshot | None], **own: int) -> dict[str, Any]:
        """The service's figures: the ``live`` workers' latest snapshots, the
        counters of those gone, and the supervisor's ``own`` figures."""
        total = add_snapshots({}, self.departed)
        for snapshot in live:
            if snapshot is not None:
                add_snapshots(total, snapshot)
        total.pop("serving", None)
        total.update(own)
        return total
