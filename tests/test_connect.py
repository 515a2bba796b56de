"""The client side: open_message_stream and the greeting check.  The client
and bench commands against servers of another framing, as real processes,
are ``test_cli.py``'s."""

from __future__ import annotations

import socket
import ssl

import pytest
import trio
import trio.testing
from support.helpers import running

from trioecho import (
    FramingConfig,
    MessageServer,
    TLSHandshakeError,
    open_message_stream,
)
from trioecho.errors import GreetingError
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler
from trioecho.services.greeting import expect_greeting, guess_framing


async def test_plain_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        running(MessageServer(EchoHandler, port=0)) as port,
        await open_message_stream("127.0.0.1", port) as stream,
    ):
        await expect_greeting(stream, FramingConfig())
        await stream.send_message(b"hi")
        assert await stream.receive_message() == b"hi" + REPLY_SUFFIX


async def test_the_send_rule_is_the_streams(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        running(MessageServer(EchoHandler, port=0)) as port,
        await open_message_stream("127.0.0.1", port, send_timeout=5, min_send_rate=2048) as stream,
    ):
        assert (stream.send_timeout, stream.min_send_rate) == (5, 2048.0)


async def test_a_wrong_min_send_rate_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError) as refused:
        await open_message_stream("127.0.0.1", 1, min_send_rate=0)  # nothing listens there
    assert str(refused.value) == (
        "min_send_rate must be a positive, finite number of bytes a second or None, not 0"
    )


async def test_a_host_name_and_raw_framing(autojump_clock: trio.testing.MockClock) -> None:
    config = FramingConfig("raw")
    async with (
        running(MessageServer(EchoHandler, port=0, framing=config)) as port,
        await open_message_stream("localhost", port, framing=config) as stream,
    ):
        assert stream.receive_size == 1024  # the seed's read size
        assert await stream.receive_message() == GREETING


class TwoAddresses(trio.abc.HostnameResolver):
    """Resolves ``twohomes.test`` to 127.0.0.2 (refusing), then 127.0.0.1."""

    async def getaddrinfo(  # type: ignore[override]
        self, host: bytes | None, port: bytes | str | int | None, *args: int
    ) -> list[tuple[int, int, int, str, tuple[str, int]]]:
        assert host == b"twohomes.test"
        port = int(port)  # type: ignore[arg-type]
        tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
        return [(*tcp, ("127.0.0.2", port)), (*tcp, ("127.0.0.1", port))]

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        raise NotImplementedError


async def test_happy_eyeballs_falls_back_to_an_address_that_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two addresses for one name, the first refusing: Trio's happy eyeballs
    moves on to the second."""
    previous = trio.socket.set_custom_hostname_resolver(TwoAddresses())
    try:
        async with (
            running(MessageServer(EchoHandler, port=0)) as port,
            await open_message_stream("twohomes.test", port) as stream,
        ):
            assert await stream.receive_message() == GREETING
            peer = stream.transport_stream.socket.getpeername()  # type: ignore[attr-defined]
            assert peer[0] == "127.0.0.1"
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


async def test_tls(
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = MessageServer(EchoHandler, port=0, ssl_context=server_ssl_context)
    async with running(server) as port:
        stream = await open_message_stream(
            "127.0.0.1", port, ssl_context=client_ssl_context, server_hostname="localhost"
        )
        async with stream:
            assert isinstance(stream.transport_stream, trio.SSLStream)
            assert await stream.receive_message() == GREETING
        with pytest.raises(TLSHandshakeError, match="certificate"):
            await open_message_stream(
                "127.0.0.1", port, ssl_context=client_ssl_context, server_hostname="elsewhere"
            )


async def test_refused(autojump_clock: trio.testing.MockClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(ConnectionRefusedError, match="refused"):
            await open_message_stream("127.0.0.1", port)


async def test_a_tls_handshake_that_never_finishes_times_out(
    client_ssl_context: ssl.SSLContext, autojump_clock: trio.testing.MockClock
) -> None:
    with socket.socket() as listener:  # accepts (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with trio.fail_after(5), pytest.raises(TLSHandshakeError, match=r"within 0\.2s"):
            await open_message_stream(
                "127.0.0.1", port, ssl_context=client_ssl_context, handshake_timeout=0.2
            )


# -- the greeting tells the framing --------------------------------------------

FRAMINGS = {
    "line": (FramingConfig("line"), ["--framing", "line"]),
    "len": (FramingConfig("len"), ["--framing", "len"]),
    "len2le": (
        FramingConfig("len", length_bytes=2, byteorder="little", max_frame=60000),
        ["--framing", "len", "--length-bytes", "2", "--byteorder", "little"],
    ),
    "raw": (FramingConfig("raw"), ["--framing", "raw"]),
}


@pytest.mark.parametrize("client", sorted(FRAMINGS))
@pytest.mark.parametrize("server", sorted(FRAMINGS))
async def test_the_greeting_names_the_servers_framing(
    server: str, client: str, autojump_clock: trio.testing.MockClock
) -> None:
    server_config, server_options = FRAMINGS[server]
    client_config = FRAMINGS[client][0]
    async with (
        running(MessageServer(EchoHandler, port=0, framing=server_config)) as port,
        await open_message_stream("127.0.0.1", port, framing=client_config) as stream,
    ):
        with trio.fail_after(8):
            if server == client:
                await expect_greeting(stream, client_config)
                await stream.send_message(b"x")
                assert await stream.receive_message() == b"x" + REPLY_SUFFIX
                return
            with pytest.raises(GreetingError) as raised:
                await expect_greeting(stream, client_config, timeout=2)
    assert raised.value.options == server_options
    assert f"try {' '.join(server_options)}" in str(raised.value)


async def test_a_silent_or_closing_server_is_named(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(stream: object) -> None:
        await trio.sleep_forever()

    async def closing(stream: object) -> None:
        return

    for handler, why in ((silent, "sent nothing within 0.2s"), (closing, "closed the connection")):
        async with (
            running(MessageServer(handler, port=0)) as port,
            await open_message_stream("127.0.0.1", port) as stream,
        ):
            with pytest.raises(GreetingError, match=why):
                await expect_greeting(stream, FramingConfig(), timeout=0.2)


def test_guess_framing() -> None:
    assert guess_framing(GREETING + b"\n") == ["--framing", "line"]
    assert guess_framing(b"\x00\x00\x00\x00\x00\x00\x00\x0f" + GREETING) == [
        "--framing",
        "len",
        "--length-bytes",
        "8",
    ]
    assert guess_framing(b"HTTP/1.1 400 Bad Request\r\n") is None
