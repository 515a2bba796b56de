"""The relay streams messages larger than its reads: real PostgreSQL rows of
tens of megabytes, and a thousand clients with 2 MiB frames at once within
the memory budget, a canary answered throughout.  Real processes; memory
from /proc.  Frames around the relay's read size: ``test_relay_sizes.py``."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator

import pytest
import trio
from support.liveservers import LiveServer, postgresql_server
from support.relaypeers import read_frame
from support.serverproc import Canary, ServerProcess

from trioecho.services.echo import GREETING, REPLY_SUFFIX

MIB = 1 << 20


@pytest.fixture(scope="module")
def postgres() -> Iterator[LiveServer]:
    with postgresql_server() as server:
        yield server


def psql(port: int, query: str) -> subprocess.CompletedProcess[bytes]:
    """``query`` through psql's standard input (a long literal fits no argument)."""
    return subprocess.run(
        ["psql", f"host=127.0.0.1 port={port} user=postgres", "-X", "-A", "-t"],
        input=query.encode() + b";\n",
        capture_output=True,
        timeout=120,
    )


def test_rows_far_over_a_read_stream_through_with_the_presets_default(
    postgres: LiveServer,
) -> None:
    relay = ServerProcess(
        "--upstream", f"127.0.0.1:{postgres.port}", "--preset", "postgresql", command="relay"
    )
    try:
        before = relay.rss_kib()
        # A 32 MB row down (one DataRow message), an 8 MB literal up.
        down = psql(relay.port, "SELECT repeat('ab', 16000000)")
        assert down.returncode == 0, down.stderr
        assert down.stdout == b"ab" * 16_000_000 + b"\n"
        up = psql(relay.port, "SELECT length('" + "y" * 8_000_000 + "')")
        assert (up.returncode, up.stdout) == (0, b"8000000\n"), up.stderr
        # Streamed, not held: the relay grew by far less than one message.
        assert (relay.peak_rss_kib() - before) * 1024 < 8 * MIB
        assert not any("Traceback" in line for line in relay.log)
    finally:
        relay.close()


CLIENTS = 1000
FRAME = 2 * MIB
BUDGET_MIB = 64


async def one_client(port: int, index: int, done: list[int]) -> None:
    payload = bytes([index % 251]) * FRAME
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        buffer = bytearray()
        assert await read_frame(stream, buffer) == GREETING
        await stream.send_all(struct.pack(">I", FRAME) + payload)
        assert await read_frame(stream, buffer) == payload + REPLY_SUFFIX
        done.append(index)


def test_a_thousand_clients_with_2_mib_frames_stay_within_the_memory_budget() -> None:
    limits = ("--max-frame", str(4 * MIB), "--max-connections", "2000")
    upstream = ServerProcess("--framing", "len", *limits, "--memory-budget", "4096")
    relay = ServerProcess(
        "--upstream",
        f"127.0.0.1:{upstream.port}",
        "--framing",
        "len",
        *limits,
        "--memory-budget",
        str(BUDGET_MIB),
        command="relay",
    )
    try:
        idle = relay.rss_kib() * 1024
        canary = Canary(relay.port, "len", stall=5.0)  # reads its greeting
        done: list[int] = []

        async def main() -> None:
            with trio.fail_after(240):
                async with trio.open_nursery() as nursery:
                    for index in range(CLIENTS):
                        nursery.start_soon(one_client, relay.port, index, done)

        trio.run(main)
        canary.check()  # answered throughout, no reply over 5 s, and still now
        assert sorted(done) == list(range(CLIENTS))  # every frame came back, intact
        peak = relay.peak_rss_kib() * 1024
        print(
            f"relay RSS {idle / MIB:.1f} MiB idle, peak {peak / MIB:.1f} MiB; "
            f"canary {canary.exchanges} exchanges, slowest {canary.slowest:.3f} s"
        )
        assert peak <= (BUDGET_MIB + 64) * MIB
        assert not any("Traceback" in line for line in relay.log)
    finally:
        relay.close()
        upstream.close()
