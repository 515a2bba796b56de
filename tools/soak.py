"""Soak test: many connections, mixed traffic, random disconnects; nothing lost, nothing leaked.

Starts ``python -m trioecho`` on a free loopback port and runs CONNECTIONS
client tasks until the deadline.  Each task runs sessions one after another:
connect, take the greeting, then ping-pong, pipeline, or pipeline in random
chunks, and end either gracefully (``q``, or a half-close) or abruptly (a
close or a reset, often in the middle of a frame).  Every reply is checked:
in order and exact; a graceful session must get every reply.  After a
warm-up round the soak runs in two halves; each time the clients leave, the
server's file descriptors must be back at the idle count, and its idle RSS
after the second half within RSS_TOLERANCE_KIB of the first half's (the
first half brings CPython's and glibc's allocators to their steady state).

    python tools/soak.py                 # 10 minutes, 1000 connections
    python tools/soak.py --duration 30   # what CI runs

Exits 0 when no reply was lost or misordered and nothing leaked.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import socket
import struct
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.serverproc import ServerProcess

from trioecho import FramingConfig
from trioecho.services.echo import GREETING, REPLY_SUFFIX
from trioecho.stream.message_stream import MessageStream

RSS_TOLERANCE_KIB = 16 * 1024


@dataclasses.dataclass
class Tally:
    sessions: int = 0
    graceful: int = 0
    abrupt: int = 0
    sent: int = 0
    replies: int = 0
    lost: int = 0
    misordered: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


async def session(port: int, config: FramingConfig, rng: random.Random, tally: Tally) -> None:
    framer = config.new_framer()
    transport = await trio.open_tcp_stream("127.0.0.1", port)
    stream = MessageStream(transport, config.new_framer())
    mode = rng.choice(["pingpong", "pipeline", "chunked"])
    ending = rng.choice(["q", "half-close", "close", "reset", "mid-frame"])
    messages = [
        f"{mode} {i} ".encode() + bytes(rng.choices(range(256), k=rng.choice([0, 8, 64, 900])))
        for i in range(rng.randint(1, 200))
    ]
    messages = [m.replace(b"\n", b" ") for m in messages]
    tally.sessions += 1
    got = 0

    async def expect(count: int) -> None:
        nonlocal got
        for _ in range(count):
            reply = await stream.receive_message()
            if reply != messages[got] + REPLY_SUFFIX:
                tally.misordered += 1
                raise AssertionError(f"reply {got} of a {mode} session is wrong")
            got += 1
            tally.replies += 1

    try:
        async with stream:
            if await stream.receive_message() != GREETING:
                tally.misordered += 1
                return
            abrupt = ending in ("close", "reset", "mid-frame")
            cut = rng.randint(0, len(messages)) if abrupt else len(messages)
            if mode == "pingpong":
                for message in messages[:cut]:
                    await stream.send_message(message)
                    tally.sent += 1
                    await expect(1)
            else:
                wire = framer.encode_many(messages[:cut])
                tally.sent += cut
                pos = 0
                while pos < len(wire):
                    size = len(wire) if mode == "pipeline" else rng.choice([1, 3, 17, 512, 4096])
                    await transport.send_all(wire[pos : pos + size])
                    pos += size
                if not abrupt:
                    await expect(cut)
                else:
                    await expect(rng.randint(0, cut))
            if ending == "q":
                await stream.send_message(b"q")
                tally.graceful += 1
            elif ending == "half-close":
                await transport.send_eof()
                tally.graceful += 1
            else:
                tally.abrupt += 1
                if ending == "mid-frame":
                    await transport.send_all(framer.encode(b"cut short")[:-3])
                if ending in ("reset", "mid-frame"):
                    transport.socket.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                return
            try:
                await stream.receive_message()
                tally.misordered += 1  # nothing may follow the last reply
            except trio.EndOfChannel:
                pass
    except (AssertionError, trio.EndOfChannel, OSError, trio.BrokenResourceError) as exc:
        if ending not in ("close", "reset", "mid-frame"):
            tally.lost += len(messages) - got
            tally.errors.append(f"{mode}/{ending}: {type(exc).__name__}: {exc}")


async def client(
    port: int, config: FramingConfig, seed: int, deadline: float, tally: Tally
) -> None:
    rng = random.Random(seed)
    while trio.current_time() < deadline:
        try:
            await session(port, config, rng, tally)
        except Exception as exc:  # a session must never break the soak itself
            tally.errors.append(f"session: {type(exc).__name__}: {exc}")
        await trio.sleep(rng.random() * 0.05)


async def run_clients(
    port: int, config: FramingConfig, connections: int, seconds: float, seed: int
) -> Tally:
    tally = Tally()
    deadline = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for index in range(connections):
            nursery.start_soon(client, port, config, seed * 100_003 + index, deadline, tally)
    return tally


def wait_for_idle(server: ServerProcess, fds: int, timeout: float = 30) -> int:
    """Wait until the server holds at most ``fds`` descriptors; return its count."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and server.open_fds() > fds:
        time.sleep(0.1)
    return server.open_fds()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--framing", choices=("line", "len"), default="len")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    config = FramingConfig(args.framing)
    server = ServerProcess(
        "--framing", args.framing, "--max-connections", str(args.connections * 2), "-q"
    )
    try:
        start_fds, start_rss = server.open_fds(), server.rss_kib()
        warmup = max(10.0, args.duration * 0.1)
        trio.run(run_clients, server.port, config, args.connections, warmup, args.seed + 1)
        warm_fds = wait_for_idle(server, start_fds)
        warm_rss = server.rss_kib()
        # Two halves: the first brings the allocators to their steady state
        # (CPython and glibc keep freed memory for reuse), the second must not
        # grow from there.
        began = time.monotonic()
        tally = Tally()
        idle: list[tuple[int, int]] = []
        for half in range(2):
            part = trio.run(
                run_clients,
                server.port,
                config,
                args.connections,
                args.duration / 2,
                args.seed * 2 + half,
            )
            for field in dataclasses.fields(Tally):
                value = getattr(part, field.name)
                setattr(tally, field.name, getattr(tally, field.name) + value)
            idle.append((wait_for_idle(server, warm_fds), server.rss_kib()))
        elapsed = time.monotonic() - began
        (mid_fds, mid_rss), (end_fds, end_rss) = idle
        code = server.stop()
    finally:
        server.close()

    print(f"soak: {args.connections} connections, {elapsed:.0f} s, {args.framing} framing")
    print(f"  sessions {tally.sessions} (graceful {tally.graceful}, abrupt {tally.abrupt})")
    print(f"  messages sent {tally.sent}, replies checked {tally.replies}")
    print(f"  lost {tally.lost}, misordered {tally.misordered}")
    print(
        f"  server fds: start {start_fds}, idle after warm-up {warm_fds}, "
        f"after the first half {mid_fds}, after the soak {end_fds}"
    )
    print(
        f"  server RSS KiB: start {start_rss}, idle after warm-up {warm_rss}, "
        f"after the first half {mid_rss}, after the soak {end_rss}"
    )
    print(f"  server exit code {code}")
    for error in tally.errors[:10]:
        print(f"  error: {error}")
    failures = []
    if tally.lost or tally.misordered or tally.errors:
        failures.append("replies lost or misordered")
    if end_fds > warm_fds or mid_fds > warm_fds:
        failures.append("file descriptors leaked")
    if end_rss - mid_rss > RSS_TOLERANCE_KIB:
        failures.append("memory grew in the second half")
    if code != 0:
        failures.append("server did not exit 0")
    print("soak: " + ("FAILED: " + ", ".join(failures) if failures else "ok"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
