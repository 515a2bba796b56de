"""TCP keepalive and ``TCP_USER_TIMEOUT`` (:mod:`trioecho.io.keepalive`): the
setting's text and its refusals, and the options read back with
``getsockopt`` on the sockets a server accepts, a client dials and a relay
holds on both sides.  What they do to a peer that vanishes is in
``test_dead_peers.py``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from trioecho import KeepAlive, MessageServer, MessageStream, open_message_stream
from trioecho.cli import main as cli_main
from trioecho.cli.main import main
from trioecho.cli.options import build_parser
from trioecho.io.keepalive import (
    DEFAULT_KEEPALIVE,
    apply_keepalive,
    keepalive_of,
    user_timeout_ms,
)
from trioecho.io.opening import open_transport
from trioecho.io.readiness import Readiness
from trioecho.io.socket_transport import SocketTransport
from trioecho.services.relay import relay_server

SYNTAX = 'IDLE[:INTERVAL[:COUNT]] (whole seconds; COUNT probes) or "off"'


def system_keepalive() -> tuple[int, int, int]:
    """The kernel's own idle, interval and count (a socket without ours)."""
    values = (
        Path(f"/proc/sys/net/ipv4/tcp_keepalive_{name}").read_text()
        for name in ("time", "intvl", "probes")
    )
    idle, interval, count = (int(value) for value in values)
    return idle, interval, count


def options_of(sock: Any) -> tuple[int, int, int, int, int]:
    """``(SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT,
    TCP_USER_TIMEOUT)`` as the kernel reads them back."""
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    )


def expected(keepalive: KeepAlive | None, user_timeout: int) -> tuple[int, int, int, int, int]:
    if keepalive is None:
        return (0, *system_keepalive(), user_timeout)
    return (1, keepalive.idle, keepalive.interval, keepalive.count, user_timeout)


async def echo(stream: MessageStream) -> None:
    async for message in stream:
        await stream.send_message(message)


