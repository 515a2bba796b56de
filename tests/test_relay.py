"""The frame relay (trioecho.services.relay) against a local upstream: frames pass
unchanged both ways, half-closes are passed on, bad frames close both sides,
an unreachable upstream closes the client."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from trioecho import FramingConfig
from trioecho.framing import presets
from trioecho.logtext import format_address
from trioecho.services.relay import relay_server
from trioecho.services.relay_config import Direction

TYPED = FramingConfig("len", length_offset=1, length_adjustment=-4, include_header=True)


@asynccontextmanager
async def upstream_recorder() -> AsyncIterator[tuple[int, list[bytes], trio.Event]]:
    """A plain TCP server that records what it receives, answers b"ok" to
    its first bytes, and half-closes when its peer does; yields (port,
    received chunks, an event set when the peer's stream ended or was reset)."""
    received: list[bytes] = []
    ended = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        answered = False
        async with stream:
            try:
                while data := await stream.receive_some(65536):
                    received.append(data)
                    if not answered:
                        await stream.send_all(b"Z\x00\x00\x00\x06ok")
                        answered = True
                ended.set()
                await stream.send_eof()
            except trio.BrokenResourceError:  # reset: closed with our reply unread
                ended.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1], received, ended
        nursery.cancel_scope.cancel()


async def start_relay(
    nursery: trio.Nursery, upstream_port: int, frames: list[tuple[Direction, bytes]]
) -> int:
    server = relay_server(
        ("127.0.0.1", upstream_port),
        client_framing=TYPED,
        server_framing=TYPED,
        on_frame=lambda direction, frame: frames.append((direction, frame)),
        host="127.0.0.1",
        port=0,
    )
    listeners = await nursery.start(server.serve)
    return int(listeners[0].socket.getsockname()[1])


