"""Defects found by trying trioecho as a hostile peer and as an operator
would (issue: nothing lost, nothing stuck): forged log lines, telnet line
endings (and a ``\\r`` before any delimiter), empty error reasons.  Each on
an in-process server on loopback, with the framing ``trioecho serve``
builds from the options named (:mod:`support.cli_inprocess`).  Running out
of file descriptors needs a process of its own: ``test_hostile.py``."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from support import proxyheaders
from support.cli_inprocess import run_main, served_framing
from support.helpers import running

from trioecho import FramingConfig, MessageServer, ProxyProtocolConfig
from trioecho.logtext import escape_for_log, format_address
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    """``size`` bytes, or fewer if the stream ends first."""
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


async def wait_for_record(caplog: pytest.LogCaptureFixture, fragment: str) -> str:
    """The first captured message holding ``fragment``; waits for it."""
    with trio.fail_after(10):
        while True:
            for record in caplog.records:
                if fragment in record.getMessage():
                    return record.getMessage()
            await trio.sleep(0.01)


async def test_peer_text_cannot_forge_log_lines(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO)  # serve's level
    caplog.set_level(logging.INFO, logger="trioecho.connections")  # -v
    forged = "/tmp/x\n2026-01-01 00:00:00,000 ERROR trioecho: forged"
    proxy = ProxyProtocolConfig.from_options("v2")
    server = MessageServer(EchoHandler, port=0, framing=served_framing(), proxy_protocol=proxy)
    async with running(server) as port:
        client = await trio.open_tcp_stream("127.0.0.1", port)
        async with client:
            await client.send_all(proxyheaders.v2(forged, "/run/trioecho.sock"))
            assert await receive_exactly(client, len(GREETING) + 1) == GREETING + b"\n"
        line = await wait_for_record(caplog, "connected")
        assert "/tmp/x\\n2026-01-01" in line
    assert not [r for r in caplog.records if "\n" in r.getMessage()]  # no record starts a line
    assert escape_for_log("a\tb\x1b[31m") == "a\\tb\\x1b[31m"
    assert format_address(("::1", 80)) == "[::1]:80"


async def echoes(framing: FramingConfig, *exchanges: tuple[bytes, bytes], ends: bool) -> None:
    """On one connection to an echo server of ``framing``, after the greeting:
    each exchange's bytes sent are answered with its bytes expected; then, if
    ``ends``, the server ends the connection."""
    greeting = GREETING + framing.delimiter  # type: ignore[operator]
    async with running(MessageServer(EchoHandler, port=0, framing=framing)) as port:
        client = await trio.open_tcp_stream("127.0.0.1", port)
        async with client:
            assert await receive_exactly(client, len(greeting)) == greeting
            for send, expected in exchanges:
                await client.send_all(send)
                assert await receive_exactly(client, len(expected)) == expected
            if ends:
                assert await client.receive_some(100) == b""


async def test_telnet_line_endings_are_stripped_by_default(
    autojump_clock: trio.testing.MockClock,
) -> None:
    expected = b"hello" + REPLY_SUFFIX + b"\nworld" + REPLY_SUFFIX + b"\n"
    # q\r\n ends the session, as q\n does
    await echoes(served_framing(), (b"hello\r\nworld\n", expected), (b"q\r\n", b""), ends=True)
    keeping = served_framing("--keep-cr")
    await echoes(keeping, (b"hello\r\n", b"hello\r" + REPLY_SUFFIX + b"\n"), ends=False)


async def test_strip_cr_strips_before_any_delimiter_as_its_help_says(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    for option, message in [("--strip-cr", b"ab"), ("--keep-cr", b"ab\r")]:
        framing = served_framing("--delimiter", "\\0", option)
        exchange = (bytes([0x61, 0x62, 0x0D, 0x00]), message + REPLY_SUFFIX + b"\0")
        await echoes(framing, exchange, ends=False)
    monkeypatch.setenv("COLUMNS", "200")  # each option's help on one line
    result = run_main(["serve", "--help"])
    assert result.code == 0
    helps = {
        line.split()[0]: line.split(None, 1)[1]
        for line in result.stdout.splitlines()
        if line.startswith(("  --strip-cr", "  --keep-cr"))
    }
    assert helps == {
        "--strip-cr": "line: strip one \\r just before the delimiter that ends a line, whichever "
        "delimiter it is (telnet and Windows end lines with \\r\\n; the default)",
        "--keep-cr": "line: keep a \\r before the delimiter as part of the message",
    }
