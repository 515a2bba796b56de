"""Every size a server accepts is answered.

Valid messages whose sizes cross every internal boundary -- 0 and 1 byte,
the receive size (64 KiB), the framer's scratch space (64 KiB), the echo
session's output capacity (256 KiB, for the reply: the size where the first
release froze), and the configured ``--max-frame`` -1/0 -- go to a server
on each of its three paths (the C echo session, ``--generic``, the
pure-Python twins) and come back byte for byte, while a second client (the
canary) keeps getting its replies.  In-process on loopback, with the
framing ``trioecho serve`` builds from its options
(:mod:`support.cli_inprocess`); a real server process's fairness under a
flood is ``test_hostile.py``'s.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging

import pytest
import trio
import trio.testing
from support.cli_inprocess import served_framing
from support.helpers import running

from trioecho import FramingConfig, MessageServer
from trioecho.framing.base import DEFAULT_MAX_FRAME
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler, GenericEchoHandler
from trioecho.services.echo_session import DEFAULT_ECHO_CAPACITY
from trioecho.stream.message_stream import DEFAULT_RECEIVE_SIZE

# path -> (the handler `trioecho serve OPTIONS` runs, OPTIONS, the framing's implementation)
PATHS: dict[str, tuple[type[EchoHandler], tuple[str, ...], str | None]] = {
    "c": (EchoHandler, (), None),
    "generic": (GenericEchoHandler, ("--generic",), None),
    "python": (EchoHandler, (), "python"),  # TRIOECHO_PUREPYTHON=1
}
LINE_MAX_FRAME = DEFAULT_ECHO_CAPACITY + 40_000
FRAMER_SCRATCH = 64 * 1024  # trioecho.framing._cframer._SCRATCH_CAPACITY


def sizes(max_frame: int, framing_bytes: int) -> list[int]:
    """Payload sizes at each boundary, -1/0/+1, up to max_frame.
    ``framing_bytes``: what a reply adds besides the suffix (header or delimiter)."""
    reply_extra = framing_bytes + len(REPLY_SUFFIX)
    points = {
        0,
        1,
        DEFAULT_RECEIVE_SIZE,
        DEFAULT_RECEIVE_SIZE - framing_bytes,  # the whole frame fills one read
        FRAMER_SCRATCH,
        DEFAULT_ECHO_CAPACITY - reply_extra,  # the reply fills the output buffer
        max_frame,
    }
    found = {p + d for p, d in itertools.product(points, (-1, 0, 1))}
    return sorted(s for s in found if 0 <= s <= max_frame)


def encode(framing: str, payload: bytes) -> bytes:
    if framing == "len":
        return len(payload).to_bytes(4, "big") + payload
    return payload + b"\n"


async def receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    """``size`` bytes, or fewer if the stream ends first."""
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(min(size - len(data), 1 << 20))
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def exchange(stream: trio.SocketStream, framing: str, size: int) -> None:
    message = bytes([65 + size % 26]) * size
    await stream.send_all(encode(framing, message))
    expected = encode(framing, message + REPLY_SUFFIX)
    reply = await receive_exactly(stream, len(expected))
    assert reply == expected, f"{framing} {size}: {len(reply)} bytes back"


class Canary:
    """A well-behaved client doing ping-pong in a task while the test sends
    its sizes: :meth:`check` asserts every reply was right, none took
    ``stall`` seconds or more, and it is still answered."""

    def __init__(self, port: int, framing: str, stall: float) -> None:
        self.port, self.framing, self.stall = port, framing, stall
        self.exchanges = 0
        self.slowest = 0.0
        self._stop = trio.Event()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        async with stream:
            greeting = encode(self.framing, GREETING)
            assert await receive_exactly(stream, len(greeting)) == greeting
            task_status.started()
            while not self._stop.is_set():
                message = f"ping {self.exchanges}".encode()
                expected = encode(self.framing, message + REPLY_SUFFIX)
                start = trio.current_time()
                await stream.send_all(encode(self.framing, message))
                assert await receive_exactly(stream, len(expected)) == expected
                self.slowest = max(self.slowest, trio.current_time() - start)
                self.exchanges += 1
                await trio.sleep(0.01)

    async def check(self, minimum: int = 5) -> None:
        """``minimum`` more exchanges succeed now, after whatever the test did."""
        target = self.exchanges + minimum
        with trio.fail_after(10):
            while self.exchanges < target:
                await trio.sleep(0.01)
        self._stop.set()
        assert self.slowest < self.stall, f"a reply took {self.slowest:.2f}s"


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("framing", ["len", "line"])
async def test_every_size_up_to_max_frame_is_answered(
    framing: str,
    path: str,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    caplog.set_level(logging.INFO)  # serve's level
    handler, options, implementation = PATHS[path]
    max_frame = DEFAULT_MAX_FRAME if framing == "len" else LINE_MAX_FRAME
    server_options = ["--framing", framing, *options]
    if framing == "line":
        server_options += ["--max-frame", str(max_frame)]
    config: FramingConfig = served_framing(*server_options)
    if implementation is not None:
        config = dataclasses.replace(config, implementation=implementation)  # type: ignore[arg-type]
    server = MessageServer(handler, port=0, framing=config)
    async with running(server) as port, trio.open_nursery() as nursery:
        canary = Canary(port, framing, stall=1.0)
        await nursery.start(canary.run)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            greeting = encode(framing, GREETING)
            assert await receive_exactly(stream, len(greeting)) == greeting
            every = sizes(max_frame, 4 if framing == "len" else 1)
            assert 262_138 in every or framing == "line"  # the first release froze here
            for size in every:
                await exchange(stream, framing, size)
            # and all of them at once, as one pipelined burst
            burst = b"".join(encode(framing, bytes([97 + s % 26]) * s) for s in every)
            nursery.start_soon(stream.send_all, burst)
            for size in every:
                expected = encode(framing, bytes([97 + size % 26]) * size + REPLY_SUFFIX)
                assert await receive_exactly(stream, len(expected)) == expected
            # one byte over the limit: refused, the connection closed, the server fine
            await stream.send_all(encode(framing, b"x" * (max_frame + 1)))
            assert await receive_exactly(stream, 1) == b""
        await canary.check()
    messages = [record.getMessage() for record in caplog.records]
    assert [m for m in messages if "FrameTooLongError" in m]
    assert not [r for r in caplog.records if r.exc_info or "handler raised" in r.getMessage()]
