"""trioecho.testing: the memory pair of message streams, and the framer
conformance check on every built-in framing and on broken framers."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import ClassVar

import pytest
import trio

from trioecho import (
    BaseRequestHandler,
    FramingConfig,
    LineFramer,
    MessageStream,
    make_framer,
    presets,
)
from trioecho._backend import Implementation
from trioecho.framing.base import Buffer, FramingName
from trioecho.testing import check_framer, connect_in_memory, memory_message_stream_pair

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup


@pytest.mark.parametrize("framing", ["line", "len", "varint"])
def test_check_framer_passes_the_builtin_framings(
    framing: FramingName, impl: Implementation
) -> None:
    check_framer(lambda: make_framer(framing, implementation=impl))


def test_check_framer_passes_configured_framings(impl: Implementation) -> None:
    check_framer(FramingConfig("len", length_bytes=1, implementation=impl).new_framer)
    check_framer(FramingConfig("line", delimiter=b"\r\n", implementation=impl).new_framer)
    check_framer(
        lambda: FramingConfig(**{**presets.mqtt().__dict__, "implementation": impl}).new_framer(),
        [bytes([0x30, 1, 0x41])],
    )
    check_framer(lambda: make_framer("fixed", frame_size=3, implementation=impl), [b"abc", b"def"])


class ForgetsPartialFrames(LineFramer):
    """A broken framer: it drops what it buffered between two feeds."""

    def feed(self, data: Buffer) -> list[bytes]:
        lines = super().feed(data)
        self._buffer.clear()
        return lines


class EncodeManySkipsTheLast:
    """A broken framer: encode_many() leaves the last payload out."""

    def __init__(self) -> None:
        self._inner = LineFramer()
        self.max_frame = self._inner.max_frame

    @property
    def buffered(self) -> int:
        return self._inner.buffered

    def feed(self, data: Buffer) -> list[bytes]:
        return self._inner.feed(data)

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def encode(self, payload: Buffer) -> bytes:
        return self._inner.encode(payload)

    def encode_many(self, payloads: Iterable[Buffer]) -> bytes:
        return self._inner.encode_many(list(payloads)[:-1])


def test_check_framer_names_what_broke() -> None:
    with pytest.raises(AssertionError, match=r"^fed one byte at a time, the frames differ"):
        check_framer(lambda: ForgetsPartialFrames(implementation="python"))
    with pytest.raises(AssertionError, match=r"^encode_many\(\) differs from encode\(\)"):
        check_framer(EncodeManySkipsTheLast)
    with pytest.raises(AssertionError, match=r"^fed whole, the frames differ"):
        check_framer(lambda: make_framer("raw"))  # raw keeps no boundaries
    with pytest.raises(ValueError, match="at least one payload"):
        check_framer(LineFramer, [])


async def test_memory_message_stream_pair() -> None:
    client, server = memory_message_stream_pair("len")
    async with client, server:
        await client.send_message(b"")
        await client.send_message(b"ping")
        assert await server.receive_message() == b""
        assert await server.receive_message() == b"ping"
        await server.send_message(b"pong")
        assert await client.receive_message() == b"pong"
        await client.aclose()
        with pytest.raises(trio.EndOfChannel):
            await server.receive_message()


def test_memory_message_stream_pair_refuses_a_non_framing() -> None:
    with pytest.raises(TypeError) as refused:
        memory_message_stream_pair(5)  # type: ignore[arg-type]
    assert str(refused.value) == (
        "framing must be a FramingConfig or a framing name (line, len, raw, varint, fixed), not int"
    )
    with pytest.raises(ValueError) as wrong:
        memory_message_stream_pair("lenn")
    assert str(wrong.value) == (
        "framing must be one of ('line', 'len', 'raw', 'varint', 'fixed'), not 'lenn'"
    )


class Greeter(BaseRequestHandler):
    """Greets, answers each message reversed, and records its life."""

    calls: ClassVar[list[str]] = []

    async def setup(self) -> None:
        self.calls.append(f"setup {self.client_address} {self.server}")
        await self.request.send_message(b"hi")

    def respond(self, message: bytes) -> bytes | None:
        if message == b"q":
            self.end_session()
            return None
        return message[::-1]

    async def finish(self) -> None:
        self.calls.append("finish")


async def test_connect_in_memory_runs_a_handler_class_as_a_server_does() -> None:
    Greeter.calls = []
    async with connect_in_memory(Greeter, "len", client_address=("test", 1)) as client:
        assert await client.receive_message() == b"hi"
        await client.send_messages([b"abc", b"", b"xy"])
        assert [await client.receive_message() for _ in range(3)] == [b"cba", b"", b"yx"]
        await client.send_message(b"q")
        with pytest.raises(trio.EndOfChannel):
            await client.receive_message()
    assert Greeter.calls == ["setup ('test', 1) None", "finish"]


async def test_connect_in_memory_runs_a_function_and_ends_it_at_the_clients_close() -> None:
    seen: list[bytes] = []

    async def collect(stream: MessageStream) -> None:
        async for message in stream:
            seen.append(message)

    async with connect_in_memory(collect) as client:
        await client.send_messages([b"a", b"b"])
    assert seen == [b"a", b"b"]  # the block's end closed the client: the handler saw EOF


async def test_connect_in_memory_raises_what_the_handler_raised() -> None:
    async def broken(stream: MessageStream) -> None:
        await stream.receive_message()
        raise KeyError("the handler's bug")

    with pytest.raises(ExceptionGroup) as raised:
        async with connect_in_memory(broken) as client:
            await client.send_message(b"x")
            await trio.sleep_forever()
    assert raised.group_contains(KeyError, match="the handler's bug")


def test_connect_in_memory_refuses_a_handler_no_server_could_call() -> None:
    def plain(stream: MessageStream) -> None:
        pass

    with pytest.raises(TypeError, match=r"\.plain must be async def: a plain function cannot wait"):
        connect_in_memory(plain)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="framing must be one of"):
        connect_in_memory(Greeter, "lines")
