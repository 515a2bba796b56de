"""MessageStream over Trio's in-memory stream pairs (and a one-byte-per-read pump)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import trio
import trio.testing
from support.helpers import message_pair, socket_stream_pair, stream_pairs

from trioecho import (
    ConnectionClosedError,
    DelimiterInPayloadError,
    FrameTooLongError,
    IncompleteFrameError,
    LengthPrefixedFramer,
    LineFramer,
)
from trioecho.errors import IdleTimeoutError, SinkError, SlowReaderError
from trioecho.framing.config import FramingConfig
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler, GenericEchoHandler
from trioecho.stream.message_stream import MessageStream

PAIRS = stream_pairs()


@pytest.fixture(params=sorted(PAIRS))
def make_pair(request: pytest.FixtureRequest) -> object:
    return PAIRS[request.param]


@pytest.mark.parametrize("framing", ["line", "len"])
async def test_messages_round_trip_in_order(make_pair: object, framing: str) -> None:
    client, server = message_pair(make_pair, framing)
    messages = [b"", b"one", b"\xff\x00 not utf-8", b"x" * 3000]

    async def send() -> None:
        await client.send_messages(messages)
        await client.send_message(b"last")
        await client.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        received = [message async for message in server]
    assert received == [*messages, b"last"]


async def test_receive_message_raises_end_of_channel_at_clean_eof(make_pair: object) -> None:
    client, server = message_pair(make_pair)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.aclose)
        with pytest.raises(trio.EndOfChannel):
            await server.receive_message()
    with pytest.raises(trio.EndOfChannel):
        await server.receive_message()


async def test_eof_inside_a_frame_raises_incomplete_frame(make_pair: object) -> None:
    client, server = message_pair(make_pair, "len")

    async def send_partial() -> None:
        await client.transport_stream.send_all(b"\x00\x00\x00\x05ab")
        await client.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_partial)
        with pytest.raises(IncompleteFrameError) as info:
            await server.receive_message()
    assert info.value.buffered == 6


async def test_messages_before_a_framing_error_are_delivered_first(make_pair: object) -> None:
    client, server = message_pair(make_pair, "line", max_frame=4)

    async def send() -> None:
        await client.transport_stream.send_all(b"ok\nfine\nway too long\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        assert await server.receive_message() == b"ok"
        assert await server.receive_message() == b"fine"
        with pytest.raises(FrameTooLongError) as info:
            await server.receive_message()
    assert info.value.frames == []  # already delivered
    with pytest.raises(FrameTooLongError):  # the framer stays broken
        await server.receive_message()


async def test_discard_mode_reports_once_then_goes_on(make_pair: object) -> None:
    client, server = message_pair(make_pair, "line", max_frame=4, on_too_long="discard")

    async def send() -> None:
        await client.transport_stream.send_all(b"ok\nway too long\nnext\n")
        await client.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        assert await server.receive_message() == b"ok"
        with pytest.raises(FrameTooLongError):
            await server.receive_message()
        assert [m async for m in server] == [b"next"]


async def test_receive_messages_returns_a_batch() -> None:
    client, server = message_pair(trio.testing.memory_stream_pair, "line")
    await client.send_messages([b"a", b"b", b"c"])
    assert await server.receive_messages() == [b"a", b"b", b"c"]
    await client.send_message(b"d")
    assert await server.receive_messages() == [b"d"]


async def test_broken_transport_raises_connection_closed() -> None:
    _client_transport, server_transport = trio.testing.memory_stream_pair()

    async def broken_receive(max_bytes: int | None = None) -> bytes:
        raise trio.BrokenResourceError("peer reset")

    server_transport.receive_some = broken_receive  # type: ignore[method-assign]
    server = MessageStream(server_transport)
    with pytest.raises(ConnectionClosedError) as info:
        await server.receive_message()
    assert isinstance(info.value.__cause__, trio.BrokenResourceError)


async def test_send_to_a_closed_peer_raises_connection_closed() -> None:
    client_transport, server_transport = trio.testing.lockstep_stream_pair()
    server = MessageStream(server_transport)
    await client_transport.aclose()
    with pytest.raises(ConnectionClosedError):
        await server.send_message(b"hello")


async def test_aclose_is_idempotent_and_closes_the_stream(make_pair: object) -> None:
    _client, server = message_pair(make_pair)
    await server.aclose()
    await server.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await server.receive_message()
    with pytest.raises(trio.ClosedResourceError):
        await server.send_message(b"x")


async def test_two_receivers_at_once_is_busy() -> None:
    _client, server = message_pair(trio.testing.memory_stream_pair)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.receive_message)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.receive_message()
        nursery.cancel_scope.cancel()


async def test_two_senders_at_once_behave_as_the_transport() -> None:
    client, server = message_pair(trio.testing.lockstep_stream_pair)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_message, b"first")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await client.send_message(b"second")
        assert await server.receive_message() == b"first"


async def test_payload_that_cannot_be_framed_sends_nothing() -> None:
    client, server = message_pair(trio.testing.memory_stream_pair, "line")
    with pytest.raises(DelimiterInPayloadError):
        await client.send_messages([b"ok", b"two\nlines"])
    await client.send_message(b"after")
    assert await server.receive_message() == b"after"


async def test_idle_timeout(autojump_clock: trio.testing.MockClock) -> None:
    client_transport, server_transport = trio.testing.memory_stream_pair()
    server = MessageStream(server_transport, idle_timeout=10)
    await client_transport.send_all(b"partial line, never finished")
    start = trio.current_time()
    with pytest.raises(IdleTimeoutError, match="idle_timeout=10s"):
        await server.receive_message()
    assert trio.current_time() - start == pytest.approx(10)


async def test_idle_timeout_counts_from_each_receive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = message_pair(trio.testing.memory_stream_pair)
    server.idle_timeout = 10

    async def trickle() -> None:
        for word in (b"a", b"b", b"c"):
            await trio.sleep(9)
            await client.send_message(word)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        assert [await server.receive_message() for _ in range(3)] == [b"a", b"b", b"c"]


async def test_slow_reader_is_closed_after_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _client_transport, server_transport = trio.testing.lockstep_stream_pair()
    server = MessageStream(server_transport, send_timeout=5)
    start = trio.current_time()
    with pytest.raises(SlowReaderError, match="send_timeout=5s"):
        await server.send_message(b"nobody reads this")
    assert trio.current_time() - start == pytest.approx(5)
    with pytest.raises(trio.ClosedResourceError):
        await server.send_message(b"again")


async def test_stop_receiving_delivers_what_was_received_then_ends() -> None:
    client, server = message_pair(trio.testing.memory_stream_pair)
    await client.send_messages([b"a", b"b"])
    assert await server.receive_message() == b"a"
    server.stop_receiving()
    assert await server.receive_message() == b"b"
    with pytest.raises(trio.EndOfChannel):
        await server.receive_message()
    await server.send_message(b"replies still go out")
    assert await client.receive_message() == b"replies still go out"


async def test_stop_receiving_wakes_a_waiting_receiver() -> None:
    _client, server = message_pair(trio.testing.memory_stream_pair)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                with pytest.raises(trio.EndOfChannel):
                    await server.receive_message()

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            server.stop_receiving()


async def test_receive_size_bounds_each_read() -> None:
    client_transport, server_transport = trio.testing.memory_stream_pair()
    reads: list[int] = []
    original = server_transport.receive_some

    async def spy(max_bytes: int | None = None) -> bytes | bytearray:
        reads.append(max_bytes or 0)
        return await original(max_bytes)

    server_transport.receive_some = spy  # type: ignore[method-assign]
    server = MessageStream(server_transport, LengthPrefixedFramer(), receive_size=7)
    await client_transport.send_all(LengthPrefixedFramer().encode(b"0123456789"))
    assert await server.receive_message() == b"0123456789"
    assert reads == [7, 7]


def test_bad_receive_size() -> None:
    client_transport, _ = trio.testing.memory_stream_pair()
    with pytest.raises(ValueError, match="receive_size"):
        MessageStream(client_transport, LineFramer(), receive_size=0)


@pytest.mark.parametrize("handler", [EchoHandler, GenericEchoHandler])
async def test_echo_idle_timeout_is_per_complete_message(
    autojump_clock: trio.testing.MockClock, handler: type[EchoHandler]
) -> None:
    client_transport, server_transport = trio.testing.memory_stream_pair()
    server = MessageStream(server_transport, LineFramer(implementation="c"), idle_timeout=10)

    async def slowloris() -> None:
        await client_transport.send_all(b"done\n")
        for byte in b"never finished":
            await trio.sleep(4)
            await client_transport.send_all(bytes([byte]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slowloris)
        start = trio.current_time()
        with pytest.raises(IdleTimeoutError):
            await handler(server, ("test", 0), None).handle()  # type: ignore[arg-type]
        assert trio.current_time() - start == pytest.approx(10)
        nursery.cancel_scope.cancel()
    expected = GREETING + b"\n" + b"done" + REPLY_SUFFIX + b"\n"
    assert await client_transport.receive_some() == expected


# -- deadlines handed over to a watchdog (the server's mode), over real sockets --


def socket_message_pair() -> tuple[MessageStream, MessageStream]:
    """Two MessageStreams over a connected socket pair: the direct socket path."""
    a, b = trio.socket.socketpair()
    return MessageStream(trio.SocketStream(a)), MessageStream(trio.SocketStream(b))


async def test_handed_over_idle_deadline_fires_only_when_expired() -> None:
    client, server = socket_message_pair()
    server.idle_timeout = 5
    server.hand_over_deadlines()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            outcome: list[object] = []

            async def receive() -> None:
                try:
                    await server.receive_message()
                except IdleTimeoutError as exc:
                    outcome.append(exc)

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            now = trio.current_time()
            assert not server.expire_if_idle(now)  # not due yet: nothing happens
            assert not outcome
            assert server.expire_if_idle(now + 5)  # due
    assert [str(e) for e in outcome] == ["no complete message within idle_timeout=5s"]
    # The socket was not closed: replies can still be sent.
    await server.send_message(b"bye")
    assert await client.receive_message() == b"bye"
    assert not server.expire_if_idle(trio.current_time() + 100)  # nobody waits now


async def test_handed_over_stop_receiving_wakes_the_receiver_not_a_blocked_sender() -> None:
    client, server = socket_message_pair()
    server.hand_over_deadlines()
    big = b"x" * 60_000
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            sent = trio.Event()

            async def receive() -> None:
                with pytest.raises(trio.EndOfChannel):
                    await server.receive_message()

            async def send_until_blocked() -> None:
                # The client reads nothing yet, so this blocks in wait_writable.
                for _ in range(40):
                    await server.send_message(big)
                sent.set()

            nursery.start_soon(receive)
            nursery.start_soon(send_until_blocked)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()
            server.stop_receiving()  # wakes both waiters on the socket
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(40):  # the sender carries on once the client reads
                assert await client.receive_message() == big
            await sent.wait()


async def test_echo_with_handed_over_deadlines_over_a_socket() -> None:
    client, server = socket_message_pair()
    server.framer = LineFramer(implementation="c")
    server.hand_over_deadlines()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(EchoHandler(server, ("test", 0), None).handle)  # type: ignore[arg-type]
        assert await client.receive_message() == GREETING
        for word in (b"a", b"b"):
            await client.send_message(word)
            assert await client.receive_message() == word + REPLY_SUFFIX
        await client.send_message(b"q")


# -- forward_to: bytes passed on as received, headers checked ---------------


FORWARD_READ = 1024  # the source's receive_size: frames larger than a read stream through


def forwarding_pairs(make_pair: object, max_frame: int = 1 << 20) -> tuple[Any, ...]:
    """(sender, source, sink, receiver): sender -> source.forward_to(sink) -> receiver."""
    sender, source_end = make_pair()  # type: ignore[operator]
    sink_end, receiver = make_pair()  # type: ignore[operator]
    framing = FramingConfig("len", max_frame=max_frame)
    source = MessageStream(source_end, framing, receive_size=FORWARD_READ)
    return sender, source, MessageStream(sink_end, framing), receiver


async def receive_all(stream: trio.abc.Stream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(1 << 16):
        data += chunk
    return bytes(data)


async def forward_through(pairs: tuple[Any, ...], wire: bytes) -> tuple[bytes, Exception | None]:
    """Send ``wire`` in 700-byte pieces, then close; forward it; return what
    the receiver got and what forward_to() raised (None: it returned)."""
    sender, source, sink, receiver = pairs
    got: list[bytes] = []
    raised: list[Exception] = []

    async def send() -> None:
        for i in range(0, len(wire), 700):  # the stream cut anywhere
            await sender.send_all(wire[i : i + 700])
        await sender.aclose()

    async def forward() -> None:
        try:
            await source.forward_to(sink)
        except Exception as exc:
            raised.append(exc)
        await sink.aclose()

    async def receive() -> None:
        got.append(await receive_all(receiver))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(forward)
        nursery.start_soon(receive)
    return got[0], raised[0] if raised else None


@pytest.mark.parametrize("size", [0, 1, FORWARD_READ - 1, FORWARD_READ, FORWARD_READ + 1, 20_000])
async def test_forward_to_passes_the_bytes_on_exactly(make_pair: object, size: int) -> None:
    pairs = forwarding_pairs(make_pair)
    wire = LengthPrefixedFramer().encode_many([b"a", b"x" * size, b"", b"last"])
    assert await forward_through(pairs, wire) == (wire, None)
    source, sink = pairs[1:3]
    assert (source.messages_received, sink.messages_sent) == (4, 4)
    assert source.close_reason == "peer_closed"


async def test_forward_to_sends_the_bytes_before_a_bad_header_then_raises(
    make_pair: object,
) -> None:
    pairs = forwarding_pairs(make_pair, max_frame=100)
    good = LengthPrefixedFramer().encode(b"y" * 100)
    got, error = await forward_through(pairs, good + (101).to_bytes(4, "big") + b"z" * 10)
    assert got == good
    assert isinstance(error, FrameTooLongError)
    assert str(error) == "frame header announces 101 bytes, over max_frame=100"
    assert (pairs[1].messages_received, pairs[2].messages_sent) == (1, 1)


async def test_forward_to_an_end_inside_a_frame_is_incomplete(make_pair: object) -> None:
    pairs = forwarding_pairs(make_pair)
    got, error = await forward_through(pairs, (1000).to_bytes(4, "big") + b"w" * 10)
    assert got == (1000).to_bytes(4, "big") + b"w" * 10  # passed on as it came
    assert isinstance(error, IncompleteFrameError)
    assert str(error) == "connection closed inside a frame: 990 bytes of it never came"


async def test_a_sink_that_does_not_read_is_a_sink_error_after_its_send_timeout() -> None:
    sender, source_end = socket_stream_pair()
    sink_end, receiver = socket_stream_pair()
    source = MessageStream(source_end, FramingConfig("len"))
    sink = MessageStream(sink_end, FramingConfig("len"), send_timeout=0.2)
    frame = LengthPrefixedFramer().encode(b"v" * 60000)

    async def flood() -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for _ in range(200):  # 12 MB: more than both sockets' buffers hold
                await sender.send_all(frame)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        with pytest.raises(SinkError) as caught:
            await source.forward_to(sink)
        nursery.cancel_scope.cancel()
    assert isinstance(caught.value.error, SlowReaderError)
    assert receiver is not None


async def test_forward_to_needs_a_framer_that_can_forward(make_pair: object) -> None:
    client, server = message_pair(make_pair, "line")
    with pytest.raises(RuntimeError, match="needs a length-field or fixed-size framer"):
        await server.forward_to(client)
