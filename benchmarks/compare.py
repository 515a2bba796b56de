"""Side-by-side comparison: trioecho against its peers, same workloads, one run.

Starts each server on loopback (pinned to one CPU with taskset when there is
one), loads it with trioecho's C load generator from this process (pinned to
another CPU), and prints markdown tables: messages per second; the server's
CPU time per message answered (utime + stime from ``/proc/PID/stat`` over
the measured seconds, divided by the replies: steadier than msgs/s on a
shared machine); p99 and maximum latency with 5000 connections; RSS per idle
connection; each peer's ratio to uvloop and to the floor; then trioecho's
ratio to each peer and the performance goals, met or not.

The floor (``c-epoll``) is benchmarks/floor_server.c, a single-threaded C
epoll echo server: this script compiles it on first use ($CC or cc, -O2) into
a cache folder in the temporary directory.  It is a yardstick, not part of
the package.

The TLS rows (``tls-pingpong-10``, ``tls-pingpong-100``) are ping-pong over
TLS: each peer that can serves it (trioecho's with --tls-cert/--tls-key,
asyncio's, uvloop's and Trio's in peers.py; the others' cells say n/a) with
a certificate trustme makes once per run, and the load comes from
benchmarks/tls_loadgen.c, a one-thread epoll client on OpenSSL compiled the
same way (its headers: libssl-dev), on the load generator's CPU: the Python
client of ``trioecho bench --tls`` is slower than the servers.  The
generator reads the server's CPU time itself (/proc/PID/stat, when its
measured seconds begin, after the warm-up, and when they end), so the CPU
per message covers the same window as the plain rows'.

    python benchmarks/compare.py                # everything, ~12 minutes
    python benchmarks/compare.py --quick        # shorter runs
    python benchmarks/compare.py --rounds 3     # each run 3 times, interleaved: medians
    python benchmarks/compare.py --peers trioecho,uvloop-protocol --workloads pipelined-len
    python benchmarks/compare.py --workloads tls-pingpong-10,tls-pingpong-100   # TLS only
    python benchmarks/compare.py --json results.json --figures figures/   # data and plots

``--json`` writes every measurement with the run's date and machine;
``--figures`` draws them (benchmarks/plots.py, which also redraws a saved
file).  The docs' figures and tables come from docs/_static/benchmarks/.
uvloop, rloop, matplotlib and trustme come from the optional extra:
pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trioecho import __version__
from trioecho.cli.bench import BenchResult, measure, process_cpu_seconds
from trioecho.framing.base import FramingName

HERE = Path(__file__).resolve().parent
SERVER_CPU, LOAD_CPU = 0, 1


@dataclasses.dataclass(frozen=True)
class Workload:
    key: str
    title: str
    connections: int
    depth: int
    size: int
    framing: FramingName
    tls: bool = False  # served over TLS, loaded by tls_loadgen.c


WORKLOADS = [
    Workload("pingpong-10", "ping-pong, 10 conns, 64 B, len", 10, 1, 64, "len"),
    Workload("pingpong-100", "ping-pong, 100 conns, 64 B, len", 100, 1, 64, "len"),
    Workload("pingpong-1000", "ping-pong, 1000 conns, 64 B, len", 1000, 1, 64, "len"),
    Workload("pingpong-line", "ping-pong, 100 conns, 64 B, line", 100, 1, 64, "line"),
    Workload("pingpong-4k", "ping-pong, 100 conns, 4 KiB, len", 100, 1, 4096, "len"),
    Workload("pipelined-len", "pipelined, 10 conns, depth 64, 16 B, len", 10, 64, 16, "len"),
    Workload("pipelined-line", "pipelined, 10 conns, depth 64, 16 B, line", 10, 64, 16, "line"),
    Workload("pingpong-5000", "ping-pong, 5000 conns, 64 B, len", 5000, 1, 64, "len"),
    Workload("tls-pingpong-10", "TLS ping-pong, 10 conns, 64 B, len", 10, 1, 64, "len", tls=True),
    Workload(
        "tls-pingpong-100", "TLS ping-pong, 100 conns, 64 B, len", 100, 1, 64, "len", tls=True
    ),
]

PEERS = {
    "threaded": "seed ThreadingTCPServer",
    "asyncio-streams": "asyncio streams",
    "asyncio-protocol": "asyncio Protocol",
    "uvloop-protocol": "uvloop Protocol",
    "rloop-protocol": "asyncio + rloop Protocol",
    "trio-plain": "plain Trio",
    "trioecho-py": "trioecho, pure Python (TRIOECHO_PUREPYTHON=1)",
    "trioecho-inline": "trioecho, Python inline step (TRIOECHO_PUMP=0)",
    "trioecho-handle": "trioecho, async handle()",
    "trioecho-respond": "trioecho, Python respond()",
    "trioecho-trio": "trioecho, Trio's waits",
    "trioecho": "trioecho, C pump (the default)",
    "c-epoll": "C epoll echo (the floor)",
}
# serve --handler for each trioecho peer (the default: the C echo session).
HANDLERS = {"trioecho-handle": "handle", "trioecho-respond": "respond"}
UV, RLOOP, FLOOR = "uvloop-protocol", "rloop-protocol", "c-epoll"
FLOOR_SOURCE = HERE / "floor_server.c"
TLS_LOADGEN_SOURCE = HERE / "tls_loadgen.c"
C_FLAGS = ("-O2", "-Wall", "-Wextra")
OPENSSL_LIBS = ("-lssl", "-lcrypto")
# Debian packages of headers and libraries: what they are, and the names a
# compiler or linker says it cannot find when they are not installed.
DEV_PACKAGES = {"libssl-dev": ("OpenSSL's", ("openssl/", "-lssl", "-lcrypto"))}
TLS_SERVER_NAME = "localhost"  # the certificate's name, which tls_loadgen checks
TLS_SLACK = 30.0  # seconds a TLS run may take past its warm-up and measured seconds
# BenchResult.latency_ms's names, and tls_loadgen's JSON fields (µs) for them.
TLS_LATENCY_FIELDS = {
    "p50": "p50_us",
    "p90": "p90_us",
    "p99": "p99_us",
    "p99.9": "p99_9_us",
    "max": "max_us",
}


class CBuildError(RuntimeError):
    """A benchmark's C source could not be compiled; the message says why."""