# -- the setting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("60:10:6", KeepAlive(60, 10, 6)),
        ("2:1:3", KeepAlive(2, 1, 3)),
        ("300", KeepAlive(300, 10, 6)),
        ("120:5", KeepAlive(120, 5, 6)),
        ("60::3", KeepAlive(60, 10, 3)),
        ("32767:32767:127", KeepAlive(32767, 32767, 127)),
        (" 1:1:1 ", KeepAlive(1, 1, 1)),
        ("off", None),
    ],
)
def test_the_setting_is_read_from_its_text(text: str, parsed: KeepAlive | None) -> None:
    assert KeepAlive.parse(text) == parsed
    assert keepalive_of(text) == parsed
    if parsed is not None:
        assert KeepAlive.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", f"keepalive must be {SYNTAX}, not ''"),
        ("on", f"keepalive must be {SYNTAX}, not 'on'"),
        ("1m", f"keepalive must be {SYNTAX}, not '1m'"),
        ("1.5", f"keepalive must be {SYNTAX}, not '1.5'"),
        ("-1", f"keepalive must be {SYNTAX}, not '-1'"),
        (":10:6", f"keepalive must be {SYNTAX}, not ':10:6'"),
        ("1:2:3:4", f"keepalive must be {SYNTAX}, not '1:2:3:4'"),
        ("0", "keepalive idle must be 1 to 32767 seconds, not 0"),
        ("32768", "keepalive idle must be 1 to 32767 seconds, not 32768"),
        ("60:0", "keepalive interval must be 1 to 32767 seconds, not 0"),
        ("60:10:0", "keepalive count must be 1 to 127 probes, not 0"),
        ("60:10:128", "keepalive count must be 1 to 127 probes, not 128"),
    ],
)
def test_a_bad_text_is_refused_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        KeepAlive.parse(text)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"idle": 1.5}, TypeError, "keepalive idle must be an int (seconds), not 1.5"),
        ({"interval": True}, TypeError, "keepalive interval must be an int (seconds), not True"),
        ({"count": "6"}, TypeError, "keepalive count must be an int (probes), not '6'"),
        ({"idle": 0}, ValueError, "keepalive idle must be 1 to 32767 seconds, not 0"),
        ({"count": 200}, ValueError, "keepalive count must be 1 to 127 probes, not 200"),
    ],
)
def test_a_bad_field_is_refused_where_it_is_given(
    fields: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as refused:
        KeepAlive(**fields)
    assert type(refused.value) is error
    assert str(refused.value) == message


ARGUMENT = 'keepalive must be a KeepAlive, a str "IDLE[:INTERVAL[:COUNT]]" or None (off), not 60'


async def test_a_bad_argument_is_refused_where_it_is_given() -> None:
    async def handler(stream: MessageStream) -> None:
        pass

    with pytest.raises(TypeError) as refused:
        MessageServer(handler, keepalive=60)  # type: ignore[arg-type]
    assert str(refused.value) == ARGUMENT
    with pytest.raises(ValueError) as refused_text:
        MessageServer(handler, keepalive="60s")
    assert str(refused_text.value) == f"keepalive must be {SYNTAX}, not '60s'"
    with pytest.raises(TypeError) as refused:
        relay_server("db:5432", client_framing="len", server_framing="len", keepalive=60)  # type: ignore[arg-type]
    assert str(refused.value) == ARGUMENT
    with pytest.raises(TypeError) as refused:  # before it dials
        await open_message_stream("127.0.0.1", 9, keepalive=60)  # type: ignore[arg-type]
    assert str(refused.value) == ARGUMENT


def test_the_default_and_its_bound() -> None:
    assert DEFAULT_KEEPALIVE == KeepAlive() == KeepAlive(60, 10, 6)
    assert DEFAULT_KEEPALIVE.bound == 120  # a dead peer found within 2 minutes
    assert str(DEFAULT_KEEPALIVE) == "60:10:6"
    assert pickle.loads(pickle.dumps(DEFAULT_KEEPALIVE)) == DEFAULT_KEEPALIVE  # to workers
    assert MessageServer(echo).keepalive == DEFAULT_KEEPALIVE


@pytest.mark.parametrize(
    ("keepalive", "send_timeout", "milliseconds"),
    [
        (KeepAlive(60, 10, 6), 30.0, 120_000),  # the defaults: the keepalive bound
        (KeepAlive(60, 10, 6), 300.0, 120_000),  # the bound, whatever the send timeout
        (KeepAlive(2, 1, 3), 1.0, 5_000),  # never below the bound
        (KeepAlive(2, 1, 3), 30.0, 5_000),  # nor above it
        (KeepAlive(2, 1, 3), None, 0),  # no send timeout: the kernel's
        (None, 7.5, 7_500),  # no keepalive: the send timeout alone
        (None, 0.0004, 1),  # rounded up: 0 would mean none
        (None, None, 0),
        (None, 1e9, 2**31 - 1),  # the kernel's largest
    ],
)
def test_the_user_timeout_is_the_keepalive_bound_else_the_send_timeout(
    keepalive: KeepAlive | None, send_timeout: float | None, milliseconds: int
) -> None:
    assert user_timeout_ms(keepalive, send_timeout) == milliseconds


# -- the sockets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("keepalive", "send_timeout", "expect"),
    [
        (DEFAULT_KEEPALIVE, 30.0, (DEFAULT_KEEPALIVE, 120_000)),
        ("5:2:4", 30.0, (KeepAlive(5, 2, 4), 13_000)),
        (KeepAlive(5, 2, 4), None, (KeepAlive(5, 2, 4), 0)),
        (None, 7.5, (None, 7_500)),
        ("off", None, (None, 0)),
    ],
)
async def test_an_accepted_socket_has_the_servers_keepalive(
    keepalive: KeepAlive | str | None,
    send_timeout: float | None,
    expect: tuple[KeepAlive | None, int],
) -> None:
    seen: list[tuple[int, ...]] = []

    async def handler(stream: MessageStream) -> None:
        socket_stream = stream.transport_stream
        assert isinstance(socket_stream, trio.SocketStream)
        seen.append(options_of(socket_stream.socket))

    server = MessageServer(handler, port=0, keepalive=keepalive, send_timeout=send_timeout)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        async with await open_message_stream("127.0.0.1", server.port) as client:
            with pytest.raises(trio.EndOfChannel):
                await client.receive_message()
        server.shutdown()
    assert seen == [expected(*expect)]


