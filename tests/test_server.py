"""MessageServer over real loopback TCP (port 0).

The tests run on Trio's autojump clock: timeouts, grace periods and the
lossless close's wait for the peer take no real time.  Loopback bytes are
in the peer's socket when send returns, so the clock jumps only when nothing
is on its way.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing
from support.helpers import running

from trioecho import FramingConfig
from trioecho.framing.base import FramingName
from trioecho.logtext import format_address
from trioecho.server.handler import BaseRequestHandler
from trioecho.server.server import MessageServer
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler
from trioecho.stream.message_stream import MessageStream


async def connect(port: int, framing: FramingName = "line") -> MessageStream:
    transport = await trio.open_tcp_stream("127.0.0.1", port)
    return MessageStream(transport, FramingConfig(framing).new_framer())


def echo_server(**options: Any) -> MessageServer:
    return MessageServer(EchoHandler, host="127.0.0.1", port=0, **options)


async def test_request_handler_model(autojump_clock: trio.testing.MockClock) -> None:
    events: list[Any] = []

    class Recorder(BaseRequestHandler):
        async def setup(self) -> None:
            events.append(("setup", type(self.request), self.client_address, self.server))

        async def handle(self) -> None:
            events.append("handle")
            message = await self.request.receive_message()
            await self.request.send_message(message.upper())

        async def finish(self) -> None:
            events.append("finish")

    server = MessageServer(Recorder, host="127.0.0.1", port=0)
    with trio.fail_after(10):
        async with running(server) as port:
            client = await connect(port)
            await client.send_message(b"hi")
            assert await client.receive_message() == b"HI"
            with pytest.raises(trio.EndOfChannel):
                await client.receive_message()
            local = client.transport_stream.socket.getsockname()  # type: ignore[attr-defined]
            await client.aclose()
    assert events == [("setup", MessageStream, local, server), "handle", "finish"]


async def test_finish_runs_when_handle_raises(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[str] = []

    class Failing(BaseRequestHandler):
        async def handle(self) -> None:
            raise RuntimeError("boom")

        async def finish(self) -> None:
            events.append("finish")

    server = MessageServer(Failing, host="127.0.0.1", port=0)
    with trio.fail_after(10):
        async with running(server) as port:
            client = await connect(port)
            with pytest.raises(trio.EndOfChannel):
                await client.receive_message()
            peer = format_address(client.transport_stream.socket.getsockname())  # type: ignore[attr-defined]
    assert events == ["finish"]
    record = next(r for r in caplog.records if "handler raised" in r.getMessage())
    assert peer in record.getMessage()
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])


async def test_plain_async_function_handler(autojump_clock: trio.testing.MockClock) -> None:
    async def shout(stream: MessageStream) -> None:
        async for message in stream:
            await stream.send_message(message.upper())

    server = MessageServer(shout, host="127.0.0.1", port=0, framing=FramingConfig("len"))
    with trio.fail_after(10):
        async with running(server) as port:
            client = await connect(port, "len")
            await client.send_messages([b"a", b"b"])
            assert [await client.receive_message() for _ in range(2)] == [b"A", b"B"]
            await client.aclose()


async def test_a_failing_handler_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    async def handler(stream: MessageStream) -> None:
        async for message in stream:
            if message == b"crash":
                raise ValueError("handler bug")
            await stream.send_message(message)

    server = MessageServer(handler, host="127.0.0.1", port=0)
    with trio.fail_after(10):
        async with running(server) as port:
            healthy = await connect(port)
            doomed = await connect(port)
            await doomed.send_message(b"crash")
            with pytest.raises(trio.EndOfChannel):
                await doomed.receive_message()
            await healthy.send_message(b"still here")
            assert await healthy.receive_message() == b"still here"
            await healthy.aclose()
    assert any("handler bug" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_framing_error_is_logged_with_peer_and_reason(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO, logger="trioecho")
    server = echo_server(framing=FramingConfig("len"))
    with trio.fail_after(10):
        async with running(server) as port:
            client = await connect(port, "len")
            assert await client.receive_message() == GREETING
            await client.transport_stream.send_all(b"\xff\xff\xff\xff")
            with pytest.raises(trio.EndOfChannel):
                await client.receive_message()
            peer = format_address(client.transport_stream.socket.getsockname())  # type: ignore[attr-defined]
    messages = [r.getMessage() for r in caplog.records]
    assert (
        f"{peer}: closing: FrameTooLongError: frame header announces 4294967295 bytes, "
        "over max_frame=1048576" in messages
    )


async def test_our_own_unframeable_message_is_logged_as_ours_not_the_peers(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """A handler that sends a line holding the delimiter: an ERROR naming this
    side, not the peer's WARNING; the error says it is local."""
    caplog.set_level(logging.INFO, logger="trioecho")
    errors: list[Exception] = []

    async def handler(stream: MessageStream) -> None:
        try:
            await stream.send_message(b"two\nlines")
        except Exception as exc:
            errors.append(exc)
            raise

    with trio.fail_after(10):
        async with running(MessageServer(handler, port=0)) as port:
            client = await connect(port, "line")
            with pytest.raises(trio.EndOfChannel):
                await client.receive_message()
            peer = format_address(client.transport_stream.socket.getsockname())  # type: ignore[attr-defined]
    [error] = errors
    assert error.local is True  # type: ignore[attr-defined]
    [record] = [r for r in caplog.records if peer in r.getMessage() and "closing" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        f"{peer}: closing: our own message cannot be framed: DelimiterInPayloadError: "
        "cannot encode a line that contains the delimiter b'\\n'"
    )