def missing_package(compiler_output: str) -> str:
    """A hint naming the package to install when the compiler or linker could
    not find one of DEV_PACKAGES' headers or libraries ("" if none)."""
    for line in compiler_output.splitlines():
        if not any(words in line for words in ("No such file", "not found", "cannot find")):
            continue
        for package, (whose, names) in DEV_PACKAGES.items():
            if any(name in line for name in names):
                return (
                    f"\n{whose} headers or libraries are missing: install {package} "
                    f"(apt-get install {package})"
                )
    return ""


@functools.cache
def c_binary(source: Path, flags: tuple[str, ...] = C_FLAGS, libs: tuple[str, ...] = ()) -> Path:
    """The executable of ``source``, a benchmark tool in C (not part of the
    package), compiled on first use.

    Built with ``$CC`` (default ``cc``), ``flags`` and, for the link, ``libs``
    into a folder of the temporary directory, under a name hashing the
    source and the command, so an unchanged source is compiled once per
    machine and an edited one anew.  Compiler warnings go to stderr.
    Raises CBuildError, with the compiler's output (and the package to
    install, if it lacked a header or library of one), when there is no
    compiler or the build fails.
    """
    compiler = shlex.split(os.environ.get("CC", "cc")) or ["cc"]
    command = [*compiler, *flags]
    digest = hashlib.sha256(source.read_bytes() + shlex.join([*command, *libs]).encode())
    folder = Path(tempfile.gettempdir()) / f"trioecho-bench-{os.getuid()}"
    binary = folder / f"{source.stem}-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    if shutil.which(compiler[0]) is None:
        raise CBuildError(
            f"{source.name} is compiled at run time, and there is no C compiler "
            f"{compiler[0]!r}: install one (gcc or clang) or set CC"
        )
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{binary.name}.{os.getpid()}"  # renamed once whole: builds may race
    command += ["-o", str(partial), str(source), *libs]
    try:
        built = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CBuildError(f"{source.name} did not build: {shlex.join(command)}: {exc}") from exc
    if built.returncode != 0:
        partial.unlink(missing_ok=True)
        raise CBuildError(
            f"{source.name} did not build: {shlex.join(command)} exited with "
            f"status {built.returncode}:\n{built.stderr.strip()}{missing_package(built.stderr)}"
        )
    if built.stderr.strip():
        print(f"# {source.name}: compiler warnings:\n{built.stderr.strip()}", file=sys.stderr)
    os.replace(partial, binary)
    return binary


