"""Test helpers: in-memory transports and an echo-service client."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from trioecho import (
    FrameTooLongError,
    FramingConfig,
    IncompleteFrameError,
    LineFramer,
    MalformedFrameError,
    MessageServer,
)
from trioecho.stream.message_stream import MessageStream


class OneBytePerRead(trio.abc.Stream):
    """Wraps a stream so that every receive returns at most one byte."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(1)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


def socket_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two ``trio.SocketStream`` over a connected socket pair: the direct
    socket transport (``trioecho.io.socket_transport.SocketTransport``)."""
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


def stream_pairs() -> dict[str, object]:
    """Factories of connected (client, server) transport pairs, by name."""
    return {
        "socket": socket_stream_pair,
        "memory": trio.testing.memory_stream_pair,
        "lockstep": trio.testing.lockstep_stream_pair,
        "one-byte": lambda: tuple(OneBytePerRead(s) for s in trio.testing.memory_stream_pair()),
    }


def message_pair(
    make_pair: object, framing: str = "line", **options: object
) -> tuple[MessageStream, MessageStream]:
    config = FramingConfig(framing, **options)  # type: ignore[arg-type]
    client, server = make_pair()  # type: ignore[operator]
    return MessageStream(client, config.new_framer()), MessageStream(server, config.new_framer())


@asynccontextmanager
async def running(server: MessageServer) -> AsyncIterator[int]:
    """Serve in the background; yield the port; shut down (and wait) on exit."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve)
        yield listeners[0].socket.getsockname()[1]
        server.shutdown()


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (clamped, deduplicated, sorted)."""
    bounds = [0, *sorted({min(c, len(data)) for c in cuts}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def framer_events(framer: Any, chunks: list[bytes]) -> list[tuple[Any, ...]]:
    """Everything a framer reports for ``chunks``, in order, as plain values;
    stops where the framer breaks (a line framer in discard mode goes on)."""
    out: list[tuple[Any, ...]] = []
    for chunk in chunks:
        data = chunk
        while True:
            try:
                out.append(("frames", framer.feed(data), framer.buffered))
            except FrameTooLongError as exc:
                out.append(("too long", exc.frames, exc.limit, exc.length, str(exc)))
                if isinstance(framer, LineFramer) and framer.on_too_long == "discard":
                    data = b""
                    continue
                return out
            except MalformedFrameError as exc:
                out.append(("malformed", exc.frames, exc.value, str(exc)))
                return out
            break
    try:
        framer.feed_eof()
        out.append(("eof",))
    except IncompleteFrameError as exc:
        out.append(("incomplete", exc.buffered))
    return out


def received(evs: list[tuple[Any, ...]]) -> list[bytes]:
    """Every frame reported, whether returned or carried by an error."""
    return [f for e in evs if e[0] in ("frames", "too long", "malformed") for f in e[1]]
