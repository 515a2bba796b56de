"""``trioecho bench``: load any server that speaks trioecho's echo protocol.

The hot loop is C (``csrc/loadgen.c``, GIL released): N connections keep D
messages of S bytes in flight each, and every reply is checked (length,
content, ``好`` suffix); with ``--tls`` the load comes from
``_tlsload.TLSLoadGenerator`` (Trio over ``trio.SSLStream``) instead.  After
a warm-up, it reports messages and megabytes per second and latency
percentiles; ``--json`` prints the same for scripts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
import sys
from collections.abc import Callable
from typing import Any, TextIO

import trio

from trioecho.cli._cloadgen import BenchStats, LoadGenerator, LoadShape
from trioecho.cli._tlsload import TLSLoadGenerator
from trioecho.cli.configs import flag_values
from trioecho.errors import GreetingError, LoadGeneratorError, TrioEchoError
from trioecho.framing.base import FramingName
from trioecho.framing.config import FramingConfig
from trioecho.services.greeting import expect_greeting
from trioecho.stream.connect import open_message_stream

__all__ = ["BenchResult", "GreetingError", "probe", "process_cpu_seconds", "run_bench"]

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))
_STEP = 0.5  # seconds between progress updates


@dataclasses.dataclass
class BenchResult:
    host: str
    port: int
    framing: FramingName
    connections: int
    depth: int
    size: int
    seconds: float
    messages: int
    errors: int
    msgs_per_s: float
    mb_per_s: float
    latency_ms: dict[str, float]
    last_error: str
    tls: bool = False
    # CPU seconds the server spent during the measured seconds, when the
    # caller gave measure() a way to read them (server_cpu=).
    server_cpu_seconds: float | None = None

    @property
    def cpu_per_message_us(self) -> float | None:
        """Server CPU microseconds per message answered, if measured."""
        if self.server_cpu_seconds is None or not self.messages:
            return None
        return self.server_cpu_seconds / self.messages * 1e6

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _merge(parts: list[BenchStats]) -> BenchStats:
    return BenchStats(
        sent=sum(p.sent for p in parts),
        received=sum(p.received for p in parts),
        errors=sum(p.errors for p in parts),
        bytes_sent=sum(p.bytes_sent for p in parts),
        bytes_received=sum(p.bytes_received for p in parts),
        max_latency_ns=max((p.max_latency_ns for p in parts), default=0),
        histogram=[sum(column) for column in zip(*(p.histogram for p in parts), strict=False)],
        open_connections=parts[-1].open_connections if parts else 0,
        last_error=next((p.last_error for p in reversed(parts) if p.last_error), ""),
    )


def measure(
    host: str,
    port: int,
    *,
    connections: int,
    depth: int,
    size: int,
    framing: FramingName,
    duration: float,
    warmup: float,
    progress: TextIO | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_name: str | None = None,
    server_cpu: Callable[[], float] | None = None,
) -> BenchResult:
    """Connect, warm up, measure for ``duration`` seconds; return the result.

    With ``ssl_context`` every connection speaks TLS (the certificate checked
    against ``server_name``, default ``host``).  ``server_cpu`` reads the
    server's CPU seconds so far (a local server: see :func:`process_cpu_seconds`);
    it is read when the measured seconds start and end."""
    if framing == "raw" and depth != 1:
        raise ValueError("raw framing cannot tell replies apart: use --depth 1")
    # One connection first, the way the client connects: it resolves the
    # name (the C generator takes addresses) and checks the greeting, so a
    # framing mismatch is named at once instead of timing out.
    address = probe(host, port, framing, ssl_context=ssl_context, server_name=server_name)
    shape = LoadShape(connections, depth, size, framing)
    with (
        LoadGenerator(address, port, **dataclasses.asdict(shape))
        if ssl_context is None
        else TLSLoadGenerator(host, port, shape, ssl_context=ssl_context, server_name=server_name)
    ) as load:
        if warmup > 0:
            if progress is not None:
                print(f"\rwarming up for {warmup:g}s ...", end="", file=progress, flush=True)
            load.run(warmup)
        parts: list[BenchStats] = []
        elapsed = 0.0
        cpu_start = server_cpu() if server_cpu is not None else 0.0
        while elapsed < duration - 1e-9:
            step = min(_STEP, duration - elapsed)
            parts.append(load.run(step))
            elapsed += step
            if progress is not None:
                done = _merge(parts)
                print(
                    f"\r{elapsed:5.1f}s  {done.received / elapsed:12,.0f} msgs/s  "
                    f"p99 {done.percentile_ns(0.99) / 1e6:7.2f} ms  errors {done.errors}   ",
                    end="",
                    file=progress,
                    flush=True,
                )
            if parts[-1].open_connections == 0:
                break
        cpu = server_cpu() - cpu_start if server_cpu is not None else None
    if progress is not None:
        print(file=progress)
    total = _merge(parts)
    return BenchResult(
        host=host,
        port=port,
        framing=framing,
        connections=connections,
        depth=depth,
        size=size,
        seconds=elapsed,
        messages=total.received,
        errors=total.errors,
        msgs_per_s=total.received / elapsed if elapsed else 0.0,
        mb_per_s=(total.bytes_sent + total.bytes_received) / elapsed / 1e6 if elapsed else 0.0,
        latency_ms={
            **{name: total.percentile_ns(q) / 1e6 for name, q in PERCENTILES},
            "max": total.max_latency_ns / 1e6,
        },
        last_error=total.last_error,
        tls=ssl_context is not None,
        server_cpu_seconds=cpu,
    )


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its reaped threads
    so far, from ``/proc/PID/stat`` (Linux)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def probe(
    host: str,
    port: int,
    framing: FramingName,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> str:
    """Connect once and read the greeting; return the server's IP address.

    Raises ``OSError`` if nothing at ``host``:``port`` accepts,
    :class:`GreetingError` if the server's greeting is not in ``framing``
    and :class:`TLSHandshakeError` if TLS fails."""
    config = FramingConfig(framing)

    async def connect() -> str:
        stream = await open_message_stream(
            host, port, framing=config, ssl_context=ssl_context, server_hostname=server_name
        )
        async with stream:
            await expect_greeting(stream, config)
            tcp = stream.transport_stream
            if isinstance(tcp, trio.SSLStream):
                tcp = tcp.transport_stream
            assert isinstance(tcp, trio.SocketStream)
            return str(tcp.socket.getpeername()[0])

    return trio.run(connect)


def format_result(result: BenchResult) -> str:
    latency = "  ".join(f"{name} {value:.3f}" for name, value in result.latency_ms.items())
    lines = [
        f"{result.connections} connections x depth {result.depth}, {result.size}-byte "
        f"messages, {result.framing} framing{' over TLS' if result.tls else ''}, "
        f"{result.seconds:.1f}s to "
        f"{result.host}:{result.port}",
        f"  {result.msgs_per_s:,.0f} msgs/s  {result.mb_per_s:.1f} MB/s  "
        f"({result.messages:,} replies checked, {result.errors} errors)",
        f"  latency ms: {latency}",
    ]
    if result.cpu_per_message_us is not None:
        lines.append(
            f"  server CPU: {result.server_cpu_seconds:.2f}s, "
            f"{result.cpu_per_message_us:.2f} us per message"
        )
    if result.errors:
        lines.append(f"  last error: {result.last_error}")
    return "\n".join(lines)


def run_bench(
    args: Any, out: TextIO | None = None, *, ssl_context: ssl.SSLContext | None = None
) -> int:
    """The ``bench`` command (over TLS with ``ssl_context``): returns the exit
    code: 0, or 1 if the server could not be reached, spoke another framing,
    answered nothing or answered any message wrong."""
    out = out if out is not None else sys.stdout
    progress = sys.stderr if (not args.json and sys.stderr.isatty()) else None
    pid = getattr(args, "server_pid", None)
    server_cpu = None
    if pid is not None:
        try:
            process_cpu_seconds(pid)
        except OSError as exc:
            print(f"trioecho bench: --server-pid {pid}: {exc.strerror or exc}", file=sys.stderr)
            return 2

        def server_cpu() -> float:
            return process_cpu_seconds(pid)

    try:
        result = measure(
            args.host,
            args.port,
            **flag_values(args, "connections", "depth", "size", "framing", "duration", "warmup"),
            progress=progress,
            ssl_context=ssl_context,
            server_name=args.tls_server_name,
            server_cpu=server_cpu,
        )
    except ValueError as exc:  # options that do not go together
        print(f"trioecho bench: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{args.host}:{args.port}"
        print(f"trioecho bench: cannot connect to {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except (LoadGeneratorError, TrioEchoError) as exc:
        print(f"trioecho bench: {exc}", file=sys.stderr)
        return 1
    print(result.to_json() if args.json else format_result(result), file=out)
    if result.messages == 0:
        print("trioecho bench: no replies at all", file=sys.stderr)
        return 1
    return 1 if result.errors else 0