def floor_binary() -> Path:
    """The floor server (c-epoll), compiled from floor_server.c on first use."""
    return c_binary(FLOOR_SOURCE)


def tls_loadgen_binary() -> Path:
    """The C TLS load generator, compiled from tls_loadgen.c on first use."""
    return c_binary(TLS_LOADGEN_SOURCE, C_FLAGS, OPENSSL_LIBS)


@dataclasses.dataclass(frozen=True)
class TLSSetup:
    """What the TLS workloads need: the generator, and the run's throwaway
    certificate (trustme: the server's chain and key, the CA that signed it)."""

    generator: Path
    cert: str
    key: str
    ca: str


def tls_setup(folder: Path) -> TLSSetup:
    """Compile the generator (CBuildError) and make a certificate for
    TLS_SERVER_NAME and 127.0.0.1 in ``folder``."""
    import trustme

    generator = tls_loadgen_binary()
    ca = trustme.CA()
    leaf = ca.issue_cert(TLS_SERVER_NAME, "127.0.0.1")
    setup = TLSSetup(generator, *(str(folder / name) for name in ("cert.pem", "key.pem", "ca.pem")))
    Path(setup.cert).write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(setup.key)
    ca.cert_pem.write_to_path(setup.ca)
    return setup


def serves_tls(peer: str) -> bool:
    """Whether ``peer`` can serve the TLS workloads."""
    from peers import TLS_PEERS

    return peer.startswith("trioecho") or peer in TLS_PEERS


def on_cpu(cpu: int, command: list[str]) -> list[str]:
    """``command`` run on CPU ``cpu`` by taskset, where there are both."""
    if shutil.which("taskset") and cpu < (os.cpu_count() or 1):
        return ["taskset", "-c", str(cpu), *command]
    return command


def server_command(
    peer: str, framing: str, tls: TLSSetup | None = None
) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if peer.startswith("trioecho"):
        if peer == "trioecho-py":
            env["TRIOECHO_PUREPYTHON"] = "1"
        if peer == "trioecho-inline":
            env["TRIOECHO_PUMP"] = "0"
        command = [sys.executable, "-m", "trioecho", "--port", "0", "--framing", framing, "-q"]
        command += ["--max-connections", "10000", "--idle-timeout", "0"]
        command += ["--handler", HANDLERS.get(peer, "session")]
        command += ["--readiness", "trio" if peer == "trioecho-trio" else "hub"]
    elif peer == FLOOR:
        command = [str(floor_binary()), "--framing", framing, "--port", "0"]
    else:
        command = [sys.executable, str(HERE / "peers.py"), peer, "--framing", framing]
    if tls is not None:
        command += ["--tls-cert", tls.cert, "--tls-key", tls.key]
    return on_cpu(SERVER_CPU, command), env


class Server:
    def __init__(self, peer: str, framing: str, tls: TLSSetup | None = None) -> None:
        command, env = server_command(peer, framing, tls)
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"{peer} did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A workload the peer cannot run (TLS, for a peer without it): "n/a"."""

    reason: str


def run_one(
    peer: str, workload: Workload, duration: float, warmup: float, tls: TLSSetup | None = None
) -> BenchResult | Skipped | str:
    if workload.tls and not serves_tls(peer):
        return Skipped(f"{PEERS[peer]} does not serve TLS")
    if workload.tls and tls is None:
        raise ValueError(f"{workload.key} needs the TLS setup")
    try:
        server = Server(peer, workload.framing, tls if workload.tls else None)
    except (RuntimeError, OSError) as exc:
        return str(exc)
    try:
        if tls is not None and workload.tls:
            return measure_tls(tls, server, workload, duration, warmup)
        return measure(
            "127.0.0.1",
            server.port,
            connections=workload.connections,
            depth=workload.depth,
            size=workload.size,
            framing=workload.framing,
            duration=duration,
            warmup=warmup,
            server_cpu=server.cpu_seconds,
        )
    except Exception as exc:  # a peer that cannot take the load is reported, not fatal
        return f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()


