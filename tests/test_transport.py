"""The transport interface, on both transports: direct socket and any Trio stream."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import trio
import trio.testing
from support.helpers import socket_stream_pair

from trioecho import ConnectionClosedError, IdleTimeoutError, SlowReaderError
from trioecho.io.opening import open_transport
from trioecho.io.readiness import Readiness
from trioecho.io.socket_transport import SocketTransport
from trioecho.io.stream_transport import StreamTransport
from trioecho.io.transport import Transport

Pair = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]
# name: (stream pair, readiness of a direct-socket transport)
PAIRS: dict[str, tuple[Pair, Readiness | None]] = {
    "socket-hub": (socket_stream_pair, "hub"),
    "socket-trio": (socket_stream_pair, "trio"),
    "memory": (trio.testing.memory_stream_pair, None),
}


@pytest.fixture(params=sorted(PAIRS))
async def pair(request: pytest.FixtureRequest) -> tuple[Transport, trio.abc.Stream]:
    """(the server's transport, the client's raw stream)."""
    make_pair, readiness = PAIRS[request.param]
    client, server = make_pair()
    transport = open_transport(server, idle_timeout=5, send_timeout=0.2, readiness=readiness)
    if readiness is not None:
        assert isinstance(transport, SocketTransport)
        assert transport.readiness == readiness
    return transport, client


def test_open_transport_picks_the_direct_socket_path() -> None:
    a, _b = socket_stream_pair()
    assert type(open_transport(a)) is SocketTransport
    assert type(open_transport(trio.testing.memory_stream_pair()[0])) is StreamTransport


async def test_receive_send_and_end_of_stream(
    pair: tuple[Transport, trio.abc.Stream], autojump_clock: trio.testing.MockClock
) -> None:
    transport, client = pair
    await client.send_all(b"hello")
    assert await transport.receive_some(100) == b"hello"
    await transport.send_all(b"back")
    assert await client.receive_some(100) == b"back"
    await client.aclose()
    assert await transport.receive_some(100) == b""


async def test_receive_honours_max_bytes(
    pair: tuple[Transport, trio.abc.Stream], autojump_clock: trio.testing.MockClock
) -> None:
    transport, client = pair
    await client.send_all(b"0123456789")
    assert await transport.receive_some(4) == b"0123"


async def test_deadline_raises_idle_timeout(
    pair: tuple[Transport, trio.abc.Stream], autojump_clock: trio.testing.MockClock
) -> None:
    transport, _client = pair
    with trio.fail_after(5), pytest.raises(IdleTimeoutError, match="idle_timeout=5s"):
        await transport.receive_some(100, trio.current_time() + 0.05)


async def test_stop_receiving_wakes_a_waiting_receive(
    pair: tuple[Transport, trio.abc.Stream], autojump_clock: trio.testing.MockClock
) -> None:
    transport, client = pair
    results: list[bytes | None] = []

    async def receive() -> None:
        results.append(await transport.receive_some(100))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            transport.stop_receiving()
    assert results == [None]
    await client.send_all(b"late")
    assert await transport.receive_some(100) is None  # every later receive too
    await transport.send_all(b"sending still works")
    assert await client.receive_some(100) == b"sending still works"


async def test_watched_deadline_is_enforced_by_expire_if_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = socket_stream_pair()
    transport = open_transport(server, idle_timeout=1)
    transport.hand_over_deadlines()
    outcome: list[BaseException] = []

    async def receive() -> None:
        try:
            await transport.receive_some(100, trio.current_time() + 0.01)
        except IdleTimeoutError as exc:
            outcome.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            assert not transport.expire_if_idle(trio.current_time() - 1)  # not due yet
            await trio.sleep(0.02)
            assert transport.expire_if_idle(trio.current_time())
    assert len(outcome) == 1
    await client.send_all(b"still open")
    assert await transport.receive_some(100, math.inf) == b"still open"


@pytest.mark.parametrize("kind", ["socket", "lockstep"])  # memory streams never block
async def test_a_peer_that_does_not_read_is_a_slow_reader(
    kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    make = socket_stream_pair if kind == "socket" else trio.testing.lockstep_stream_pair
    _client, server = make()
    transport = open_transport(server, send_timeout=0.2)
    with trio.fail_after(10), pytest.raises(SlowReaderError, match=r"send_timeout=0\.2s"):
        while True:
            await transport.send_all(b"x" * 65536)
    assert transport.closed
    with pytest.raises(trio.ClosedResourceError):
        await transport.send_all(b"x")


async def test_closed_and_busy(
    pair: tuple[Transport, trio.abc.Stream], autojump_clock: trio.testing.MockClock
) -> None:
    transport, _client = pair
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.receive_some, 100)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await transport.receive_some(100)
            transport.stop_receiving()
    await transport.aclose()
    await transport.aclose()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        await transport.receive_some(100)


async def test_a_reset_is_connection_closed(autojump_clock: trio.testing.MockClock) -> None:
    client, server = socket_stream_pair()
    transport = open_transport(server)
    client.setsockopt(
        trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )
    await transport.send_all(b"unread")  # unread data in the client's buffer
    await client.aclose()  # linger 0: RST
    with trio.fail_after(5), pytest.raises(ConnectionClosedError, match="while receiving"):
        await transport.receive_some(100)
