"""The seed's echo service: byte-exact over in-memory streams and over TCP."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from support.helpers import message_pair, stream_pairs

from trioecho import FramingConfig, LengthPrefixedFramer
from trioecho.server.server import MessageServer
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler
from trioecho.stream.message_stream import MessageStream

PAIRS = stream_pairs()


def test_greeting_and_suffix_are_the_seeds() -> None:
    assert (
        GREETING
        == "你好欢迎你".encode()
        == b"\xe4\xbd\xa0\xe5\xa5\xbd\xe6\xac\xa2\xe8\xbf\x8e\xe4\xbd\xa0"
    )
    assert REPLY_SUFFIX == "好".encode() == b"\xe5\xa5\xbd"


async def run_echo(server_stream: MessageStream) -> None:
    """Serve one connection as the server does: handle, then close."""
    async with server_stream:
        await EchoHandler(server_stream, ("test", 0), None).handle()  # type: ignore[arg-type]


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("framing", ["line", "len"])
async def test_echo_session(
    pair: str, framing: str, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = message_pair(PAIRS[pair], framing)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_echo, server)
            assert await client.receive_message() == GREETING
            await client.send_message("你好".encode())
            assert await client.receive_message() == "你好好".encode()
            await client.send_message(b"\xff\xfe invalid utf-8 \x00")
            assert await client.receive_message() == b"\xff\xfe invalid utf-8 \x00" + REPLY_SUFFIX
            await client.send_message(b"")
            assert await client.receive_message() == REPLY_SUFFIX
            await client.send_message(b"q")
            with pytest.raises(trio.EndOfChannel):  # closed, no reply
                await client.receive_message()


async def test_exact_bytes_on_the_wire_for_line_framing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_echo, MessageStream(server))
            await client.send_all(b"a\nb\nq\nnever read\n")
            received = b""
            while chunk := await client.receive_some():
                received += chunk
    assert received == GREETING + b"\n" + b"a" + REPLY_SUFFIX + b"\n" + b"b" + REPLY_SUFFIX + b"\n"


async def test_sticky_batch_is_answered_in_one_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    writes: list[bytes] = []
    original = server.send_all

    async def spy(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        await original(data)

    server.send_all = spy  # type: ignore[method-assign]
    framer = LengthPrefixedFramer()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_echo, MessageStream(server, LengthPrefixedFramer()))
            await client.send_all(framer.encode_many([b"1", b"2", b"3"]))
            await trio.testing.wait_all_tasks_blocked()
            await client.send_all(framer.encode(b"q"))
    assert writes == [
        framer.encode(GREETING),
        framer.encode_many([b"1" + REPLY_SUFFIX, b"2" + REPLY_SUFFIX, b"3" + REPLY_SUFFIX]),
    ]


async def test_messages_before_q_in_the_same_batch_are_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = message_pair(trio.testing.memory_stream_pair)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_echo, server)
            await client.send_messages([b"x", b"q", b"ignored"])
            assert [m async for m in client] == [GREETING, b"x" + REPLY_SUFFIX]


async def test_discard_mode_drops_the_long_line_and_keeps_serving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = message_pair(
        trio.testing.memory_stream_pair, "line", max_frame=16, on_too_long="discard"
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_echo, server)
            await client.transport_stream.send_all(b"ok\n" + b"z" * 100 + b"\nnext\nq\n")
            assert [m async for m in client] == [
                GREETING,
                b"ok" + REPLY_SUFFIX,
                b"next" + REPLY_SUFFIX,
            ]


async def test_seed_raw_wire_format_over_tcp(autojump_clock: trio.testing.MockClock) -> None:
    """The seed's client: recv the greeting, send text, recv text + 好, send q."""
    server = MessageServer(EchoHandler, host="127.0.0.1", port=0, framing=FramingConfig("raw"))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", port))
            greeting = b""
            while len(greeting) < len(GREETING):
                greeting += await sock.recv(1024)
            assert greeting == GREETING  # no delimiter, no header
            await sock.send("你好".encode())
            reply = b""
            while len(reply) < len("你好好".encode()):
                reply += await sock.recv(1024)
            assert reply == "你好好".encode()
            await sock.send(b"q")
            assert await sock.recv(1024) == b""  # closed without a reply
            sock.close()
            server.shutdown()


async def test_raw_framing_reads_at_most_1024_bytes_per_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = MessageServer(EchoHandler, host="127.0.0.1", port=0, framing=FramingConfig("raw"))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            received = b""
            while len(received) < len(GREETING):
                received += await stream.receive_some()
            await stream.send_all(b"x" * 3000)
            await stream.send_eof()
            while chunk := await stream.receive_some():
                received += chunk
            replies = received[len(GREETING) :]
            # every reply is one read of at most 1024 bytes, plus 好
            assert replies.count(REPLY_SUFFIX) >= 3
            assert replies.replace(REPLY_SUFFIX, b"") == b"x" * 3000
            assert all(len(part) <= 1024 for part in replies.split(REPLY_SUFFIX))
            server.shutdown()
