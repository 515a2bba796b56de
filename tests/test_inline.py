"""Inline serving: the readiness hub runs a connection's sans-IO session.

* The connection's task does not wake per message: counted with a Trio
  instrument.
* Differential: the same session over the inline path, the task path
  (Trio's waits) and in-memory streams puts the same bytes on the wire and
  ends the same way.
* Fairness: one connection's step reads at most ``turn_bytes`` per turn of
  the hub, so a peer pipelining without pause neither holds the hub nor
  starves the other connections (the bound on a real server process, with
  a canary: ``test_hostile.py``).
* Cancellation, stop_receiving, the idle timeout and short sends hand the
  connection back to its task.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any, cast

import pytest
import trio
import trio.testing
from support.helpers import running, socket_stream_pair

from trioecho import FramingConfig, IdleTimeoutError, MessageServer
from trioecho.io.hub import ReadinessHub, current_hub
from trioecho.io.readiness import Readiness
from trioecho.io.socket_transport import SocketTransport
from trioecho.server.handler import BaseRequestHandler
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler, RespondEchoHandler
from trioecho.services.echo_session import EchoSession
from trioecho.stream.message_stream import MessageStream
from trioecho.stream.session import RespondSession

H = REPLY_SUFFIX
LEN = FramingConfig("len")


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


class TaskSteps(trio.abc.Instrument):
    """Counts the steps of the tasks whose name contains ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.name in task.name:
            self.steps += 1


@contextlib.contextmanager
def counting_steps(name: str) -> Iterator[TaskSteps]:
    """A :class:`TaskSteps` instrument, installed for the block."""
    steps = TaskSteps(name)
    trio.lowlevel.add_instrument(steps)
    try:
        yield steps
    finally:
        trio.lowlevel.remove_instrument(steps)


async def serve_session(stream: MessageStream, session: Any) -> tuple[str, str]:
    """run_session's outcome as text: ``returned <what>`` or ``raised <error>``."""
    async with stream:
        try:
            output = await stream.run_session(session)
        except Exception as exc:
            return "raised", f"{type(exc).__name__}: {exc}"
        if output is None:
            return "returned", "None"
        return "returned", f"stopped={output.stopped}"


async def test_no_task_wakes_per_message_when_served_inline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = socket_stream_pair()
    stream = MessageStream(server, LEN, readiness="hub")
    assert stream.transport.can_serve_inline
    with counting_steps("inline-server") as steps:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_session, stream, EchoSession(LEN), name="inline-server")
            for i in range(200):
                message = b"m%d" % i
                await client.send_all(frame(message))
                assert await client.receive_some(1000) == frame(message + H)
            await client.send_all(frame(b"q"))
            assert await client.receive_some(1000) == b""
    # Starting, parking once, the hand-back at "q", closing: a handful of
    # steps for 200 exchanges (the task path takes at least one per message).
    assert steps.steps < 20, steps.steps
    assert stream.messages_received == 201
    assert stream.messages_sent == 200


async def test_the_task_path_wakes_per_message(autojump_clock: trio.testing.MockClock) -> None:
    """The reference for the test above: Trio's waits, one step a message or more."""
    client, server = socket_stream_pair()
    stream = MessageStream(server, LEN, readiness="trio")
    assert not stream.transport.can_serve_inline
    with counting_steps("task-server") as steps:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_session, stream, EchoSession(LEN), name="task-server")
            for i in range(50):
                await client.send_all(frame(b"m%d" % i))
                assert await client.receive_some(1000) == frame(b"m%d" % i + H)
            await client.send_all(frame(b"q"))
    assert steps.steps >= 50


# -- differential: inline, task path, memory streams ------------------------

CASES = {
    "stop": (LEN, [frame(b"a") + frame(b"bb"), frame(b""), frame(b"q") + frame(b"never")]),
    "eof": (LEN, [frame(b"x" * 70000), frame(b"y")]),
    "incomplete": (LEN, [frame(b"a"), b"\x00\x00\x00\x09abc"]),
    "too-long": (
        FramingConfig("len", max_frame=100),
        [frame(b"ok"), frame(b"z" * 101)],
    ),
    "lines": (FramingConfig("line"), [b"one\ntw", b"o\r\nthree\n", b"q\n"]),
    "discard": (
        FramingConfig("line", max_frame=8, on_too_long="discard"),
        [b"short\n", b"much too long a line\nafter\n"],
    ),
    "big-replies": (LEN, [frame(b"b" * 300_000) * 3]),
}