@pytest.mark.parametrize(
    ("keepalive", "send_timeout", "expect"),
    [
        (None, None, (None, 0)),  # the default: Trio's socket, untouched
        ("3:4:5", 2.0, (KeepAlive(3, 4, 5), 23_000)),
        (KeepAlive(3, 4, 5), None, (KeepAlive(3, 4, 5), 0)),
        (None, 2.5, (None, 2_500)),
    ],
)
async def test_a_dialed_socket_has_the_clients_keepalive(
    keepalive: KeepAlive | str | None,
    send_timeout: float | None,
    expect: tuple[KeepAlive | None, int],
) -> None:
    server = MessageServer(echo, port=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        async with await open_message_stream(
            "127.0.0.1", server.port, keepalive=keepalive, send_timeout=send_timeout
        ) as client:
            socket_stream = client.transport_stream
            assert isinstance(socket_stream, trio.SocketStream)
            assert options_of(socket_stream.socket) == expected(*expect)
        server.shutdown()


@contextmanager
def socket_at(local: Any, peer: Any) -> Iterator[socket.socket]:
    """A duplicate of this process's TCP socket from ``local`` to ``peer``
    (found among its descriptors), to read its options."""
    found = None
    for name in os.listdir("/proc/self/fd"):
        try:
            candidate = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if candidate.family == socket.AF_INET and (
                candidate.getsockname(),
                candidate.getpeername(),
            ) == (local, peer):
                found = candidate
                break
        except OSError:
            pass
        candidate.close()
    assert found is not None, f"no socket from {local} to {peer}"
    try:
        yield found
    finally:
        found.close()


async def test_the_relay_sets_keepalive_on_both_sides() -> None:
    relay_addresses: list[Any] = []

    async def upstream_handler(stream: MessageStream) -> None:
        addresses = stream.addresses()
        assert addresses is not None
        relay_addresses.append(addresses[1])  # the relay's dialed socket
        await echo(stream)

    upstream = MessageServer(upstream_handler, port=0, framing="len")
    async with trio.open_nursery() as nursery:
        await nursery.start(upstream.serve)
        relay = relay_server(
            ("127.0.0.1", upstream.port),
            client_framing="len",
            server_framing="len",
            port=0,
            keepalive="7:3:2",
            send_timeout=4,
        )
        await nursery.start(relay.serve)
        async with await open_message_stream("127.0.0.1", relay.port, framing="len") as client:
            await client.send_message(b"through")
            assert await client.receive_message() == b"through"
            client_address = client.transport_stream.socket.getsockname()  # type: ignore[attr-defined]
            # the keepalive bound, 7 + 3 * 2 = 13 s
            both = (1, 7, 3, 2, 13_000)
            with socket_at(("127.0.0.1", relay.port), client_address) as accepted:
                assert options_of(accepted) == both
            with socket_at(relay_addresses[0], ("127.0.0.1", upstream.port)) as dialed:
                assert options_of(dialed) == both
        relay.shutdown()
        upstream.shutdown()


async def test_the_relays_default_keepalive_and_off() -> None:
    relay = relay_server("db:5432", client_framing="len", server_framing="len", port=0)
    assert relay.keepalive == DEFAULT_KEEPALIVE
    off = relay_server("db:5432", client_framing="len", server_framing="len", keepalive="off")
    assert off.keepalive is None


def test_a_unix_socket_is_left_alone() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        apply_keepalive(ours, DEFAULT_KEEPALIVE, 30.0)  # no TCP options to refuse
        assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


async def test_a_unix_server_serves_with_the_default_keepalive(tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    server = MessageServer(echo, unix_path=path)
    assert server.keepalive == DEFAULT_KEEPALIVE
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        unix = await trio.open_unix_socket(path)
        async with MessageStream(unix, "line") as client:
            await client.send_message(b"over unix")
            assert await client.receive_message() == b"over unix"
        server.shutdown()


# -- the command line ----------------------------------------------------------


@pytest.mark.parametrize("command", [["serve"], ["relay", "--upstream", "db:5432"]])
def test_the_command_line_option(command: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(command).keepalive == DEFAULT_KEEPALIVE
    assert parser.parse_args([*command, "--keepalive", "2:1:3"]).keepalive == KeepAlive(2, 1, 3)
    assert parser.parse_args([*command, "--keepalive", "off"]).keepalive is None


@pytest.mark.parametrize(
    "argv",
    [["serve", "--keepalive", "60:0"], ["relay", "--upstream", "db:5432", "--keepalive", "60:0"]],
)
def test_the_command_line_refuses_a_bad_setting(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"trioecho {argv[0]}: error: argument --keepalive: "
        "keepalive interval must be 1 to 32767 seconds, not 0\n"
    )


def test_the_relay_command_passes_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[MessageServer] = []

    def run_relay(args: argparse.Namespace, relay: MessageServer, *rest: object) -> int:
        built.append(relay)
        return 0

    monkeypatch.setattr(cli_main, "run_relay", run_relay)
    assert main(["relay", "--upstream", "db:5432", "--port", "0", "--keepalive", "9:8:7"]) == 0
    assert [relay.keepalive for relay in built] == [KeepAlive(9, 8, 7)]


@pytest.mark.parametrize("readiness", ["hub", "trio"])
async def test_a_send_waiting_for_its_reader_lifts_the_user_timeout_and_puts_it_back(
    readiness: Readiness,
) -> None:
    """While a send waits for the peer to read, the send rule decides, not
    the kernel: TCP_USER_TIMEOUT is 0 for the wait (else a keepalive bound
    shorter than the send timeout would let the kernel cut a live reader
    whose window stays closed), and the connection's value again after."""
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        reader = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    with reader:
        apply_keepalive(accepted, KeepAlive(2, 1, 3), 30.0)
        accepted.setblocking(False)
        sending = trio.SocketStream(trio.socket.from_stdlib_socket(accepted))
        transport = open_transport(sending, send_timeout=30.0, readiness=readiness)
        assert isinstance(transport, SocketTransport)
        payload = bytes(range(256)) * (32 << 12)  # 32 MiB: more than both buffers hold
        seen_while_blocked: list[int] = []

        async def watch_the_blocked_send() -> None:
            await trio.sleep(0.2)
            assert transport.sending
            seen_while_blocked.append(user_timeout_of(accepted))
            received = 0
            while received < len(payload):  # then read it all
                chunk = await trio.to_thread.run_sync(reader.recv, 1 << 20)
                assert chunk
                received += len(chunk)

        assert user_timeout_of(accepted) == 5_000
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_the_blocked_send)
            await transport.send_all(payload)
        assert seen_while_blocked == [0]
        assert user_timeout_of(accepted) == 5_000
        await transport.aclose()


def user_timeout_of(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
