"""Scaling out: trioecho with --workers 1, 2, ... on the same workloads.

Starts ``python -m trioecho --workers N`` on loopback for each N, loads it
with the C load generator from this process, and prints messages per second
and the ratio to one worker.  The load generator shares the machine's CPUs
with the workers (no pinning: the point is to let the workers spread), so on
a machine with few cores the ratio understates what N workers do when the
clients are elsewhere.

    python benchmarks/scale.py                  # workers 1 and 2 (or 1..CPU count), 4 s runs
    python benchmarks/scale.py --workers 1,2,4 --duration 2
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys

from trioecho.cli.bench import BenchResult, measure
from trioecho.framing.base import FramingName
from trioecho.workers.supervisor import cpu_count

WORKLOADS: dict[str, tuple[str, int, int, int, FramingName]] = {
    "pingpong-100": ("ping-pong, 100 conns, 64 B, len", 100, 1, 64, "len"),
    "pingpong-1000": ("ping-pong, 1000 conns, 64 B, len", 1000, 1, 64, "len"),
    "pipelined-len": ("pipelined, 10 conns, depth 64, 16 B, len", 10, 64, 16, "len"),
    "pipelined-line": ("pipelined, 10 conns, depth 64, 16 B, line", 10, 64, 16, "line"),
}


class Service:
    """``python -m trioecho --workers N`` on a free port."""

    def __init__(self, workers: int, framing: FramingName) -> None:
        command = [sys.executable, "-m", "trioecho", "--port", "0", "--framing", framing]
        command += ["--workers", str(workers), "-q", "--max-connections", "10000"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
        if not match:
            self.process.kill()
            raise RuntimeError(f"trioecho did not start: {line!r}")
        self.port = int(match.group(1))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run(workers: int, workload: str, duration: float, warmup: float) -> BenchResult:
    _, connections, depth, size, framing = WORKLOADS[workload]
    service = Service(workers, framing)
    try:
        return measure(
            "127.0.0.1",
            service.port,
            connections=connections,
            depth=depth,
            size=size,
            framing=framing,
            duration=duration,
            warmup=warmup,
        )
    finally:
        service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_workers = ",".join(str(n) for n in sorted({1, 2, cpu_count()}))
    parser.add_argument("--workers", default=default_workers, help="e.g. 1,2,4")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    workloads = args.workloads.split(",")
    print(f"{cpu_count()} CPUs; {args.duration:g} s per run after {args.warmup:g} s of warm-up\n")
    print("| workload | " + " | ".join(f"{n} worker{'s' * (n > 1)}" for n in counts) + " |")
    print("|---|" + "---:|" * len(counts))
    failed = False
    for workload in workloads:
        results = [run(n, workload, args.duration, args.warmup) for n in counts]
        failed = failed or any(result.errors for result in results)
        base = results[0].msgs_per_s or 1.0
        cells = [
            f"{result.msgs_per_s:,.0f} ({result.msgs_per_s / base:.2f}x)" for result in results
        ]
        print(f"| {WORKLOADS[workload][0]} | " + " | ".join(cells) + " |", flush=True)
    print("\nmsgs/s (ratio to the first column); every reply checked")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