def make_session(kind: str, config: FramingConfig) -> Any:
    if kind == "echo":
        return EchoSession(config)

    def respond(message: bytes) -> bytes | None:
        if message == b"q":
            session.stop()
            return None
        return message + H

    session = RespondSession(config.new_framer(), respond)
    return session


async def run_case(
    pair: str, kind: str, config: FramingConfig, chunks: list[bytes]
) -> tuple[bytes, tuple[str, str]]:
    client_stream: trio.abc.Stream
    if pair == "memory":
        client_stream, server_stream = trio.testing.memory_stream_pair()
        stream = MessageStream(server_stream, config)
    else:
        client_stream, server_sock = socket_stream_pair()
        stream = MessageStream(server_sock, config, readiness=cast(Readiness, pair))
        assert stream.transport.can_serve_inline == (pair == "hub")
    received = bytearray()
    outcome: list[tuple[str, str]] = []

    async def serve() -> None:
        outcome.append(await serve_session(stream, make_session(kind, config)))

    async def read() -> None:
        while True:
            try:
                data = await client_stream.receive_some(65536)
            except trio.BrokenResourceError:
                return
            if not data:
                return
            received.extend(data)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            nursery.start_soon(read)
            for chunk in chunks:
                try:
                    await client_stream.send_all(chunk)
                except trio.BrokenResourceError:
                    break
                await trio.testing.wait_all_tasks_blocked()
            if isinstance(client_stream, trio.abc.HalfCloseableStream):
                await client_stream.send_eof()
            else:
                await client_stream.aclose()
    return bytes(received), outcome[0]


