"""A framing may be given as a name or a FramingConfig everywhere a framing
is taken, and a message that is not bytes is refused with a TypeError that
says what to do."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from support.helpers import running

from trioecho import EchoSession, FramingConfig, MessageServer, MessageStream, open_message_stream
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler
from trioecho.services.relay import relay_server


async def test_message_stream_takes_a_framing_name(autojump_clock: trio.testing.MockClock) -> None:
    left, right = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with MessageStream(left, "len") as client:
            await client.send_message(b"hi")
            assert await right.receive_some(100) == b"\x00\x00\x00\x02hi"
            await right.send_all(b"\x00\x00\x00\x01x")
            assert await client.receive_message() == b"x"
            assert client.framing == FramingConfig("len")


def test_message_stream_refuses_what_is_not_a_stream_or_framing() -> None:
    left, _ = trio.testing.memory_stream_pair()
    with pytest.raises(TypeError) as refused:
        MessageStream(b"x")  # type: ignore[arg-type]
    assert str(refused.value) == "MessageStream needs a trio.abc.Stream (or a Transport), not bytes"
    with pytest.raises(TypeError) as refused:
        MessageStream(left, 5)  # type: ignore[arg-type]
    assert str(refused.value) == (
        "framer must be a framer, a FramingConfig or a framing name "
        "(line, len, raw, varint, fixed), not int"
    )
    with pytest.raises(ValueError) as wrong:
        MessageStream(left, "length")
    assert str(wrong.value) == (
        "framer must be one of ('line', 'len', 'raw', 'varint', 'fixed'), not 'length'"
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            "text",
            "a message is bytes, not str: encode the text first, e.g. send_message(text.encode())",
        ),
        (123, "a message is bytes (or a bytearray or memoryview), not int"),
        (None, "a message is bytes (or a bytearray or memoryview), not NoneType"),
    ],
)
async def test_send_message_of_what_is_not_bytes(
    payload: object, message: str, autojump_clock: trio.testing.MockClock
) -> None:
    left, right = trio.testing.memory_stream_pair()
    for framing in ("line", "len", "raw"):
        stream = MessageStream(left, framing)
        with pytest.raises(TypeError) as refused:
            await stream.send_message(payload)  # type: ignore[arg-type]
        assert str(refused.value) == message
        with pytest.raises(TypeError) as refused:
            await stream.send_messages([b"ok", payload])  # type: ignore[list-item]
        assert str(refused.value) == message
    with trio.move_on_after(1) as nothing_came:
        await right.receive_some(100)
    assert nothing_came.cancelled_caught, "bytes were sent before the refusal"


def test_echo_session_takes_a_framing_name() -> None:
    output = EchoSession("len").feed(b"\x00\x00\x00\x02hi")
    assert output.data == b"\x00\x00\x00\x05hi" + REPLY_SUFFIX


async def test_server_and_client_take_a_framing_name(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = MessageServer(EchoHandler, port=0, framing="len")
    assert server.framing == FramingConfig("len")
    with trio.fail_after(10):
        async with running(server) as port:
            client = await open_message_stream("127.0.0.1", port, framing="len")
            async with client:
                assert await client.receive_message() == GREETING
                await client.send_message(b"hi")
                assert await client.receive_message() == b"hi" + REPLY_SUFFIX


async def test_relay_takes_framing_names(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        async with running(MessageServer(EchoHandler, port=0, framing="len")) as upstream:
            relay = relay_server(
                ("127.0.0.1", upstream), client_framing="len", server_framing="len", port=0
            )
            async with running(relay) as port:
                client = await open_message_stream("127.0.0.1", port, framing="len")
                async with client:
                    assert await client.receive_message() == GREETING
                    await client.send_message(b"via")
                    assert await client.receive_message() == b"via" + REPLY_SUFFIX


WRONG = "must be a FramingConfig or a framing name (line, len, raw, varint, fixed), not"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: MessageServer(EchoHandler, framing=5), f"framing {WRONG} int"),  # type: ignore[arg-type]
        (
            lambda: MessageServer(EchoHandler, framing="lenn"),
            "framing must be one of ('line', 'len', 'raw', 'varint', 'fixed'), not 'lenn'",
        ),
        (
            lambda: relay_server(
                ("h", 1),
                client_framing=b"len",  # type: ignore[arg-type]
                server_framing="len",
            ),
            f"client_framing {WRONG} bytes",
        ),
    ],
)
def test_a_wrong_framing_is_refused_where_it_is_given(call: object, message: str) -> None:
    with pytest.raises((TypeError, ValueError)) as refused:
        call()  # type: ignore[operator]
    assert str(refused.value) == message
