"""trioecho bench: the C load generator checks every reply."""

from __future__ import annotations

import importlib.util
import itertools
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.serverproc import server_process

from trioecho.cli._cloadgen import BUCKET_FLOORS, BenchStats, LoadGenerator, bucket_index
from trioecho.cli.bench import measure
from trioecho.errors import LoadGeneratorError
from trioecho.framing.base import FramingName
from trioecho.services.echo import GREETING, REPLY_SUFFIX


@pytest.mark.parametrize(
    ("framing", "depth", "size"), [("line", 1, 64), ("len", 16, 16), ("raw", 1, 100)]
)
def test_bench_against_the_service(framing: FramingName, depth: int, size: int) -> None:
    with server_process("--framing", framing) as server:
        result = measure(
            "127.0.0.1",
            server.port,
            connections=4,
            depth=depth,
            size=size,
            framing=framing,
            duration=0.5,
            warmup=0.1,
        )
        assert server.stop() == 0
    assert result.errors == 0, result.last_error
    assert result.messages > 0
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]


def fake_server(reply_suffix: bytes) -> tuple[socket.socket, threading.Thread]:
    """A line server that greets correctly but answers with ``reply_suffix``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(GREETING + b"\n")
            buffer = b""
            try:
                while chunk := conn.recv(65536):
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    conn.sendall(b"".join(line + reply_suffix + b"\n" for line in lines))
            except OSError:  # the load generator hung up on a wrong reply
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_a_wrong_reply_is_counted_as_an_error() -> None:
    listener, _thread = fake_server("不".encode())
    with (
        listener,
        LoadGenerator(
            "127.0.0.1", listener.getsockname()[1], connections=1, depth=1, size=8, framing="line"
        ) as load,
    ):
        stats = load.run(0.5)
    assert stats.errors == 1
    assert stats.received == 0
    assert stats.last_error == "wrong reply (length, content or suffix)"
    assert stats.open_connections == 0


def test_the_right_suffix_passes_the_same_check() -> None:
    listener, _thread = fake_server(REPLY_SUFFIX)
    with (
        listener,
        LoadGenerator(
            "127.0.0.1", listener.getsockname()[1], connections=1, depth=4, size=8, framing="line"
        ) as load,
    ):
        stats = load.run(0.3)
    assert stats.errors == 0
    assert stats.received > 0


def test_wrong_framing_is_refused_at_the_greeting() -> None:
    with (
        server_process("--framing", "line") as server,
        pytest.raises(LoadGeneratorError, match="greeting"),
    ):
        LoadGenerator("127.0.0.1", server.port, connections=1, depth=1, size=8, framing="len")


def test_refused_connection() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: refused
        port = sock.getsockname()[1]
        with pytest.raises(LoadGeneratorError, match="connect"):
            LoadGenerator("127.0.0.1", port, connections=1, depth=1, size=8, framing="len")


def test_bench_command_json() -> None:
    with server_process("--framing", "len") as server:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "trioecho",
                "bench",
                "--port",
                str(server.port),
                "--framing",
                "len",
                "-c",
                "2",
                "-d",
                "4",
                "--duration",
                "0.5",
                "--warmup",
                "0.1",
                "--json",
            ],
            capture_output=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == 0 and report["messages"] > 0
    assert set(report["latency_ms"]) == {"p50", "p90", "p99", "p99.9", "max"}


def test_bench_reports_the_servers_cpu_per_message() -> None:
    """``--server-pid``: the server's CPU seconds over the measured seconds
    (from /proc), per message answered; a PID that is not there exits 2."""
    base = [sys.executable, "-m", "trioecho", "bench", "--framing", "len", "-c", "4"]
    with server_process("--framing", "len") as server:
        options = ["--port", str(server.port), "--duration", "1", "--warmup", "0.1"]
        pid = ["--server-pid", str(server.process.pid)]
        text = subprocess.run([*base, *options, *pid], capture_output=True, timeout=60)
        report = subprocess.run([*base, *options, *pid, "--json"], capture_output=True, timeout=60)
        missing = subprocess.run(
            [*base, *options, "--server-pid", "999999999"], capture_output=True, timeout=60
        )
    assert text.returncode == 0, text.stderr
    assert " us per message" in text.stdout.decode()
    result = json.loads(report.stdout)
    # The server spent CPU answering; not more than the wall time (one thread).
    assert 0 < result["server_cpu_seconds"] <= result["seconds"] * 1.5
    assert missing.returncode == 2
    assert "--server-pid 999999999" in missing.stderr.decode()


def test_latency_histogram_buckets_and_percentiles() -> None:
    assert BUCKET_FLOORS[:17] == (*range(16), 16)
    assert all(a < b for a, b in itertools.pairwise(BUCKET_FLOORS[:976]))
    assert BUCKET_FLOORS[-1] == 2**64 - 1  # beyond any latency: never filled
    histogram = [0] * len(BUCKET_FLOORS)
    histogram[100], histogram[200] = 99, 1
    stats = BenchStats(0, 100, 0, 0, 0, 10**12, histogram, 0, "")
    assert stats.percentile_ns(0.5) == BUCKET_FLOORS[100]
    assert stats.percentile_ns(0.999) == BUCKET_FLOORS[200]


def test_python_side_latencies_land_in_the_c_histogram_buckets() -> None:
    """The TLS load generator files latencies with the C bucket function, so
    both generators' percentiles mean the same."""
    floors = BUCKET_FLOORS
    for latency in [0, 1, 15, 16, 17, 31, 32, 1000, 123_456, 10**9, 2**40 + 12345]:
        bucket = bucket_index(latency)
        assert floors[bucket] <= latency < floors[bucket + 1], latency
    stats = BenchStats.empty()
    for latency in (1_000, 2_000, 3_000, 1_000_000):
        stats.record_latency(latency)
    assert stats.max_latency_ns == 1_000_000
    assert sum(stats.histogram) == 4
    assert stats.percentile_ns(0.5) == floors[bucket_index(2_000)] == 1_984  # 2^10 + 15 x 2^6
    assert stats.percentile_ns(1.0) == floors[bucket_index(1_000_000)]