def measure_tls(
    tls: TLSSetup, server: Server, workload: Workload, duration: float, warmup: float
) -> BenchResult | str:
    """One TLS run: tls_loadgen.c pinned to LOAD_CPU, loading ``server``.

    The generator reads the server's CPU time itself (``--server-pid``:
    ``/proc/PID/stat`` when its measured seconds begin, after the warm-up,
    and when they end), as measure() does around its own measured seconds:
    the CPU per message covers the same window as the replies counted.
    """
    command = [
        str(tls.generator),
        *("--host", "127.0.0.1", "--port", str(server.port)),
        *("--connections", str(workload.connections), "--depth", str(workload.depth)),
        *("--size", str(workload.size), "--framing", workload.framing),
        *("--seconds", repr(duration), "--warmup", repr(warmup)),
        *("--cafile", tls.ca, "--server-name", TLS_SERVER_NAME),
        *("--server-pid", str(server.process.pid)),
    ]
    limit = warmup + duration + TLS_SLACK
    try:
        done = subprocess.run(
            on_cpu(LOAD_CPU, command), capture_output=True, text=True, timeout=limit
        )
    except subprocess.TimeoutExpired:
        return f"the TLS load generator did not finish within {limit:g} s"
    if not done.stdout.strip():  # it failed before measuring: its one line says why
        errors = done.stderr.strip().splitlines()
        return errors[-1] if errors else f"tls_loadgen exited with status {done.returncode}"
    data = json.loads(done.stdout.splitlines()[-1])
    seconds = float(data["seconds"])
    return BenchResult(
        host="127.0.0.1",
        port=server.port,
        framing=workload.framing,
        connections=workload.connections,
        depth=workload.depth,
        size=workload.size,
        seconds=seconds,
        messages=int(data["received"]),
        errors=int(data["errors"]),
        msgs_per_s=float(data["msgs_per_s"]),
        mb_per_s=(data["bytes_sent"] + data["bytes_received"]) / seconds / 1e6 if seconds else 0.0,
        latency_ms={name: data[field] / 1000 for name, field in TLS_LATENCY_FIELDS.items()},
        last_error=str(data["last_error"]),
        tls=True,
        server_cpu_seconds=data["server_cpu_seconds"],
    )


