"""Helpers for testing code built on trioecho, in the spirit of ``trio.testing``.

* :func:`memory_message_stream_pair`: two connected :class:`MessageStream`\\ s
  over ``trio.testing.memory_stream_pair``, for testing a handler or a
  protocol without sockets::

      client, server = memory_message_stream_pair("len")
      async with trio.open_nursery() as nursery:
          nursery.start_soon(my_handler, server)
          await client.send_message(b"ping")
          assert await client.receive_message() == b"pong"

* :func:`connect_in_memory`: a handler (a :class:`BaseRequestHandler`
  subclass or an ``async def`` function) served on one in-memory
  connection, the client's end yielded::

      async with connect_in_memory(Echo, "line") as client:
          await client.send_message(b"hi")
          assert await client.receive_message() == b"hi"

* :func:`check_framer`: checks that a framer (your own, or a configured
  one) keeps the framer contract that :class:`MessageStream` relies on,
  raising ``AssertionError`` with what broke.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio.testing

from trioecho.errors import FramingError, IncompleteFrameError
from trioecho.framing.base import Framer
from trioecho.framing.config import FramingConfig, framing_config
from trioecho.server.handler import Handler, check_handler, run_handler
from trioecho.stream.message_stream import MessageStream

__all__ = ["check_framer", "connect_in_memory", "memory_message_stream_pair"]

# Payloads every framing that keeps message boundaries can carry with its
# defaults (no line delimiter, none over a 1-byte length header).
_PAYLOADS: tuple[bytes, ...] = (b"a", b"hello", bytes(range(32, 127)), b"x" * 200, "你好".encode())


def memory_message_stream_pair(
    framing: FramingConfig | str = "line",
) -> tuple[MessageStream, MessageStream]:
    """Two connected message streams over Trio's in-memory stream pair, the
    same ``framing`` on both ends (a :class:`FramingConfig` or a framing
    name, as ``FramingConfig(name)``)."""
    config = framing_config(framing)
    left, right = trio.testing.memory_stream_pair()
    return MessageStream(left, config.new_framer()), MessageStream(right, config.new_framer())


def connect_in_memory(
    handler: Handler,
    framing: FramingConfig | str = "line",
    *,
    client_address: Any = ("memory", 0),
) -> AbstractAsyncContextManager[MessageStream]:
    """Serve ``handler`` on one in-memory connection; ``async with`` it to
    get the client's end.

    The handler and the framing are checked here, as
    :class:`~trioecho.MessageServer` checks them (one ``TypeError`` or
    ``ValueError`` for a handler no server could call, or an unknown
    framing).  The handler runs as a server runs it: a
    :class:`BaseRequestHandler` gets ``setup()``, ``handle()`` (or
    ``respond()`` per message) and ``finish()``, with ``client_address`` as
    given and ``server`` None; a function gets the stream.  Both ends use
    ``framing``.  When the block ends, the client's end closes and the
    handler is waited for (it sees the end of input); an exception the
    handler raised propagates from the ``async with``, in an
    ``ExceptionGroup`` as from any Trio nursery.
    """
    return _serve_in_memory(check_handler(handler), framing_config(framing), client_address)


@asynccontextmanager
async def _serve_in_memory(
    serve: Handler, framing: FramingConfig, client_address: Any
) -> AsyncIterator[MessageStream]:
    client, server_end = memory_message_stream_pair(framing)

    async def run() -> None:
        async with server_end:
            await run_handler(serve, server_end, client_address, None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        async with client:
            yield client


def check_framer(
    new_framer: Callable[[], Framer],
    payloads: Sequence[bytes] = _PAYLOADS,
    *,
    seed: int = 0,
) -> None:
    """Check the framer contract on framers made by ``new_framer()``.

    The framing must keep message boundaries (every framing but ``raw``).
    For ``payloads`` (bytes the framing can carry; by default five, from 1
    to 200 bytes, none holding a line delimiter): what ``encode_many``
    returns is what ``encode`` returns, payload by payload; fed back whole,
    one byte at a time and in random pieces (``seed``), it gives back every
    payload, in order, with ``buffered`` at 0 afterwards and ``feed_eof()``
    quiet; ``buffered`` counts the bytes of an unfinished frame; the end of
    the input inside a frame raises :class:`IncompleteFrameError`.  Raises
    ``AssertionError`` naming the first check that failed.
    """
    if not payloads:
        raise ValueError("check_framer needs at least one payload")
    framer = new_framer()
    frames = [framer.encode(payload) for payload in payloads]
    wire = framer.encode_many(payloads)
    _expect(wire == b"".join(frames), "encode_many() differs from encode() payload by payload")
    pieces = random.Random(seed)
    feeds = {
        "whole": [wire],
        "one byte at a time": [wire[i : i + 1] for i in range(len(wire))],
        "random pieces": _random_pieces(wire, pieces),
    }
    for how, chunks in feeds.items():
        reader = new_framer()
        got: list[bytes] = []
        for chunk in chunks:
            got.extend(bytes(frame) for frame in reader.feed(chunk))
        _expect(got == list(payloads), f"fed {how}, the frames differ from the payloads")
        _expect(reader.buffered == 0, f"fed {how}, buffered is {reader.buffered}, not 0")
        try:
            reader.feed_eof()
        except FramingError as exc:
            raise AssertionError(
                f"fed {how}, feed_eof() after whole frames raised {exc!r}"
            ) from exc
    first = frames[0]
    if len(first) > 1:
        reader = new_framer()
        _expect(reader.feed(first[:-1]) == [], "a frame less its last byte gave a frame")
        _expect(
            reader.buffered == len(first) - 1,
            f"buffered is {reader.buffered} with {len(first) - 1} bytes of a frame fed",
        )
        try:
            reader.feed_eof()
        except IncompleteFrameError:
            pass
        else:
            raise AssertionError("feed_eof() inside a frame did not raise IncompleteFrameError")


def _random_pieces(wire: bytes, rng: random.Random) -> list[bytes]:
    chunks, position = [], 0
    while position < len(wire):
        size = rng.randint(1, 64)
        chunks.append(wire[position : position + size])
        position += size
    return chunks


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)