def test_the_framer_benchmark_runs_every_case() -> None:
    """``benchmarks/bench_framer.py``, one quick round: every framing and
    splitter measured, every splitter returning every frame (it asserts so)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_framer.py"
    spec = importlib.util.spec_from_file_location("bench_framer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.run(1, sizes=(16,))
    assert [(framing, name) for framing, _, name, _, _ in rows] == [
        (framing, name)
        for framing, baseline in (
            ("len", "struct loop"),
            ("line", "bytes.split"),
            ("typed", "typed loop"),
            ("varint", "varint loop"),
        )
        for name in (baseline, "trioecho c", "trioecho python")
    ]
    assert all(ns > 0 for _, _, _, ns, _ in rows)


@pytest.mark.parametrize("depth", [1, 16])
def test_the_load_generator_ends_its_connections_cleanly(depth: int) -> None:
    """With messages still in flight when it stops, the generator sends FIN
    and reads to the server's end: the server logs every connection as
    closed, none as reset or broken."""
    with server_process("--framing", "len", "-v") as server:
        with LoadGenerator(
            "127.0.0.1", server.port, connections=20, depth=depth, size=64, framing="len"
        ) as load:
            stats = load.run(0.5)
            assert stats.received > 0
        deadline = time.monotonic() + 10
        while sum(": closed" in line for line in server.log) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.stop() == 0
    assert sum(line.endswith(": connected") for line in server.log) == 20
    assert sum(line.endswith(": closed") for line in server.log) == 20
    noisy = [line for line in server.log if "reset" in line or "broken" in line]
    assert noisy == []
