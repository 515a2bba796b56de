"""Serving on a unix socket (``MessageServer(unix_path=...)``) and connecting
to one (``open_unix_message_stream``).  ``trioecho serve --uds`` on a real
process is ``test_cli.py``'s; its option mistakes are ``test_cli_options.py``'s."""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioecho import (
    BaseRequestHandler,
    MessageServer,
    ProxyProtocolConfig,
    open_unix_message_stream,
)
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler


async def test_the_echo_service_on_a_unix_socket(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = str(tmp_path / "echo.sock")
    seen: list[Any] = []

    class Echo(BaseRequestHandler):
        async def handle(self) -> None:
            seen.append(self.client_address)
            async for message in self.request:
                await self.request.send_message(message + REPLY_SUFFIX)

    server = MessageServer(Echo, unix_path=path, framing="len")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert (
            repr(server) == f"<MessageServer serving on unix:{path}, framing='len', 0 connections>"
        )
        async with await open_unix_message_stream(path, framing="len") as stream:
            await stream.send_message(b"hi")
            assert await stream.receive_message() == b"hi" + REPLY_SUFFIX
        server.shutdown()
    assert seen == [f"unix:{path}"]
    assert not os.path.exists(path)  # removed at stop


async def test_a_stale_socket_file_is_replaced_and_the_mode_applied(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX) as dead:  # bound, never served: a crashed server's file
        dead.bind(path)
    server = MessageServer(EchoHandler, unix_path=path, unix_mode=0o600)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        async with await open_unix_message_stream(path) as stream:
            assert await stream.receive_message() == GREETING
        server.shutdown()


async def test_a_socket_a_live_server_uses_is_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = str(tmp_path / "live.sock")
    first = MessageServer(EchoHandler, unix_path=path)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.serve)
        with pytest.raises(OSError) as refused:
            await MessageServer(EchoHandler, unix_path=path).serve()
        assert refused.value.errno == errno.EADDRINUSE
        assert (
            str(refused.value)
            == f"[Errno {errno.EADDRINUSE}] a live server listens on it: '{path}'"
        )
        async with await open_unix_message_stream(path) as stream:  # the first one still serves
            assert await stream.receive_message() == GREETING
        first.shutdown()


async def test_a_path_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    with pytest.raises(FileExistsError) as refused:
        await MessageServer(EchoHandler, unix_path=str(path)).serve()
    assert str(refused.value) == f"[Errno 17] exists and is not a socket: not replaced: '{path}'"
    assert path.read_text() == "keep me"


async def test_a_unix_peer_may_send_a_proxy_header(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = str(tmp_path / "proxied.sock")
    seen: list[Any] = []

    class Record(BaseRequestHandler):
        async def handle(self) -> None:
            seen.append(self.client_address)

    server = MessageServer(
        Record, unix_path=path, proxy_protocol=ProxyProtocolConfig.from_options("v1")
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        client = await trio.open_unix_socket(path)
        await client.send_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n")
        assert await client.receive_some(100) == b""  # the handler returned
        server.shutdown()
    assert seen == [("203.0.113.7", 40000)]


def test_bad_unix_arguments() -> None:
    with pytest.raises(ValueError, match=r"^reuse_port is for TCP ports, not unix_path$"):
        MessageServer(EchoHandler, unix_path="/tmp/x.sock", reuse_port=True)
    with pytest.raises(
        ValueError, match=r"^unix_mode must be a file mode from 0 to 0o777, not 4096$"
    ):
        MessageServer(EchoHandler, unix_path="/tmp/x.sock", unix_mode=0o10000)
