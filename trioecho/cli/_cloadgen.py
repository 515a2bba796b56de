"""The C load generator (``csrc/loadgen.c``) behind ``trioecho bench``.

The only module that imports ``trioecho._loadgen_ffi``.  It turns the C
statistics into a :class:`BenchStats` of plain Python values.
"""

from __future__ import annotations

import dataclasses

from trioecho._loadgen_ffi import ffi, lib
from trioecho.errors import LoadGeneratorError
from trioecho.framing.base import FramingName

FRAMINGS = {"line": lib.TB_FRAMING_LINE, "len": lib.TB_FRAMING_LEN, "raw": lib.TB_FRAMING_RAW}
# The latency histogram's buckets: bucket i holds latencies from
# BUCKET_FLOORS[i] up to BUCKET_FLOORS[i + 1] nanoseconds.
BUCKET_FLOORS: tuple[int, ...] = tuple(
    int(lib.tb_bucket_floor(i)) for i in range(lib.TB_HIST_BUCKETS)
)


def bucket_index(latency_ns: int) -> int:
    """The histogram bucket of a latency, as the C load generator files it."""
    return int(lib.tb_bucket_index(latency_ns))


@dataclasses.dataclass(frozen=True)
class LoadShape:
    """The load a generator applies: ``connections`` at once, each keeping
    ``depth`` messages of ``size`` bytes in flight, in ``framing``."""

    connections: int
    depth: int
    size: int
    framing: FramingName


@dataclasses.dataclass
class BenchStats:
    """What a stretch of load produced; latencies in nanoseconds."""

    sent: int
    received: int
    errors: int
    bytes_sent: int
    bytes_received: int
    max_latency_ns: int
    histogram: list[int]
    open_connections: int
    last_error: str

    @classmethod
    def empty(cls, open_connections: int = 0) -> BenchStats:
        return cls(0, 0, 0, 0, 0, 0, [0] * len(BUCKET_FLOORS), open_connections, "")

    def record_latency(self, latency_ns: int) -> None:
        self.max_latency_ns = max(self.max_latency_ns, latency_ns)
        self.histogram[bucket_index(latency_ns)] += 1

    def percentile_ns(self, fraction: float) -> int:
        """Latency below which ``fraction`` of the replies came (bucket floor)."""
        total = sum(self.histogram)
        if total == 0:
            return 0
        rank = fraction * total
        seen = 0
        for floor, count in zip(BUCKET_FLOORS, self.histogram, strict=False):
            seen += count
            if seen >= rank:
                return min(int(floor), self.max_latency_ns)
        return self.max_latency_ns


class LoadGenerator:
    """N connections keeping D messages of S bytes in flight, every reply checked.

    ``run(seconds)`` drives the load with the GIL released and returns the
    statistics of that stretch alone.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connections: int,
        depth: int,
        size: int,
        framing: str,
        connect_timeout: float = 10.0,
    ) -> None:
        self._host = ffi.new("char[]", host.encode())
        config = ffi.new(
            "tb_config *",
            {
                "host": self._host,
                "port": port,
                "connections": connections,
                "depth": depth,
                "size": size,
                "framing": FRAMINGS[framing],
                "connect_timeout_ms": int(connect_timeout * 1000),
            },
        )
        error = ffi.new("char[]", 256)
        bench = lib.tb_open(config, error, len(error))
        if bench == ffi.NULL:
            raise LoadGeneratorError(ffi.string(error).decode(errors="replace"))
        self._bench = ffi.gc(bench, lib.tb_close)

    def run(self, seconds: float) -> BenchStats:
        stats = ffi.new("tb_stats *")
        lib.tb_run(self._bench, max(1, int(seconds * 1000)), stats)
        return BenchStats(
            sent=stats.sent,
            received=stats.received,
            errors=stats.errors,
            bytes_sent=stats.bytes_sent,
            bytes_received=stats.bytes_received,
            max_latency_ns=stats.max_latency_ns,
            histogram=list(stats.hist),
            open_connections=stats.open_connections,
            last_error=ffi.string(stats.last_error).decode(errors="replace"),
        )

    def finish(self, seconds: float = 2.0) -> int:
        """End every connection cleanly (FIN, then read to the server's end,
        for at most ``seconds``); return how many had not ended by then."""
        if self._bench is None:
            return 0
        return int(lib.tb_finish(self._bench, max(1, int(seconds * 1000))))

    def close(self) -> None:
        """Close every connection now (also done when the object is collected)."""
        if self._bench is not None:
            ffi.release(self._bench)  # runs tb_close now
            self._bench = None

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """End the connections cleanly (:meth:`finish`), then close."""
        try:
            self.finish()
        finally:
            self.close()
