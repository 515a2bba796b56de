"""Handlers that misbehave, on a real server on loopback: none of them may
stop, stall or silence it.

Every case runs a :class:`MessageServer` with ``max_connections=2``: a
canary connection is answered, then the culprit's connection misbehaves,
then the canary is answered again and a third connection is served in the
culprit's slot (a slot the culprit leaked would leave it waiting for ever),
and the server shuts down cleanly (``serve`` returns, nothing raised).  The
culprit's failure is exactly one log line on ``trioecho.server`` naming its
address (one ERROR with the traceback for a handler's bug) and one count in
``closed_by_reason``.

The culprit is the server's second connection (``connections_served ==
2``): the canary is answered before it connects.  Handlers come in both
styles where a case allows: ``respond()`` (served inline on the readiness
hub) and ``async def handle()``.
"""

from __future__ import annotations

import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import trio
import trio.testing
from support.helpers import running

from trioecho import (
    BaseRequestHandler,
    CloseReason,
    MessageServer,
    MessageStream,
    open_message_stream,
)
from trioecho.logtext import format_address
from trioecho.reasons import CLOSE_REASONS

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

CULPRIT = 2  # the server's second connection
TIMEOUT = 10  # seconds any case may take


def is_culprit(handler: BaseRequestHandler) -> bool:
    return handler.server.connections_served == CULPRIT


# -- the two styles, behaving ----------------------------------------------


class Answering(BaseRequestHandler):
    """respond(): the message back; ``boom`` misbehaves (``misbehave``)."""

    def respond(self, message: bytes) -> bytes | None:
        if message == b"boom":
            return self.misbehave()  # type: ignore[no-any-return]
        return message

    def misbehave(self) -> Any:
        return None


class Echoing(BaseRequestHandler):
    """handle(): the message back; ``boom`` misbehaves (``misbehave``)."""

    async def handle(self) -> None:
        async for message in self.request:
            if message == b"boom":
                await self.misbehave()
                return
            await self.request.send_message(message)

    async def misbehave(self) -> None:
        pass


# -- the run every case shares ---------------------------------------------


async def answered(stream: MessageStream, message: bytes) -> None:
    await stream.send_message(message)
    assert await stream.receive_message() == message


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(0.01)


async def run_culprit(
    handler: Any,
    misbehave: Callable[[MessageStream], Any],
    caplog: pytest.LogCaptureFixture,
    **options: Any,
) -> tuple[MessageServer, str]:
    """Serve ``handler``; canary, then the culprit's connection (``misbehave``
    does what its client does, then it closes), then the canary again and a
    third connection in the culprit's slot, then shut down.  Returns the
    server, stopped, and the culprit's address as logged."""
    caplog.set_level(logging.INFO, logger="trioecho")
    server = MessageServer(handler, port=0, max_connections=2, grace=2, **options)
    with trio.fail_after(TIMEOUT):
        async with running(server) as port:
            canary = await open_message_stream("127.0.0.1", port)
            await answered(canary, b"canary before")
            culprit = await open_message_stream("127.0.0.1", port)
            where = format_address(culprit.addresses()[0])  # type: ignore[index]
            await misbehave(culprit)
            await culprit.aclose()
            await until(lambda: server.active_connections == 1)
            await answered(canary, b"canary after")
            third = await open_message_stream("127.0.0.1", port)  # in the culprit's slot
            await answered(third, b"third")
            await third.aclose()
            await canary.aclose()
            await until(lambda: server.active_connections == 0)
        await server.wait_stopped()
    return server, where


async def send_boom(stream: MessageStream) -> None:
    """Send ``boom``; the server closes the connection without a reply."""
    await stream.send_message(b"boom")
    with pytest.raises(trio.EndOfChannel):
        await stream.receive_message()


async def connect_only(stream: MessageStream) -> None:
    """The misbehaviour needs no message (setup, finish)."""
    await trio.sleep(0.05)