async def read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def test_frames_pass_unchanged_and_half_close_is_passed_on(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    frames: list[tuple[Direction, bytes]] = []
    async with upstream_recorder() as (port, received, ended):
        relay_port = await start_relay(nursery, port, frames)
        with trio.fail_after(10):
            client = await trio.open_tcp_stream("127.0.0.1", relay_port)
            wire = b"Q\x00\x00\x00\x05x" + b"Q\x00\x00\x00\x04"
            for i in range(len(wire)):  # byte by byte: the relay waits for whole frames
                await client.send_all(wire[i : i + 1])
            await client.send_eof()
            assert await read_all(client) == b"Z\x00\x00\x00\x06ok"  # then the upstream's EOF
            await ended.wait()
    assert b"".join(received) == wire
    assert [frame for direction, frame in frames if direction == "up"] == [
        b"Q\x00\x00\x00\x05x",
        b"Q\x00\x00\x00\x04",
    ]
    assert [frame for direction, frame in frames if direction == "down"] == [b"Z\x00\x00\x00\x06ok"]


async def test_a_malformed_frame_closes_both_sides(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    frames: list[tuple[Direction, bytes]] = []
    async with upstream_recorder() as (port, received, ended):
        relay_port = await start_relay(nursery, port, frames)
        with trio.fail_after(10):
            client = await trio.open_tcp_stream("127.0.0.1", relay_port)
            await client.send_all(b"Q\x00\x00\x00\x05x" + b"Q\x00\x00\x00\x03")
            data = await read_all(client)  # closed by the relay
            await ended.wait()  # and the upstream connection too
    assert data in (b"", b"Z\x00\x00\x00\x06ok")
    assert b"".join(received) == b"Q\x00\x00\x00\x05x"  # the good frame went on, no more
    assert "MalformedFrameError: length field 3 with length_adjustment -4" in caplog.text


async def test_an_unreachable_upstream_closes_the_client(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    relay_port = await start_relay(nursery, dead_port, [])
    caplog.set_level(logging.WARNING)
    with trio.fail_after(10):
        client = await trio.open_tcp_stream("127.0.0.1", relay_port)
        assert await read_all(client) == b""
    assert (
        f": closing: cannot connect to the upstream 127.0.0.1:{dead_port}: Connection refused"
        in (caplog.text)
    )


async def test_an_upstream_that_does_not_answer_in_time_closes_the_client(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    async with upstream_recorder() as (port, received, _):
        server = relay_server(
            ("127.0.0.1", port),
            client_framing=TYPED,
            server_framing=TYPED,
            connect_timeout=0,  # no connection can be made in no time
            host="127.0.0.1",
            port=0,
        )
        listeners = await nursery.start(server.serve)
        caplog.set_level(logging.WARNING)
        with trio.fail_after(10):
            client = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
            assert await read_all(client) == b""
    assert received == []
    assert f"closing: cannot connect to the upstream 127.0.0.1:{port}: no answer in 0 s" in (
        caplog.text
    )


def test_presets_describe_their_protocols() -> None:
    client = presets.postgresql("client")
    assert client.first_frame is not None
    assert (client.first_frame.length_offset, client.first_frame.length_adjustment) == (0, -4)
    assert client.first_frame.max_frame == 9996
    server = presets.postgresql("server")
    assert (server.length_offset, server.length_adjustment, server.include_header) == (1, -4, True)
    assert server.first_frame is None
    with pytest.raises(ValueError, match="side must be 'client' or 'server'"):
        presets.postgresql("proxy")  # type: ignore[arg-type]
    mqtt = presets.mqtt(max_frame=1 << 30)
    assert (mqtt.framing, mqtt.max_length_bytes, mqtt.max_frame) == ("varint", 4, (1 << 28) - 1)
    protobuf = presets.protobuf_delimited()
    assert (protobuf.framing, protobuf.max_length_bytes, protobuf.include_header) == (
        "varint",
        5,
        False,
    )


async def test_a_relay_that_reaches_itself_closes_at_the_first_connection(
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An upstream whose written address does not show it is the relay (a
    name that resolves back to it) is caught when the first client's
    connection upstream arrives at the relay: both loop connections close,
    the client is closed, and no chain of connections grows."""
    import trioecho.services.relay as relay_module

    with socket.socket() as probe:  # a free port, then the relay's own
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(relay_module, "may_be_the_same_listener", lambda *args: False)
    server = relay_server(
        ("127.0.0.1", port), client_framing="len", server_framing="len", host="127.0.0.1", port=port
    )
    await nursery.start(server.serve)
    caplog.set_level(logging.INFO)
    with trio.fail_after(10):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        assert await read_all(client) == b""
        while server.active_connections:
            await trio.sleep(0.1)
    assert server.connections_served == 2  # the client, and the relay's own loop connection
    loops = [r.getMessage() for r in caplog.records if "is this relay itself" in r.getMessage()]
    # once by the client's connection (its upstream reached its own
    # listener), once by the loop connection (it came from the relay's own port)
    assert [loop.split(": ", 1)[1] for loop in loops] == [
        f"the upstream 127.0.0.1:{port} is this relay itself: closing"
    ] * 2
    assert all(loop.startswith("127.0.0.1:") for loop in loops)  # naming the client
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("side", ["client", "upstream"])
async def test_a_peer_failure_in_the_relay_is_one_log_line(
    side: str,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A frame over max_frame from either side closes both, logged as one
    WARNING naming the client, the side (the upstream with its address) and
    the reason, with no traceback."""
    too_long = b"\x00\x00\x10\x00" + b"x" * 16  # announces 4096 bytes, over max_frame=100
    framing = FramingConfig("len", max_frame=100)

    async def upstream(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(100)
            if side == "upstream":
                await stream.send_all(too_long)
            await read_all(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, upstream, 0, host="127.0.0.1"))
    server = relay_server(
        ("127.0.0.1", listeners[0].socket.getsockname()[1]),
        client_framing=framing,
        server_framing=framing,
        host="127.0.0.1",
        port=0,
    )
    await nursery.start(server.serve)
    caplog.set_level(logging.INFO)
    with trio.fail_after(10):
        client = await trio.open_tcp_stream("127.0.0.1", server.port)
        await client.send_all(b"\x00\x00\x00\x02hi" + (too_long if side == "client" else b""))
        await read_all(client)
        peer = format_address(client.socket.getsockname())
        while server.active_connections:
            await trio.sleep(0.1)
    address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    named = "the client side" if side == "client" else f"the upstream side ({address})"
    assert [
        (r.name, r.levelname, r.getMessage())
        for r in caplog.records
        if r.levelno >= logging.WARNING
    ] == [
        (
            "trioecho.relay",
            "WARNING",
            f"{peer}: closing: {named}: FrameTooLongError: frame header announces 4096 bytes, "
            "over max_frame=100",
        )
    ]
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_refusal_while_the_client_is_still_being_sent_to_is_one_relay_error() -> None:
    """The client does not read: the down pump's send to it waits, and the
    client's own frame is over the limit.  The refusal never cuts into the
    down way's send (no BusyResourceError); the relay ends with the client's
    framing error."""
    from trioecho.errors import FrameTooLongError, RelayError
    from trioecho.services.relay import relay
    from trioecho.stream.message_stream import MessageStream

    client_peer, client_end = trio.testing.lockstep_stream_pair()  # sends wait for reads
    server_end, server_peer = trio.testing.memory_stream_pair()
    framing = presets.postgresql("server", max_frame=100)
    client = MessageStream(client_end, framing, send_timeout=0.5)  # a refusal gives up
    server = MessageStream(server_end, framing)
    row = b"D" + (4 + 50).to_bytes(4, "big") + b"r" * 50
    await server_peer.send_all(row)  # the down pump blocks sending it on
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_peer.send_all, b"Q" + (4 + 101).to_bytes(4, "big") + b"q" * 101)
        with pytest.raises(RelayError) as caught, trio.fail_after(5):
            await relay(
                client,
                server,
                client_framing=framing,
                server_framing=framing,
                refusal=presets.postgres_refusal,
            )
        nursery.cancel_scope.cancel()
    assert caught.value.side == "client"
    assert isinstance(caught.value.error, FrameTooLongError)