def median_run(results: list[Result]) -> Result:
    """The clean run with the median CPU per message (else median msgs/s),
    or the first failure if no run was clean."""
    clean = [r for r in results if ok(r) is not None]
    if not clean:
        return results[0] if results else None

    def key(result: Result) -> float:
        assert isinstance(result, BenchResult)
        cpu = result.cpu_per_message_us
        return cpu if cpu is not None else -result.msgs_per_s

    clean.sort(key=key)
    return clean[len(clean) // 2]


def idle_rss_per_connection(peer: str, connections: int = 5000) -> float | str:
    """Bytes of the server's RSS per idle connection (each connection got its
    greeting and one reply, then stays idle)."""
    from trioecho.cli._cloadgen import LoadGenerator

    try:
        server = Server(peer, "len")
    except (RuntimeError, OSError) as exc:
        return str(exc)
    try:
        time.sleep(0.5)
        before = server.rss_kib()
        with LoadGenerator(
            "127.0.0.1", server.port, connections=connections, depth=1, size=64, framing="len"
        ):
            time.sleep(1.5)  # each connection got its greeting and one reply; now idle
            after = server.rss_kib()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()
    return (after - before) * 1024 / connections


Result = BenchResult | Skipped | str | None


def ok(result: Result) -> BenchResult | None:
    """The result if it is a clean measurement."""
    if isinstance(result, BenchResult) and not result.errors and result.messages:
        return result
    return None


def cell(result: Result, text: str) -> str:
    if result is None:
        return "-"
    if isinstance(result, Skipped):
        return "n/a"
    if isinstance(result, str):
        return "failed"
    if result.errors:
        return f"{text} ({result.errors} errors)"
    return text


def throughput(result: Result) -> str:
    return (
        cell(result, f"{result.msgs_per_s:,.0f}")
        if isinstance(result, BenchResult)
        else cell(result, "")
    )


def cpu_per_message(result: Result) -> str:
    if isinstance(result, BenchResult) and result.cpu_per_message_us is not None:
        return cell(result, f"{result.cpu_per_message_us:.2f}")
    return cell(result, "-")


def latency(result: Result) -> str:
    if isinstance(result, BenchResult):
        ms = result.latency_ms
        return cell(result, f"{ms['p99']:.0f} / {ms['max']:.0f}")
    return cell(result, "")


LOWER_IS_BETTER = frozenset({"cpu", "p99"})


def metric_value(result: BenchResult, metric: str) -> float | None:
    """One figure of a measurement: "msgs/s", "cpu" (µs per message) or "p99" (ms)."""
    if metric == "msgs/s":
        return result.msgs_per_s
    if metric == "cpu":
        return result.cpu_per_message_us
    if metric == "p99":
        return float(result.latency_ms["p99"])
    raise ValueError(metric)


def value_ratio(ours: Result, theirs: Result, metric: str) -> float | None:
    """``ours``' value of ``metric`` over ``theirs``' (not turned: for "cpu"
    and "p99", < 1 means ours is better); None unless both are clean
    measurements with that figure."""
    a, b = ok(ours), ok(theirs)
    if a is None or b is None:
        return None
    mine, other = metric_value(a, metric), metric_value(b, metric)
    if mine is None or other is None or not other:
        return None
    return mine / other


def ratio(ours: Result, theirs: Result, metric: str = "msgs/s") -> float | None:
    """``ours`` against ``theirs``: > 1 means ours is better."""
    r = value_ratio(ours, theirs, metric)
    if r is None or metric not in LOWER_IS_BETTER:
        return r
    return 1 / r if r else None


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_ratio_table(
    reference: str,
    name: str,
    peers: list[str],
    workloads: list[Workload],
    table: dict[str, dict[str, Result]],
) -> None:
    """Every peer's msgs/s and CPU per message over ``reference``'s, per workload."""
    rows = []
    for w in workloads:
        base = table[w.key].get(reference)
        cells = [
            f"{times(value_ratio(table[w.key].get(p), base, 'msgs/s'))} / "
            f"{times(value_ratio(table[w.key].get(p), base, 'cpu'))}"
            for p in peers
        ]
        rows.append((w.title, cells))
    print_table(
        f"Ratio to {name}, msgs/s / CPU per message: each peer's figure over {name}'s "
        "(msgs/s: higher is better; CPU per message: lower is better)",
        peers,
        rows,
    )


def print_table(
    title: str, peers: list[str], rows: list[tuple[str, list[str]]], note: str = ""
) -> None:
    print(f"\n{title}{note}\n")
    print("| workload | " + " | ".join(PEERS[p] for p in peers) + " |")
    print("|---|" + "---:|" * len(peers))
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(cells) + " |")


@dataclasses.dataclass(frozen=True)
class Goal:
    """A performance goal: ``ours`` against ``peer`` on one workload.

    The ratio is ours' figure over the peer's (value_ratio): a "msgs/s"
    goal is met when it is at least ``target``; a "cpu" (CPU per message)
    or "p99" goal, where lower is better, when it is at most ``target``.
    """

    text: str
    workload: str
    ours: str
    peer: str
    metric: str  # "msgs/s", "cpu" or "p99"
    target: float

    def verdict(self, value: float | None) -> str:
        """The verdict on the ratio ``value``: met, NOT met, or n/a if unknown (None)."""
        if value is None:
            return "n/a"
        if self.metric in LOWER_IS_BETTER:
            met = value <= self.target + 1e-9
        else:
            met = value >= self.target - 1e-9
        return "met" if met else "NOT met"


# The goals of issue #34.
GOALS = [
    Goal(
        "ping-pong 100 conns, echo >= 1.3x uvloop, msgs/s",
        "pingpong-100",
        "trioecho",
        UV,
        "msgs/s",
        1.3,
    ),
    Goal(
        "ping-pong 100 conns, echo CPU/msg <= 1.15x the floor's",
        "pingpong-100",
        "trioecho",
        FLOOR,
        "cpu",
        1.15,
    ),
    Goal(
        "ping-pong 10 conns, echo >= 1.1x uvloop, msgs/s",
        "pingpong-10",
        "trioecho",
        UV,
        "msgs/s",
        1.1,
    ),
    Goal(
        "ping-pong 1000 conns, echo >= 1.1x uvloop, msgs/s",
        "pingpong-1000",
        "trioecho",
        UV,
        "msgs/s",
        1.1,
    ),
    Goal("5000 conns >= 1.1x uvloop, msgs/s", "pingpong-5000", "trioecho", UV, "msgs/s", 1.1),
    Goal("5000 conns p99 <= 1.0x uvloop's", "pingpong-5000", "trioecho", UV, "p99", 1.0),
    Goal(
        "ping-pong 100 conns, respond() >= 1.0x uvloop, msgs/s",
        "pingpong-100",
        "trioecho-respond",
        UV,
        "msgs/s",
        1.0,
    ),
    Goal("pipelined len >= 3.5x uvloop", "pipelined-len", "trioecho", UV, "msgs/s", 3.5),
    Goal("pipelined line >= 1.5x uvloop", "pipelined-line", "trioecho", UV, "msgs/s", 1.5),
    *(
        Goal(
            f"{w.title}: echo ahead of rloop (>= 1.0x), msgs/s",
            w.key,
            "trioecho",
            RLOOP,
            "msgs/s",
            1.0,
        )
        for w in WORKLOADS
        if w.depth == 1 and not w.tls
    ),
]
IDLE_GOAL_BYTES = 3 * 1024


