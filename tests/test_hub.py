"""The readiness hub (trioecho.io.hub) and the direct-socket transport on it."""

from __future__ import annotations

import os
import socket

import pytest
import trio
import trio.testing
from support.helpers import socket_stream_pair

from trioecho import IdleTimeoutError, MessageStream
from trioecho.io import parking
from trioecho.io.hub import ReadinessHub, Watch, current_hub
from trioecho.io.opening import open_transport
from trioecho.io.readiness import Readiness
from trioecho.io.socket_transport import SocketTransport


def raw_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def fill_send_buffer(sock: socket.socket, watch: Watch) -> None:
    """Send until the kernel takes no more (a socket pair buffers far less
    than the bound), then let the hub take the output edges of those sends,
    which are spent: a wait for output now parks until the peer reads."""
    with pytest.raises(BlockingIOError):
        for _ in range(10_000):
            sock.send(b"x" * 65536)
    await trio.testing.wait_all_tasks_blocked()
    watch.writable = False


async def test_current_hub_is_one_per_run_and_runs(autojump_clock: trio.testing.MockClock) -> None:
    hub = current_hub()
    assert current_hub() is hub
    a, b = raw_pair()
    with a, b:
        watch = hub.watch(a.fileno())
        assert len(hub) == 1
        b.send(b"x")
        with trio.fail_after(5):
            assert await watch.wait_readable() is True
        assert a.recv(10) == b"x"
        watch.close()
        assert len(hub) == 0