async def test_max_connections_stops_accepting_until_a_slot_frees(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = echo_server(max_connections=2)
    with trio.fail_after(10):
        async with running(server) as port:
            first, second = await connect(port), await connect(port)
            assert await first.receive_message() == GREETING
            assert await second.receive_message() == GREETING
            third = await connect(port)  # completes in the kernel backlog
            with trio.move_on_after(0.3) as waited:
                await third.receive_message()
            assert waited.cancelled_caught, "the third connection was served over the limit"
            assert server.active_connections == 2
            await first.send_message(b"q")
            assert await third.receive_message() == GREETING
            await third.send_message(b"served")
            assert await third.receive_message() == b"served" + REPLY_SUFFIX
            for stream in (second, third):
                await stream.aclose()


async def test_idle_timeout_closes_a_silent_connection(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO, logger="trioecho")
    server = echo_server(idle_timeout=0.3)
    with trio.fail_after(10):
        async with running(server) as port:
            client = await connect(port)
            assert await client.receive_message() == GREETING
            await client.transport_stream.send_all(b"an unfinished line")
            start = trio.current_time()
            with pytest.raises(trio.EndOfChannel):
                await client.receive_message()
            assert 0.25 <= trio.current_time() - start < 5
    assert any("idle_timeout=0.3s" in r.getMessage() for r in caplog.records)


async def test_slow_reader_is_closed(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    server = echo_server(send_timeout=0.5)
    with trio.fail_after(20):
        async with running(server) as port:
            transport = await trio.open_tcp_stream("127.0.0.1", port)
            line = b"x" * 1000 + b"\n"
            with trio.move_on_after(8):  # send until the server stops reading
                try:
                    while True:
                        await transport.send_all(line * 100)
                except trio.BrokenResourceError:
                    pass
            await transport.aclose()
    assert any("did not read its replies" in r.getMessage() for r in caplog.records)


async def test_graceful_shutdown_answers_what_was_received(
    autojump_clock: trio.testing.MockClock,
) -> None:
    received = trio.Event()

    class SlowEcho(BaseRequestHandler):
        async def handle(self) -> None:
            async for message in self.request:
                received.set()
                await trio.sleep(0.2)  # still working when shutdown begins
                await self.request.send_message(message + b"!")

    server = MessageServer(SlowEcho, host="127.0.0.1", port=0, grace=5)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            client = await connect(port)
            idle = await connect(port)
            await client.send_messages([b"1", b"2", b"3"])
            await received.wait()
            server.shutdown()
            replies = [message async for message in client]
            with pytest.raises(trio.EndOfChannel):
                await idle.receive_message()
    assert replies == [b"1!", b"2!", b"3!"]


async def test_grace_period_then_handlers_are_cancelled(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    async def stubborn(stream: MessageStream) -> None:
        await trio.sleep_forever()

    server = MessageServer(stubborn, host="127.0.0.1", port=0, grace=0.3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            client = await connect(listeners[0].socket.getsockname()[1])
            await trio.sleep(0.05)
            start = trio.current_time()
            server.shutdown()
            await server.wait_stopped()
            assert 0.25 <= trio.current_time() - start < 3
            with pytest.raises(trio.EndOfChannel):
                await client.receive_message()
    assert any("cancelling 1 connections" in r.getMessage() for r in caplog.records)


async def test_new_connections_are_refused_after_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = echo_server()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            server.shutdown()
            await server.wait_stopped()
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", port)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_connections": 0}, "max_connections"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"send_timeout": -1}, "send_timeout"),
        ({"grace": -1}, "grace"),
    ],
)
def test_bad_server_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MessageServer(EchoHandler, **options)