def machine() -> dict[str, str | int]:
    """The machine and code a run measured: for the results file and the figures."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown commit"
    return {
        "cpu": cpu,
        "cpus": os.cpu_count() or 1,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "trioecho": __version__,
        "commit": commit,
    }


def as_data(result: Result) -> dict[str, object] | None:
    """One measurement as JSON data: the figures, or why there are none."""
    if result is None:
        return None
    if isinstance(result, str):
        return {"failed": result}
    if isinstance(result, Skipped):
        return {"skipped": result.reason}
    return {
        "msgs_per_s": result.msgs_per_s,
        "cpu_per_message_us": result.cpu_per_message_us,
        "latency_ms": result.latency_ms,
        "messages": result.messages,
        "errors": result.errors,
        "last_error": result.last_error,
    }


def results_data(
    args: argparse.Namespace,
    placement: str,
    peers: list[str],
    workloads: list[Workload],
    table: dict[str, dict[str, Result]],
    idle: dict[str, float | str],
) -> dict[str, object]:
    """Everything a run measured, as the results file holds it."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "duration": args.duration,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "placement": placement,
            "idle_connections": args.idle_connections,
        },
        "peers": {peer: PEERS[peer] for peer in peers},
        "workloads": [dataclasses.asdict(w) for w in workloads],
        "results": {
            w.key: {peer: as_data(table[w.key].get(peer)) for peer in peers} for w in workloads
        },
        "idle_rss_bytes": {
            peer: ({"failed": value} if isinstance(value, str) else value)
            for peer, value in idle.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="1.5 s runs, 0.5 s warm-up")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every workload and peer this many times, the peers interleaved in "
        "each round, and report the run with the median CPU per message (this machine's "
        "noise is larger than the differences that matter)",
    )
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--workloads", default=",".join(w.key for w in WORKLOADS))
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=5000,
        help="connections for the idle-RSS row; 0 skips it",
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write every measurement to FILE"
    )
    parser.add_argument(
        "--figures",
        type=Path,
        metavar="FOLDER",
        help="also draw the figures (needs matplotlib) into FOLDER",
    )
    args = parser.parse_args(argv)
    if args.figures is not None:
        try:
            import matplotlib  # noqa: F401  (checked before the run, not after it)
        except ImportError:
            parser.error("--figures needs matplotlib: pip install -e '.[bench]'")
    if args.quick:
        args.duration, args.warmup = 1.5, 0.5
    peers = [p for p in args.peers.split(",") if p]
    workloads = [w for w in WORKLOADS if w.key in args.workloads.split(",")]
    unknown = set(peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    if FLOOR in peers:
        try:
            print(f"# the floor: {floor_binary()}", file=sys.stderr)
        except CBuildError as exc:
            print(f"compare.py: {exc}\n(or leave {FLOOR} out of --peers)", file=sys.stderr)
            return 2
    tls_keys = [w.key for w in workloads if w.tls]
    if tls_keys:
        try:
            print(f"# the TLS load generator: {tls_loadgen_binary()}", file=sys.stderr)
        except CBuildError as exc:
            leave_out = ", ".join(tls_keys)
            print(f"compare.py: {exc}\n(or leave {leave_out} out of --workloads)", file=sys.stderr)
            return 2
        try:
            import trustme  # noqa: F401  (checked before the run, not in it)
        except ImportError:
            parser.error("the TLS workloads need trustme: pip install -e '.[bench]'")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pinned = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1
    if pinned:
        os.sched_setaffinity(0, {LOAD_CPU})

    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    table: dict[str, dict[str, Result]] = {}
    with contextlib.ExitStack() as stack:
        tls = None
        if tls_keys:  # one certificate for the run, in a folder removed after it
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="trioecho-tls-"))
            tls = tls_setup(Path(folder))
        for workload in workloads:
            runs: dict[str, list[Result]] = {peer: [] for peer in peers}
            for round_ in range(args.rounds):
                for peer in peers:
                    print(
                        f"# {workload.title}: {PEERS[peer]} (round {round_ + 1}) ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    runs[peer].append(run_one(peer, workload, args.duration, args.warmup, tls))
            table[workload.key] = {peer: median_run(runs[peer]) for peer in peers}
    idle: dict[str, float | str] = {}
    if args.idle_connections > 0:
        for peer in peers:
            print(f"# idle RSS: {PEERS[peer]} ...", file=sys.stderr, flush=True)
            idle[peer] = idle_rss_per_connection(peer, args.idle_connections)

    placement = (
        f"server on CPU {SERVER_CPU}, load generator on CPU {LOAD_CPU}" if pinned else "unpinned"
    )
    data = results_data(args, placement, peers, workloads, table, idle)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        print(f"# results written to {args.json}", file=sys.stderr)
    if args.figures is not None:
        from plots import draw_all

        for path in draw_all(data, args.figures):
            print(f"# figure written to {path}", file=sys.stderr)
    print(f"\n{args.duration:g} s per run after {args.warmup:g} s of warm-up; {placement}.")
    if tls_keys:
        print(
            "TLS rows: the servers' TLS (1.3) with a throwaway certificate, loaded by the C "
            "TLS load generator (benchmarks/tls_loadgen.c, OpenSSL); n/a: the peer serves no TLS."
        )
    rows = [(w.title, [throughput(table[w.key].get(p)) for p in peers]) for w in workloads]
    print_table("Messages per second", peers, rows)
    rows = [(w.title, [cpu_per_message(table[w.key].get(p)) for p in peers]) for w in workloads]
    print_table("Server CPU per message, µs (utime + stime from /proc)", peers, rows)
    many = [w for w in workloads if w.connections >= 5000]
    if many:
        rows = [(w.title, [latency(table[w.key].get(p)) for p in peers]) for w in many]
        print_table("Latency, p99 / max, ms", peers, rows)
    if idle:
        cells = ["failed" if isinstance(idle[p], str) else f"{idle[p]:,.0f}" for p in peers]
        print_table(
            "RSS per idle connection, bytes",
            peers,
            [(f"{args.idle_connections} idle connections", cells)],
        )

    for reference, name in ((UV, "uvloop"), (FLOOR, "the floor")):
        if reference in peers:
            print_ratio_table(reference, name, peers, workloads, table)

    others = [p for p in peers if p != "trioecho"]
    if "trioecho" in peers and others:
        rows = []
        for w in workloads:
            cells = []
            for p in others:
                r = ratio(table[w.key].get("trioecho"), table[w.key].get(p))
                c = ratio(table[w.key].get("trioecho"), table[w.key].get(p), "cpu")
                cells.append(
                    ("-" if r is None else f"{r:.2f}x")
                    + " / "
                    + ("-" if c is None else f"{c:.2f}x")
                )
            rows.append((w.title, cells))
        print_table(
            "trioecho (its C echo session on the C pump) vs each peer, msgs/s / CPU per message: "
            "> 1.00x means "
            "trioecho is better",
            others,
            rows,
        )
    if "trioecho" not in peers:
        return 0
    print("\nGoals:\n")
    for goal in GOALS:
        if goal.workload not in table or goal.peer not in peers or goal.ours not in peers:
            continue
        results = table[goal.workload]
        r = value_ratio(results.get(goal.ours), results.get(goal.peer), goal.metric)
        print(f"- {goal.text}: {times(r)} ({goal.verdict(r)})")
    ours = idle.get("trioecho")
    if isinstance(ours, float):
        verdict = "met" if ours <= IDLE_GOAL_BYTES else "NOT met"
        print(f"- <= 3 KiB RSS per idle connection: {ours:,.0f} bytes ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
