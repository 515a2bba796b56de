"""Side-by-side comparison: trioecho against its peers, same workloads, one run.

Starts each server on loopback (pinned to one CPU with taskset when there is
one), loads it with trioecho's C load generator from this process (pinned to
another CPU), and prints a markdown table of messages per second (p99
latency for the 5000-connection row), then trioecho's ratio to each peer and
the performance goals, met or not.

    python benchmarks/compare.py                # everything, ~8 minutes
    python benchmarks/compare.py --quick        # shorter runs
    python benchmarks/compare.py --peers trioecho,uvloop-protocol --workloads pipelined-len

uvloop comes from the optional extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from trioecho.bench import BenchResult, measure

HERE = Path(__file__).resolve().parent
SERVER_CPU, LOAD_CPU = 0, 1


@dataclasses.dataclass(frozen=True)
class Workload:
    key: str
    title: str
    connections: int
    depth: int
    size: int
    framing: str
    metric: str = "msgs/s"  # or "p99 ms"


WORKLOADS = [
    Workload("pingpong-100", "ping-pong, 100 conns, 64 B, len", 100, 1, 64, "len"),
    Workload("pingpong-1000", "ping-pong, 1000 conns, 64 B, len", 1000, 1, 64, "len"),
    Workload("pingpong-line", "ping-pong, 100 conns, 64 B, line", 100, 1, 64, "line"),
    Workload("pingpong-4k", "ping-pong, 100 conns, 4 KiB, len", 100, 1, 4096, "len"),
    Workload("pipelined-len", "pipelined, 10 conns, depth 64, 16 B, len", 10, 64, 16, "len"),
    Workload("pipelined-line", "pipelined, 10 conns, depth 64, 16 B, line", 10, 64, 16, "line"),
    Workload(
        "pingpong-5000", "ping-pong, 5000 conns, 64 B, len: p99 ms", 5000, 1, 64, "len", "p99 ms"
    ),
]

PEERS = {
    "threaded": "seed ThreadingTCPServer",
    "asyncio-streams": "asyncio streams",
    "asyncio-protocol": "asyncio Protocol",
    "uvloop-protocol": "uvloop Protocol",
    "trio-plain": "plain Trio",
    "trioecho-py": "trioecho, Python framer",
    "trioecho-generic": "trioecho, generic handler",
    "trioecho": "trioecho, C framer",
}


def server_command(peer: str, framing: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if peer.startswith("trioecho"):
        if peer == "trioecho-py":
            env["TRIOECHO_PUREPYTHON"] = "1"
        command = [sys.executable, "-m", "trioecho", "--port", "0", "--framing", framing, "-q"]
        command += ["--max-connections", "20000", "--idle-timeout", "0"]
        if peer == "trioecho-generic":
            command.append("--generic")
    else:
        command = [sys.executable, str(HERE / "peers.py"), peer, "--framing", framing]
    if shutil.which("taskset"):
        command = ["taskset", "-c", str(SERVER_CPU), *command]
    return command, env


class Server:
    def __init__(self, peer: str, framing: str) -> None:
        command, env = server_command(peer, framing)
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"{peer} did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    def rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def run_one(peer: str, workload: Workload, duration: float, warmup: float) -> BenchResult | str:
    try:
        server = Server(peer, workload.framing)
    except (RuntimeError, OSError) as exc:
        return str(exc)
    try:
        return measure(
            "127.0.0.1",
            server.port,
            connections=workload.connections,
            depth=workload.depth,
            size=workload.size,
            framing=workload.framing,
            duration=duration,
            warmup=warmup,
        )
    except Exception as exc:  # a peer that cannot take the load is reported, not fatal
        return f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()


def idle_rss_per_connection(connections: int = 5000) -> float:
    """Bytes of trioecho RSS per idle connection."""
    from trioecho._cloadgen import LoadGenerator

    server = Server("trioecho", "len")
    try:
        time.sleep(0.5)
        before = server.rss_kib()
        with LoadGenerator(
            "127.0.0.1", server.port, connections=connections, depth=1, size=64, framing="len"
        ):
            time.sleep(1.0)  # each connection got its greeting and one reply; now idle
            after = server.rss_kib()
    finally:
        server.stop()
    return (after - before) * 1024 / connections


def cell(result: BenchResult | str | None, workload: Workload) -> str:
    if result is None:
        return "-"
    if isinstance(result, str):
        return "failed"
    if result.errors:
        return f"{value(result, workload):,.0f} ({result.errors} errors)"
    if workload.metric == "p99 ms":
        return f"{result.latency_ms['p99']:.1f}"
    return f"{result.msgs_per_s:,.0f}"


def value(result: BenchResult, workload: Workload) -> float:
    return result.latency_ms["p99"] if workload.metric == "p99 ms" else result.msgs_per_s


def ratio(results: dict[str, BenchResult | str], peer: str, workload: Workload) -> float | None:
    """trioecho's advantage over ``peer``: >1 means trioecho is better."""
    ours, theirs = results.get("trioecho"), results.get(peer)
    if not isinstance(ours, BenchResult) or not isinstance(theirs, BenchResult):
        return None
    if ours.errors or theirs.errors or value(ours, workload) == 0 or value(theirs, workload) == 0:
        return None
    if workload.metric == "p99 ms":
        return value(theirs, workload) / value(ours, workload)
    return value(ours, workload) / value(theirs, workload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="1.5 s runs, 0.5 s warm-up")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--workloads", default=",".join(w.key for w in WORKLOADS))
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 1.5, 0.5
    peers = [p for p in args.peers.split(",") if p]
    workloads = [w for w in WORKLOADS if w.key in args.workloads.split(",")]
    unknown = set(peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pinned = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1
    if pinned:
        os.sched_setaffinity(0, {LOAD_CPU})

    table: dict[str, dict[str, BenchResult | str]] = {}
    for workload in workloads:
        table[workload.key] = {}
        for peer in peers:
            print(f"# {workload.title}: {PEERS[peer]} ...", file=sys.stderr, flush=True)
            table[workload.key][peer] = run_one(peer, workload, args.duration, args.warmup)

    placement = (
        f"server on CPU {SERVER_CPU}, load generator on CPU {LOAD_CPU}" if pinned else "unpinned"
    )
    print(
        f"\n{args.duration:g} s per run after {args.warmup:g} s of warm-up; {placement}; "
        "msgs/s unless marked.\n"
    )
    print("| workload | " + " | ".join(PEERS[p] for p in peers) + " |")
    print("|---|" + "---:|" * len(peers))
    for workload in workloads:
        cells = [cell(table[workload.key].get(p), workload) for p in peers]
        print(f"| {workload.title} | " + " | ".join(cells) + " |")

    others = [p for p in peers if p != "trioecho"]
    if "trioecho" in peers and others:
        print("\ntrioecho (C framer) vs each peer: >1.00x means trioecho is better\n")
        print("| workload | " + " | ".join(PEERS[p] for p in others) + " |")
        print("|---|" + "---:|" * len(others))
        for workload in workloads:
            ratios = [ratio(table[workload.key], p, workload) for p in others]
            print(
                f"| {workload.title} | "
                + " | ".join("-" if r is None else f"{r:.2f}x" for r in ratios)
                + " |"
            )

    goals = [
        ("pipelined len >= 1.5x uvloop Protocol", "pipelined-len", "uvloop-protocol", 1.5),
        ("pipelined line >= 1.0x uvloop Protocol", "pipelined-line", "uvloop-protocol", 1.0),
        ("ping-pong 100 conns >= 1.0x seed threaded", "pingpong-100", "threaded", 1.0),
        ("ping-pong 1000 conns >= 1.0x seed threaded", "pingpong-1000", "threaded", 1.0),
        ("5000 conns p99 <= uvloop Protocol's", "pingpong-5000", "uvloop-protocol", 1.0),
    ]
    print("\nGoals:\n")
    for text, key, peer, target in goals:
        goal_workload = next((w for w in workloads if w.key == key), None)
        if goal_workload is None or peer not in peers:
            continue
        r = ratio(table[key], peer, goal_workload)
        verdict = "n/a" if r is None else ("met" if r >= target else "NOT met")
        print(f"- {text}: {'-' if r is None else f'{r:.2f}x'} ({verdict})")
    if "trioecho" in peers:
        per_connection = idle_rss_per_connection()
        verdict = "met" if per_connection <= 2048 else "NOT met"
        print(f"- <= 2 KiB RSS per idle connection: {per_connection:,.0f} bytes ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
