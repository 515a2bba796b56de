"""The relay streams messages larger than its reads: real PostgreSQL rows of
tens of megabytes, and a thousand clients with 2 MiB frames at once within
the memory budget, a canary answered throughout.  Real processes; memory
from /proc."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import trio
from support.liveservers import LiveServer, postgresql_server
from support.serverproc import ServerProcess

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
GREETING_AND_REPLY_SUFFIX = "你好欢迎你".encode(), "好".encode()


async def read_frame(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    """One length-prefixed frame, ``buffer`` holding what was read past it."""
    while True:
        if len(buffer) >= 4:
            (length,) = struct.unpack_from(">I", buffer)
            if len(buffer) >= 4 + length:
                frame = bytes(buffer[4 : 4 + length])
                del buffer[: 4 + length]
                return frame
        chunk = await stream.receive_some(1 << 16)
        if not chunk:
            raise EOFError(f"closed with {len(buffer)} bytes of a frame")
        buffer += chunk


async def one_client(port: int, index: int, done: list[int]) -> None:
    greeting, suffix = GREETING_AND_REPLY_SUFFIX
    payload = bytes([index % 251]) * FRAME
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        buffer = bytearray()
        assert await read_frame(stream, buffer) == greeting
        await stream.send_all(struct.pack(">I", FRAME) + payload)
        assert await read_frame(stream, buffer) == payload + suffix
        done.append(index)


class Canary:
    """A client on its own thread asking every 50 ms; counts the answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.answers = 0
        self.slowest = 0.0
        self.stop = threading.Event()
        self.greeting = self._frame()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _frame(self) -> bytes:
        header = self._exactly(4)
        return self._exactly(struct.unpack(">I", header)[0])

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the canary's connection closed"
            data += chunk
        return data

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            began = time.monotonic()
            self.sock.sendall(struct.pack(">I", 4) + b"ping")
            assert self._frame() == "ping好".encode()
            self.slowest = max(self.slowest, time.monotonic() - began)
            self.answers += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        self.sock.close()


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
        canary = Canary(relay.port)
        assert canary.greeting == GREETING_AND_REPLY_SUFFIX[0]
        done: list[int] = []

        async def main() -> None:
            with trio.fail_after(240):
                async with trio.open_nursery() as nursery:
                    for index in range(CLIENTS):
                        nursery.start_soon(one_client, relay.port, index, done)

        trio.run(main)
        canary.close()
        assert sorted(done) == list(range(CLIENTS))  # every frame came back, intact
        assert canary.answers > 0 and canary.slowest < 5.0
        peak = relay.peak_rss_kib() * 1024
        print(
            f"relay RSS {idle / MIB:.1f} MiB idle, peak {peak / MIB:.1f} MiB; "
            f"canary {canary.answers} answers, slowest {canary.slowest:.3f} s"
        )
        assert peak <= (BUDGET_MIB + 64) * MIB
        assert not any("Traceback" in line for line in relay.log)
    finally:
        relay.close()
        upstream.close()