@pytest.mark.parametrize("kind", ["echo", "respond"])
@pytest.mark.parametrize("case", sorted(CASES))
async def test_inline_and_task_paths_put_the_same_bytes_on_the_wire(
    case: str, kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    config, chunks = CASES[case]
    results = {
        pair: await run_case(pair, kind, config, chunks) for pair in ("hub", "trio", "memory")
    }
    assert results["hub"] == results["trio"] == results["memory"], {
        pair: (len(data), outcome) for pair, (data, outcome) in results.items()
    }
    data, outcome = results["hub"]
    if case == "stop":
        assert data == frame(b"a" + H) + frame(b"bb" + H) + frame(H)
        assert outcome == ("returned", "stopped=True")
    if case == "too-long":
        assert data == frame(b"ok" + H)
        assert outcome[0] == "raised" and outcome[1].startswith("FrameTooLongError")
    if case == "big-replies":
        assert data == frame(b"b" * 300_000 + H) * 3


# -- fairness ----------------------------------------------------------------


async def test_a_step_reads_at_most_turn_bytes_per_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A connection that keeps its socket full is served turn_bytes at a
    time, whichever task serves it (the hub, or its own task when a step
    found more than a turn's worth), and another connection's exchanges go
    on in between."""
    hub = ReadinessHub(turn_bytes=4096)
    steps = TaskSteps("")  # every task step
    trio.lowlevel.add_instrument(steps)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run, name="hub")
        flood_client, flood_server = socket_stream_pair()
        canary_client, canary_server = socket_stream_pair()
        streams = []
        for sock in (flood_server, canary_server):
            raw = sock.socket._sock  # type: ignore[attr-defined]
            transport = SocketTransport(sock, raw, watch=hub.watch(raw.fileno()))
            streams.append(MessageStream(transport, LEN))
        flood_session = RecordingSession(steps)
        nursery.start_soon(serve_session, streams[0], flood_session)
        nursery.start_soon(serve_session, streams[1], EchoSession(LEN))
        payload = frame(b"f" * 100) * 5000  # 520 KB: over 100 turns of 4 KiB
        flood_replies = len(frame(b"f" * 100 + H)) * 5000
        drained = trio.Event()

        async def drain() -> None:
            got = 0
            while got < flood_replies:
                got += len(await flood_client.receive_some(65536))
            drained.set()

        nursery.start_soon(drain)
        await flood_client.send_all(payload)
        exchanges = 0
        while not drained.is_set():
            await canary_client.send_all(frame(b"ping"))
            assert await canary_client.receive_some(100) == frame(b"ping" + H)
            exchanges += 1
        assert exchanges >= 1  # answered while the flood was still being read
        per_step: dict[int, int] = {}
        for step, size in flood_session.reads:
            per_step[step] = per_step.get(step, 0) + size
        assert sum(per_step.values()) == len(payload)
        assert max(per_step.values()) <= 4096
        assert len(per_step) >= len(payload) // 4096
        nursery.cancel_scope.cancel()
    trio.lowlevel.remove_instrument(steps)


class RecordingSession:
    """An echo session that records, for each read, the task step it came in
    (counted by ``steps``) and its size."""

    def __init__(self, steps: TaskSteps) -> None:
        self._steps = steps
        self._session = EchoSession(LEN)
        self.reads: list[tuple[int, int]] = []

    @property
    def buffered(self) -> int:
        return self._session.buffered

    def feed(self, data: bytes) -> Any:
        self.reads.append((self._steps.steps, len(data)))
        return self._session.feed(data)

    def feed_eof(self) -> Any:
        return self._session.feed_eof()


# -- handing back -------------------------------------------------------------


async def test_cancelling_a_parked_inline_task(autojump_clock: trio.testing.MockClock) -> None:
    client, server = socket_stream_pair()
    stream = MessageStream(server, LEN, readiness="hub")
    transport = stream.transport
    assert isinstance(transport, SocketTransport)
    watch = transport._watch
    assert watch is not None
    with trio.move_on_after(0.05) as scope:
        await stream.run_session(EchoSession(LEN))
    assert scope.cancelled_caught
    assert watch.inline is None
    assert watch.reader is None or watch.reader.custom_sleep_data is not watch
    # The hub no longer serves it: the bytes wait for the next receive.
    await client.send_all(frame(b"later"))
    await trio.testing.wait_all_tasks_blocked()
    assert await stream.receive_message() == b"later"
    await stream.aclose()


async def test_stop_receiving_wakes_a_parked_inline_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = socket_stream_pair()
    stream = MessageStream(server, LEN, readiness="hub")
    async with trio.open_nursery() as nursery:

        async def stop_soon() -> None:
            await client.send_all(frame(b"a"))
            assert await client.receive_some(100) == frame(b"a" + H)
            stream.stop_receiving()

        nursery.start_soon(stop_soon)
        with trio.fail_after(5):
            assert await stream.run_session(EchoSession(LEN)) is None
    assert stream.messages_sent == 1


async def expire_idle_streams(stream: MessageStream) -> None:
    """The server's watchdog, for one stream."""
    while True:
        await trio.sleep(0.02)
        stream.expire_if_idle(trio.current_time())


@pytest.mark.parametrize("trickle", [True, False])
@pytest.mark.parametrize("readiness", ["hub", "trio"])
async def test_idle_timeout_counts_messages_not_bytes(
    readiness: Readiness, trickle: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """Handed-over deadlines: a peer trickling one byte at a time of a message
    that never completes is timed out; one that keeps completing messages is not."""
    client, server = socket_stream_pair()
    stream = MessageStream(server, LEN, idle_timeout=0.3, readiness=readiness)
    stream.hand_over_deadlines()
    start = trio.current_time()

    async def talk() -> None:
        if trickle:
            unfinished = b"\x00\x00\x00\x40" + b"t" * 60
            for i in range(len(unfinished)):
                await client.send_all(unfinished[i : i + 1])
                await trio.sleep(0.1)
        else:
            for _ in range(12):  # 1.2 s of messages, 0.1 s apart
                await client.send_all(frame(b"y" * 40))
                await trio.sleep(0.1)
            await client.send_all(frame(b"q"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(expire_idle_streams, stream)
        nursery.start_soon(talk)
        with trio.fail_after(10):
            if trickle:
                with pytest.raises(IdleTimeoutError, match=r"idle_timeout=0\.3s"):
                    await stream.run_session(EchoSession(LEN))
                assert trio.current_time() - start < 1.0
            else:
                output = await stream.run_session(EchoSession(LEN))
                assert output is not None and output.stopped
                assert stream.messages_sent == 12
        nursery.cancel_scope.cancel()


async def test_a_short_send_is_finished_by_the_task_then_inline_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Replies larger than the socket buffer, to a peer that reads late:
    the hub hands the rest to the task, which sends it and hands back."""
    client, server = socket_stream_pair()
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stream = MessageStream(server, LEN, readiness="hub")
    big = b"r" * 200_000
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_session, stream, EchoSession(LEN))
        await client.send_all(frame(big))
        await trio.sleep(0.1)  # the server is blocked on its send
        expected = frame(big + H)
        got = bytearray()
        while len(got) < len(expected):
            got += await client.receive_some(65536)
        assert got == expected
        for i in range(20):  # served inline again
            await client.send_all(frame(b"%d" % i))
            assert await client.receive_some(100) == frame(b"%d" % i + H)
        await client.send_all(frame(b"q"))


# -- respond() handlers -------------------------------------------------------


class Shout(BaseRequestHandler):
    """A respond() handler: upper-cases, ignores ``skip``, ends at ``bye``."""

    def respond(self, message: bytes) -> bytes | None:
        if message == b"skip":
            return None
        if message == b"bye":
            self.end_session()
            return b"BYE"
        if message == b"crash":
            raise ZeroDivisionError("respond() bug")
        return message.upper()


async def exchange(port: int, data: bytes) -> bytes:
    """Connect, send ``data``, return everything received until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(data)
    received = b""
    while chunk := await stream.receive_some(1000):
        received += chunk
    await stream.aclose()
    return received


async def test_respond_handler_over_tcp(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    server = MessageServer(Shout, port=0, framing=FramingConfig("line"))
    async with running(server) as port:
        assert await exchange(port, b"hello\nskip\nworld\nbye\nafter\n") == b"HELLO\nWORLD\nBYE\n"
        # The replies of a read that crashed are not sent.
        assert await exchange(port, b"a\ncrash\n") == b""
        # The server goes on.
        other = await trio.open_tcp_stream("127.0.0.1", port)
        await other.send_all(b"still\n")
        assert await other.receive_some(1000) == b"STILL\n"
        await other.aclose()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "handler raised" in errors[0].getMessage()
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is ZeroDivisionError


async def test_respond_handler_over_memory_streams(autojump_clock: trio.testing.MockClock) -> None:
    client, server = trio.testing.memory_stream_pair()
    stream = MessageStream(server, FramingConfig("line"))
    handler = Shout(stream, ("memory", 0), None)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            async with stream:
                await handler.handle()

        nursery.start_soon(serve)
        await client.send_all(b"a\nskip\nb\nbye\nc\n")
        got = b""
        while chunk := await client.receive_some(1000):
            got += chunk
    assert got == b"A\nB\nBYE\n"


async def test_end_session_outside_respond_is_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _client, server = trio.testing.memory_stream_pair()
    handler = BaseRequestHandler(MessageStream(server), ("x", 0), None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="end_session\\(\\) is for respond\\(\\)"):
        handler.end_session()


async def test_respond_reply_that_cannot_be_framed_ends_after_the_replies_before_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Bad(BaseRequestHandler):
        def respond(self, message: bytes) -> bytes | None:
            return message + b"\nbroken" if message == b"2" else message

    server = MessageServer(Bad, port=0, framing=FramingConfig("line"))
    async with running(server) as port:
        assert await exchange(port, b"1\n2\n3\n") == b"1\n"


@pytest.mark.parametrize("handler", [EchoHandler, RespondEchoHandler])
async def test_echo_handlers_are_served_inline_by_the_server(
    handler: type[EchoHandler], autojump_clock: trio.testing.MockClock
) -> None:
    steps = TaskSteps("_run_handler")
    server = MessageServer(handler, port=0, framing=LEN, readiness="hub")
    async with running(server) as port:
        stream = MessageStream(await trio.open_tcp_stream("127.0.0.1", port), LEN)
        assert await stream.receive_message() == GREETING
        trio.lowlevel.add_instrument(steps)
        try:
            for i in range(100):
                await stream.send_message(b"%d" % i)
                assert await stream.receive_message() == b"%d" % i + H
        finally:
            trio.lowlevel.remove_instrument(steps)
        await stream.aclose()
    assert steps.steps < 10, steps.steps
    assert current_hub() is not None
