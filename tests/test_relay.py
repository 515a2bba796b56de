"""The frame relay (trioecho.services.relay) against a local upstream: frames pass
unchanged both ways, half-closes are passed on, bad frames close both sides,
an unreachable upstream closes the client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from trioecho import FramingConfig
from trioecho.framing import presets
from trioecho.services.relay import Direction, relay_server

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
    assert f"relay: cannot connect to 127.0.0.1:{dead_port}" in caplog.text


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
    assert f"relay: cannot connect to 127.0.0.1:{port}: no answer in 0 s" in caplog.text


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