def failure_lines(caplog: pytest.LogCaptureFixture, where: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trioecho.server" and where in r.getMessage()]


def closed(server: MessageServer) -> dict[str, int]:
    """The server's closes but the canary's and the third's (peer_closed)."""
    counts = {key: value for key, value in server.closed_by_reason.items() if value}
    counts["peer_closed"] -= 2
    return {key: value for key, value in counts.items() if value}


def assert_one_bug(
    server: MessageServer,
    caplog: pytest.LogCaptureFixture,
    where: str,
    error: type[BaseException],
    message: str,
) -> None:
    """One ERROR with the traceback of ``error`` (``message`` in it), counted
    as handler_error."""
    [line] = failure_lines(caplog, where)
    assert line.levelno == logging.ERROR
    assert line.getMessage() == f"{where}: handler raised; closing its connection"
    assert line.exc_info is not None
    raised = line.exc_info[1]
    if isinstance(raised, BaseExceptionGroup):
        [raised] = raised.exceptions
    assert type(raised) is error
    assert message in str(raised)
    assert closed(server) == {"handler_error": 1}


# -- raising in every method -----------------------------------------------


class SetupRaisesRespond(Answering):
    async def setup(self) -> None:
        if is_culprit(self):
            raise RuntimeError("bug in setup")


class SetupRaisesHandle(Echoing):
    async def setup(self) -> None:
        if is_culprit(self):
            raise RuntimeError("bug in setup")


class FinishRaisesRespond(Answering):
    async def finish(self) -> None:
        if is_culprit(self):
            raise RuntimeError("bug in finish")


class FinishRaisesHandle(Echoing):
    async def finish(self) -> None:
        if is_culprit(self):
            raise RuntimeError("bug in finish")


class RespondRaises(Answering):
    def misbehave(self) -> Any:
        raise RuntimeError("bug in respond")


class HandleRaises(Echoing):
    async def misbehave(self) -> None:
        raise RuntimeError("bug in handle")


async def function_raises(stream: MessageStream) -> None:
    async for message in stream:
        if message == b"boom":
            raise RuntimeError("bug in a plain handler")
        await stream.send_message(message)


@pytest.mark.parametrize(
    ("handler", "misbehave", "message"),
    [
        (SetupRaisesRespond, connect_only, "bug in setup"),
        (SetupRaisesHandle, connect_only, "bug in setup"),
        (FinishRaisesRespond, connect_only, "bug in finish"),
        (FinishRaisesHandle, connect_only, "bug in finish"),
        (RespondRaises, send_boom, "bug in respond"),
        (HandleRaises, send_boom, "bug in handle"),
        (function_raises, send_boom, "bug in a plain handler"),
    ],
    ids=lambda case: getattr(case, "__name__", None),
)
async def test_a_handler_that_raises_is_one_error(
    handler: Any,
    misbehave: Callable[[MessageStream], Any],
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, where = await run_culprit(handler, misbehave, caplog)
    assert_one_bug(server, caplog, where, RuntimeError, message)


# -- wrong return types ----------------------------------------------------


def returning(value: object) -> type[Answering]:
    class Returns(Answering):
        def misbehave(self) -> Any:
            return value

    return Returns


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("text", "not str: encode the text first, e.g. return text.encode()"),
        (5, "not int"),
        ([b"a", b"b"], "not list"),
        ({"reply": b"a"}, "not dict"),
    ],
    ids=["str", "int", "list", "dict"],
)
async def test_respond_returning_a_wrong_type_is_named(
    value: object, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    server, where = await run_culprit(returning(value), send_boom, caplog)
    assert_one_bug(
        server,
        caplog,
        where,
        TypeError,
        f"Returns.respond() must return bytes (or a bytearray or memoryview) or None, {message}",
    )


class SendsText(Echoing):
    async def misbehave(self) -> None:
        await self.request.send_message("text")  # type: ignore[arg-type]


async def test_handle_sending_text_is_named(caplog: pytest.LogCaptureFixture) -> None:
    server, where = await run_culprit(SendsText, send_boom, caplog)
    assert_one_bug(server, caplog, where, TypeError, "a message is bytes, not str")


@pytest.mark.parametrize(
    "reply", [bytearray(b"boom"), memoryview(b"boom")], ids=["bytearray", "memoryview"]
)
async def test_respond_may_return_any_bytes_like(
    reply: object, caplog: pytest.LogCaptureFixture
) -> None:
    async def answered_boom(stream: MessageStream) -> None:
        await answered(stream, b"boom")

    server, where = await run_culprit(returning(reply), answered_boom, caplog)
    assert failure_lines(caplog, where) == []
    assert closed(server) == {"peer_closed": 1}


# -- odd stream state ------------------------------------------------------


def ending_with(reason: object, style: str) -> type[BaseRequestHandler]:
    """A handler that sets ``close_reason`` to ``reason`` at ``boom`` and ends."""
    if style == "respond":

        class EndsRespond(Answering):
            def misbehave(self) -> Any:
                self.request.close_reason = reason  # type: ignore[assignment]
                self.end_session()

        return EndsRespond

    class EndsHandle(Echoing):
        async def misbehave(self) -> None:
            self.request.close_reason = reason  # type: ignore[assignment]

    return EndsHandle


@pytest.mark.parametrize("style", ["respond", "handle"])
@pytest.mark.parametrize(
    ("reason", "counted", "text"),
    [
        ("custom", "other", "custom"),
        ("two\nlines\x1b[2J", "other", "two\\nlines\\x1b[2J"),
        (CloseReason.REFUSED, "refused", "refused"),
        ("memory_budget", "memory_budget", "memory_budget"),  # a member's value
    ],
    ids=["own", "own-with-controls", "member", "member-value"],
)
async def test_a_handler_may_set_its_own_close_reason(
    style: str, reason: object, counted: str, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioecho.access")
    server, where = await run_culprit(ending_with(reason, style), send_boom, caplog)
    assert failure_lines(caplog, where) == []
    assert closed(server) == {counted: 1}
    [record] = [
        r
        for r in caplog.records
        if r.name == "trioecho.access" and r.getMessage().startswith(where)
    ]
    assert record.close_reason == text  # type: ignore[attr-defined]
    assert record.getMessage().startswith(f"{where}: {text} after ")


@pytest.mark.parametrize("style", ["respond", "handle"])
@pytest.mark.parametrize("reason", [5, b"custom", ["custom"]], ids=["int", "bytes", "list"])
async def test_a_close_reason_that_is_not_a_str_is_refused_where_it_is_set(
    style: str, reason: object, caplog: pytest.LogCaptureFixture
) -> None:
    server, where = await run_culprit(ending_with(reason, style), send_boom, caplog)
    assert_one_bug(
        server,
        caplog,
        where,
        TypeError,
        "close_reason must be a str (a trioecho.CloseReason, or a reason of the handler's "
        f"own) or None, not {type(reason).__name__}",
    )


def test_every_reason_is_counted_and_labelled() -> None:
    """Each reason formats as its value (str(), f-strings, logging's %s),
    on every Python: the counters' keys and the metric's labels."""
    assert [reason.value for reason in CloseReason] == list(CLOSE_REASONS)
    assert [str(reason) for reason in CloseReason] == list(CLOSE_REASONS)
    assert [f"{reason}" for reason in CloseReason] == list(CLOSE_REASONS)
    assert [
        logging.LogRecord("", 0, "", 0, "%s", (r,), None).getMessage() for r in CloseReason
    ] == list(CLOSE_REASONS)
    assert CLOSE_REASONS[-1] == "other"


# -- the stream used after close, Trio errors from the handler's own objects


class SendsAfterCloseHandle(Echoing):
    async def misbehave(self) -> None:
        await self.request.aclose()
        await self.request.send_message(b"too late")


class SendsAfterCloseRespond(Answering):
    async def finish(self) -> None:
        if is_culprit(self):
            await self.request.aclose()
            await self.request.send_message(b"too late")


@pytest.mark.parametrize("handler", [SendsAfterCloseHandle, SendsAfterCloseRespond])
async def test_a_send_after_the_handler_closed_its_stream_is_its_bug(
    handler: Any, caplog: pytest.LogCaptureFixture
) -> None:
    misbehave = send_boom if handler is SendsAfterCloseHandle else connect_only
    server, where = await run_culprit(handler, misbehave, caplog)
    assert_one_bug(server, caplog, where, trio.ClosedResourceError, "")


def own_channel(broken: bool) -> tuple[trio.MemorySendChannel[bytes], Any]:
    """A memory channel closed at one end: sending raises ClosedResourceError
    (its sending end closed) or BrokenResourceError (its receiving end)."""
    send, receive = trio.open_memory_channel[bytes](1)
    (receive if broken else send).close()
    return send, receive


@pytest.mark.parametrize("style", ["respond", "handle"])
@pytest.mark.parametrize(
    ("broken", "error"),
    [(False, trio.ClosedResourceError), (True, trio.BrokenResourceError)],
    ids=["closed", "broken"],
)
async def test_trio_errors_from_the_handlers_own_channel_are_its_bug(
    style: str, broken: bool, error: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    class ChannelRespond(Answering):
        def misbehave(self) -> Any:
            own_channel(broken)[0].send_nowait(b"x")

    class ChannelHandle(Echoing):
        async def misbehave(self) -> None:
            await own_channel(broken)[0].send(b"x")

    handler = ChannelRespond if style == "respond" else ChannelHandle
    server, where = await run_culprit(handler, send_boom, caplog)
    assert_one_bug(server, caplog, where, error, "")


# -- background tasks left running -----------------------------------------


class TaskFails(Echoing):
    """A task of the handler's own nursery raises while the other receives."""

    async def handle(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(super().handle)
            if is_culprit(self):
                await trio.sleep(0.05)
                raise ValueError("bug in a background task")


async def test_a_background_task_that_raises_is_one_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def waits_for_the_end(stream: MessageStream) -> None:
        with pytest.raises(trio.EndOfChannel):
            await stream.receive_message()

    server, where = await run_culprit(TaskFails, waits_for_the_end, caplog)
    assert_one_bug(server, caplog, where, ValueError, "bug in a background task")


class Ticking(Echoing):
    """A task of the handler's own nursery keeps sending, unasked, until the
    peer is gone: the handler's nursery then fails with the peer's failure."""

    async def handle(self) -> None:
        async with trio.open_nursery() as nursery:
            if is_culprit(self):
                nursery.start_soon(self.tick)
            await super().handle()

    async def tick(self) -> None:
        while True:
            await self.request.send_message(b"tick")
            await trio.sleep(0.01)


async def test_a_background_task_that_outlives_its_peer_is_a_peer_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def leaves_unread(stream: MessageStream) -> None:
        assert await stream.receive_message() == b"tick"
        # Close with a reset, as a client that vanished: SO_LINGER on, 0 s.
        stream.transport_stream.socket.setsockopt(  # type: ignore[attr-defined]
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )

    server, where = await run_culprit(Ticking, leaves_unread, caplog)
    [line] = failure_lines(caplog, where)
    assert line.levelno == logging.INFO and line.exc_info is None
    assert line.getMessage().startswith(f"{where}: connection broken while ")
    assert closed(server) == {"reset": 1}


class ThreadAfterReturn(Echoing):
    """Hands its stream to a thread that uses it after the handler returned."""

    outcome: ClassVar[list[BaseException]] = []
    done = threading.Event()

    async def misbehave(self) -> None:
        token = trio.lowlevel.current_trio_token()
        stream = self.request

        def later() -> None:
            time.sleep(0.2)
            try:
                trio.from_thread.run(stream.send_message, b"late", trio_token=token)
            except BaseException as exc:
                self.outcome.append(exc)
            self.done.set()

        threading.Thread(target=later, daemon=True).start()


async def test_a_thread_using_the_stream_after_the_handler_returned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom_then_wait(stream: MessageStream) -> None:
        await send_boom(stream)
        await trio.to_thread.run_sync(ThreadAfterReturn.done.wait, 5)

    server, where = await run_culprit(ThreadAfterReturn, boom_then_wait, caplog)
    [error] = ThreadAfterReturn.outcome
    assert type(error) is trio.ClosedResourceError  # in the thread, not the server
    assert failure_lines(caplog, where) == []
    assert closed(server) == {"handler_returned": 1}


class CleanupFails(BaseRequestHandler):
    """Two tasks wait for ever; when the grace period's end cancels them, one
    raises from its cleanup: a group of Cancelled and that bug."""

    async def handle(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(self.fails_on_cancel)

    async def fails_on_cancel(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise ValueError("bug in a cleanup")


async def test_a_bug_raised_while_shutdown_cancels_the_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = MessageServer(CleanupFails, port=0, grace=0.2)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            client = await open_message_stream("127.0.0.1", port)
            where = format_address(client.addresses()[0])  # type: ignore[index]
            await until(lambda: server.active_connections == 1)
            server.shutdown()
            await server.wait_stopped()  # serve() returns: the bug stopped nothing
            await client.aclose()
    [line] = failure_lines(caplog, where)
    assert line.levelno == logging.ERROR and line.exc_info is not None
    assert "bug in a cleanup" in repr(line.exc_info[1])
    assert server.closed_by_reason["handler_error"] == 1
    assert server.active_connections == 0


# -- the server's own endings stay quiet, with a handler's nursery too ------


class TwoTasks(BaseRequestHandler):
    """Receives in one task; at ``flood N`` another task sends N kilobytes
    while it goes on receiving.  The server's endings reach such a handler
    as an exception group (its nursery's).  ``receiving_raised``: what
    ended the receiving task."""

    receiving_raised: ClassVar[list[type[BaseException]]] = []

    async def handle(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.receiving, nursery)

    async def receiving(self, nursery: trio.Nursery) -> None:
        try:
            async for message in self.request:
                if message.startswith(b"flood "):
                    nursery.start_soon(self.flood, int(message[6:]))
                else:
                    await self.request.send_message(message)
        except BaseException as exc:
            self.receiving_raised.append(type(exc))
            raise

    async def flood(self, size: int) -> None:
        for _ in range(size):
            await self.request.send_message(b"x" * 1000)


async def serve_one(
    caplog: pytest.LogCaptureFixture, client: Callable[[MessageServer, int], Any], **options: Any
) -> tuple[MessageServer, str]:
    """Serve TwoTasks for one client; returns the server, stopped, and the
    client's address as logged."""
    caplog.set_level(logging.INFO, logger="trioecho")
    server = MessageServer(TwoTasks, port=0, grace=2, **options)
    with trio.fail_after(TIMEOUT):
        async with running(server) as port:
            where = await client(server, port)
        await server.wait_stopped()
    return server, where


async def test_the_idle_timeout_is_one_line_through_a_nursery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def silent(server: MessageServer, port: int) -> str:
        async with await open_message_stream("127.0.0.1", port) as stream:
            with pytest.raises(trio.EndOfChannel):
                await stream.receive_message()
            return format_address(stream.addresses()[0])  # type: ignore[index]

    server, where = await serve_one(caplog, silent, idle_timeout=0.3)
    [line] = failure_lines(caplog, where)
    assert (line.levelno, line.exc_info) == (logging.INFO, None)
    assert line.getMessage() == f"{where}: closing: no complete message within idle_timeout=0.3s"
    assert {key: value for key, value in server.closed_by_reason.items() if value} == {"idle": 1}


async def test_shutdown_is_quiet_through_a_nursery(caplog: pytest.LogCaptureFixture) -> None:
    async def stays(server: MessageServer, port: int) -> str:
        async with await open_message_stream("127.0.0.1", port) as stream:
            await answered(stream, b"hello")
            server.shutdown()
            with pytest.raises(trio.EndOfChannel):
                await stream.receive_message()
            return format_address(stream.addresses()[0])  # type: ignore[index]

    server, where = await serve_one(caplog, stays)
    assert failure_lines(caplog, where) == []
    assert {key: value for key, value in server.closed_by_reason.items() if value} == {
        "shutdown": 1
    }


async def test_a_slow_reader_is_one_line_though_another_task_was_receiving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The send timeout closes the stream under the receiving task: its
    ClosedResourceError comes with the SlowReaderError, the server's own
    close, not a bug."""

    async def never_reads(server: MessageServer, port: int) -> str:
        async with await open_message_stream("127.0.0.1", port) as stream:
            where = format_address(stream.addresses()[0])  # type: ignore[index]
            await stream.send_message(b"flood 100000")  # 100 MB, never read
            await until(lambda: server.active_connections == 0)
        return where

    TwoTasks.receiving_raised.clear()
    server, where = await serve_one(caplog, never_reads, send_timeout=0.5)
    assert TwoTasks.receiving_raised == [trio.ClosedResourceError]
    [line] = failure_lines(caplog, where)
    assert (line.levelno, line.exc_info) == (logging.WARNING, None)
    assert line.getMessage().startswith(f"{where}: closing: peer did not read its replies")
    assert {key: value for key, value in server.closed_by_reason.items() if value} == {
        "slow_reader": 1
    }