async def test_a_parked_reader_is_woken_by_new_input(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = raw_pair()
    with a, b:
        watch = current_hub().watch(a.fileno())
        woken = []

        async def reader() -> None:
            woken.append(await watch.wait_readable())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert watch.reader is not None  # parked on the hub
            assert woken == []
            b.send(b"ping")
        assert woken == [True]
        assert not parking.parked(watch.reader, watch)
        watch.close()


async def test_an_edge_without_a_waiter_is_remembered_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Input that came while nobody waited makes the next wait return at
    once; the wait after that parks (a spurious wake-up costs one read)."""
    a, b = raw_pair()
    with a, b:
        watch = current_hub().watch(a.fileno())
        b.send(b"early")
        await trio.testing.wait_all_tasks_blocked()  # the hub took the edge
        assert watch.readable
        with trio.fail_after(5):
            assert await watch.wait_readable() is True
        assert a.recv(100) == b"early"
        with trio.move_on_after(0.2) as scope:
            await watch.wait_readable()
        assert scope.cancelled_caught  # no edge left: it parked
        assert not parking.parked(watch.reader, watch)  # cancellation unmarked it
        watch.close()


async def test_the_end_of_input_is_sticky(autojump_clock: trio.testing.MockClock) -> None:
    """The read that takes the last bytes leaves the end to read; the
    peer's close came in the same edge, so every later wait returns."""
    a, b = raw_pair()
    with a:
        watch = current_hub().watch(a.fileno())
        b.send(b"last")
        b.close()
        with trio.fail_after(5):
            assert await watch.wait_readable()
            assert a.recv(100) == b"last"
            assert await watch.wait_readable()
            assert await watch.wait_readable()
        assert a.recv(100) == b""
        watch.close()


async def test_interrupt_reader_makes_the_wait_return_false(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = raw_pair()
    with a, b:
        watch = current_hub().watch(a.fileno())
        results = []

        async def reader() -> None:
            results.append(await watch.wait_readable())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            watch.interrupt_reader()
        assert results == [False]
        watch.interrupt_reader()  # nobody waits: no effect
        b.send(b"x")
        with trio.fail_after(5):
            assert await watch.wait_readable() is True
        watch.close()


async def test_closing_a_watch_wakes_its_waiters_with_closed_resource_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = raw_pair()
    with a, b:
        watch = current_hub().watch(a.fileno())
        errors: list[type[BaseException]] = []

        async def waiter(wait: str) -> None:
            try:
                await getattr(watch, wait)()
            except trio.ClosedResourceError as exc:
                errors.append(type(exc))

        await fill_send_buffer(a, watch)  # so that a writer has to wait too
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, "wait_readable")
            nursery.start_soon(waiter, "wait_writable")
            await trio.testing.wait_all_tasks_blocked()
            watch.close()
        assert errors == [trio.ClosedResourceError, trio.ClosedResourceError]
        watch.close()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await watch.wait_readable()


async def test_a_cancelled_wait_leaves_no_stale_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A reader cancelled while parked is no longer woken (nor busy): the
    next edge is remembered for the next wait, and a later wait of the same
    task elsewhere is not disturbed by this watch."""
    a, b = raw_pair()
    c, d = raw_pair()
    with a, b, c, d:
        hub = current_hub()
        watch, other = hub.watch(a.fileno()), hub.watch(c.fileno())
        with trio.move_on_after(0.05):
            await watch.wait_readable()
        assert watch.reader is not None  # stale, but no longer marked
        results = []

        async def read_other() -> None:
            results.append(await other.wait_readable())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_other)
            await trio.testing.wait_all_tasks_blocked()
            b.send(b"x")  # an edge on the first watch
            await trio.testing.wait_all_tasks_blocked()
            assert results == []  # the task waiting on the other one slept on
            assert watch.readable  # remembered instead
            d.send(b"y")
        assert results == [True]
        with trio.fail_after(5):
            assert await watch.wait_readable() is True  # no BusyResourceError
        watch.close()
        other.close()


async def test_two_readers_are_busy(autojump_clock: trio.testing.MockClock) -> None:
    a, b = raw_pair()
    with a, b:
        watch = current_hub().watch(a.fileno())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch.wait_readable)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await watch.wait_readable()
            nursery.cancel_scope.cancel()
        watch.close()


async def test_a_writer_waits_until_the_peer_reads(autojump_clock: trio.testing.MockClock) -> None:
    a, b = raw_pair()
    with a, b:
        watch = current_hub().watch(a.fileno())
        await fill_send_buffer(a, watch)
        done = []

        async def writer() -> None:
            done.append(await watch.wait_writable())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            assert done == []
            while True:  # the peer reads everything
                try:
                    if not b.recv(1 << 20):
                        break
                except BlockingIOError:
                    break
        assert done == [True]
        watch.close()


async def test_a_descriptor_closed_without_its_watch_is_replaced_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = current_hub()
    a, b = raw_pair()
    fd = a.fileno()
    stale = hub.watch(fd)
    a.close()  # the kernel drops it from the set; the watch is stale
    b.close()
    c, d = raw_pair()
    if c.fileno() != fd:  # put the new socket under the old number
        os.dup2(c.fileno(), fd)
        c.close()
        c = socket.socket(fileno=fd)
    assert c.fileno() == fd
    with c, d:
        fresh = hub.watch(fd)
        assert stale.closed
        assert not fresh.closed
        d.send(b"new")
        with trio.fail_after(5):
            assert await fresh.wait_readable()
        assert c.recv(10) == b"new"
        fresh.close()
        stale.close()  # idempotent, and leaves the fresh registration alone
        assert len(hub) == 0


async def test_a_hub_that_stops_leaves_its_transports_working(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The transport falls back to Trio's waits when its watch is closed by
    the hub (which only happens if the hub stops)."""
    client, server = socket_stream_pair()
    transport = open_transport(server, readiness="hub")
    assert isinstance(transport, SocketTransport)
    assert transport.readiness == "hub"
    received = []

    async def receive() -> None:
        received.append(await transport.receive_some(100))
        received.append(await transport.receive_some(100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        current_hub().close()
        await trio.testing.wait_all_tasks_blocked()
        await client.send_all(b"after")
        await trio.testing.wait_all_tasks_blocked()
        await client.send_all(b"again")
    assert b"".join(r or b"" for r in received) == b"afteragain"
    assert transport.readiness == "trio"
    # The next stream gets a new hub.
    other = open_transport(socket_stream_pair()[1], readiness="hub")
    assert isinstance(other, SocketTransport) and other.readiness == "hub"


async def test_without_trios_private_trap_the_public_wait_is_used(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setattr(parking, "TRAP", None)
    a, b = raw_pair()
    with a, b:
        watch = current_hub().watch(a.fileno())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch.wait_readable)
            await trio.testing.wait_all_tasks_blocked()
            b.send(b"x")
        with trio.move_on_after(0.1) as scope:
            a.recv(10)
            await watch.wait_readable()
        assert scope.cancelled_caught
        watch.close()


def test_hub_argument_checks() -> None:
    with pytest.raises(ValueError, match="max_events must be at least 1"):
        ReadinessHub(max_events=0)
    hub = ReadinessHub()
    hub.close()
    with pytest.raises(RuntimeError, match="stopped"):
        hub.watch(0)


@pytest.mark.parametrize("max_events", [1, 2, 1024])
async def test_many_connections_ping_pong_through_one_hub(
    max_events: int, autojump_clock: trio.testing.MockClock
) -> None:
    """200 connections, 20 exchanges each, every reply checked; the hub takes
    at most ``max_events`` edges per poll (1: one wake per turn)."""
    hub = ReadinessHub(max_events=max_events)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run)
        pairs = [socket_stream_pair() for _ in range(200)]
        streams = []
        for client, server in pairs:
            transport = open_transport(server, readiness="trio")
            assert isinstance(transport, SocketTransport)
            transport._watch = hub.watch(server.socket.fileno())  # this hub, not the run's
            streams.append((client, transport))
        answered = 0

        async def serve(transport: SocketTransport) -> None:
            while data := await transport.receive_some(100):
                await transport.send_all(data.upper())

        async def talk(client: trio.SocketStream) -> None:
            nonlocal answered
            for i in range(20):
                await client.send_all(b"msg%d" % i)
                assert await client.receive_some(100) == b"MSG%d" % i
                answered += 1
            await client.aclose()

        with trio.fail_after(30):
            async with trio.open_nursery() as inner:
                for client, transport in streams:
                    inner.start_soon(serve, transport)
                    inner.start_soon(talk, client)
        assert answered == 200 * 20
        assert len(hub) == 200
        for _client, transport in streams:
            await transport.aclose()
        assert len(hub) == 0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("readiness", ["hub", "trio"])
async def test_message_stream_idle_timeout_and_stop_on_both_waits(
    readiness: Readiness, autojump_clock: trio.testing.MockClock
) -> None:
    """The server's way of waiting (deadlines handed over, expired by one
    task; stop_receiving) on both kinds of waits."""
    _client, server = socket_stream_pair()
    stream = MessageStream(server, idle_timeout=0.05, readiness=readiness)
    stream.hand_over_deadlines()
    assert isinstance(stream.transport, SocketTransport)
    assert stream.transport.readiness == readiness

    async def expire() -> None:
        while True:
            await trio.sleep(0.01)
            stream.expire_if_idle(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(expire)
        with trio.fail_after(5), pytest.raises(IdleTimeoutError):
            await stream.receive_message()
        nursery.cancel_scope.cancel()

    _client2, server2 = socket_stream_pair()
    stream2 = MessageStream(server2, readiness=readiness)
    stream2.hand_over_deadlines()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_soon, stream2)
        with trio.fail_after(5), pytest.raises(trio.EndOfChannel):
            await stream2.receive_message()


async def _stop_soon(stream: MessageStream) -> None:
    await trio.testing.wait_all_tasks_blocked()
    stream.stop_receiving()


async def test_watch_is_closed_before_the_socket(autojump_clock: trio.testing.MockClock) -> None:
    client, server = socket_stream_pair()
    stream = MessageStream(server, readiness="hub")
    transport = stream.transport
    assert isinstance(transport, SocketTransport)
    watch = transport._watch
    assert isinstance(watch, Watch)
    hub = current_hub()
    count = len(hub)
    await stream.aclose()
    assert watch.closed
    assert len(hub) == count - 1
    await client.aclose()