def test_format_address() -> None:
    assert format_address(("127.0.0.1", 9999)) == "127.0.0.1:9999"
    assert format_address(("::1", 9999, 0, 0)) == "[::1]:9999"


async def test_the_connection_limit_is_logged_and_accepting_paused_is_exact(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """At max_connections - 1 open, accepting is not paused; at max_connections
    it is (the gauge says so, one WARNING); when one closes it resumes (one
    INFO).  The next pauses within PAUSE_WARNING_SECONDS of the warning are
    folded: none logged, and the one that outlasts the window is logged
    then, with the count of those before it."""
    caplog.set_level(logging.INFO, logger="trioecho.server")
    server = echo_server(max_connections=3)

    def lines() -> list[tuple[int, str]]:
        found = [
            (r.levelno, r.getMessage())
            for r in caplog.records
            if r.name == "trioecho.server" and "accepting" in r.getMessage()
        ]
        caplog.clear()
        return found

    async def open_one() -> MessageStream:
        client = await connect(port)
        assert await client.receive_message() == GREETING
        return client

    async def close_one(client: MessageStream) -> None:
        await client.send_message(b"q")
        with pytest.raises(trio.EndOfChannel):
            await client.receive_message()
        await client.aclose()
        while server.active_connections > 2:
            await trio.sleep(0.01)

    paused = (
        logging.WARNING,
        "accepting paused: all max_connections=3 connections are open; "
        "new clients wait in the listen backlog until one closes",
    )
    with trio.fail_after(60):
        async with running(server) as port:
            clients = [await open_one(), await open_one()]
            assert server.stats()["accepting_paused"] == 0
            assert lines() == []
            clients.append(await open_one())
            assert server.stats()["accepting_paused"] == 1
            assert lines() == [paused]
            await trio.sleep(2)
            await close_one(clients.pop())
            assert server.stats()["accepting_paused"] == 0
            assert lines() == [
                (logging.INFO, "accepting again after 2.0 s paused: 2 of max_connections=3 open")
            ]
            clients.append(await open_one())  # a pause within the window: folded
            assert server.stats()["accepting_paused"] == 1
            await close_one(clients.pop())
            assert server.stats()["accepting_paused"] == 0
            clients.append(await open_one())  # again, and it lasts past the window
            assert lines() == []
            await trio.sleep(10)
            assert server.stats()["accepting_paused"] == 1
            assert lines() == [(paused[0], paused[1] + " (1 shorter pause since the last warning)")]
            await trio.sleep(1)
            for client in clients:
                await client.aclose()
            while server.active_connections:
                await trio.sleep(0.01)
            assert server.stats()["accepting_paused"] == 0
            [(level, resumed)] = lines()
            assert level == logging.INFO
            assert resumed.startswith("accepting again after ")
            assert resumed.endswith(" s paused: 2 of max_connections=3 open")
        assert server.stats()["accepting_paused"] == 0
    assert lines() == []  # shutting down logs no resumption
