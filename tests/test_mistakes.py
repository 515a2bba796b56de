"""The natural mistakes of a new user, each refused where it is made.

Every public entry point checks its arguments when it is called: a wrong
one gets one ``TypeError`` or ``ValueError`` naming the argument and the
fix, never an error at the first connection.  Each case below asserts the
exact exception and message.

Run as a script, it makes each mistake and prints what the user sees::

    python tests/test_mistakes.py
"""

from __future__ import annotations

import argparse
import socketserver
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from trioecho import (
    BaseRequestHandler,
    EchoSession,
    FramingConfig,
    GreetingError,
    MemoryBudget,
    MessageServer,
    MessageStream,
    TLSHandshakeError,
    make_framer,
    open_message_stream,
)
from trioecho.cli.main import main
from trioecho.services.echo import EchoHandler, GenericEchoHandler, RespondEchoHandler
from trioecho.services.greeting import expect_greeting
from trioecho.services.relay import relay_server


async def handler(stream: MessageStream) -> None:
    async for message in stream:
        await stream.send_message(message)


def sync_handler(stream: MessageStream) -> None:
    pass


class SyncHandle(BaseRequestHandler):
    def handle(self) -> None:  # type: ignore[override]
        pass


class AsyncRespond(BaseRequestHandler):
    async def respond(self, message: bytes) -> bytes:  # type: ignore[override]
        return message


class Nothing(BaseRequestHandler):
    pass


class Both(BaseRequestHandler):
    async def handle(self) -> None:
        pass

    def respond(self, message: bytes) -> bytes:
        return message


class Greeting(EchoHandler):  # a handle() handler, with a respond() added
    def respond(self, message: bytes) -> bytes:
        return message


class SyncSetup(BaseRequestHandler):
    def setup(self) -> None:  # type: ignore[override]
        pass

    async def handle(self) -> None:
        pass


class Seed(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        pass


FRAMING_NAMES = "(line, len, raw, varint, fixed)"
HANDLER_KINDS = (
    "an async def function taking the MessageStream, or a BaseRequestHandler "
    "subclass with async def handle() or def respond()"
)


def wrong(value: object) -> Any:
    """An argument of the wrong type, on purpose (mypy would refuse it)."""
    return value


def _stream() -> trio.abc.Stream:
    return trio.testing.memory_stream_pair()[0]


# (what the user wrote, the call, the exception, its exact message)
CONSTRUCTION: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    (
        "MessageServer(handler, framing='lenn')",
        lambda: MessageServer(handler, framing="lenn"),
        ValueError,
        "framing must be one of ('line', 'len', 'raw', 'varint', 'fixed'), not 'lenn'",
    ),
    (
        "MessageServer(handler, framing=5)",
        lambda: MessageServer(handler, framing=wrong(5)),
        TypeError,
        f"framing must be a FramingConfig or a framing name {FRAMING_NAMES}, not int",
    ),
    (
        "MessageServer(handler, memory_budget='64M')",
        lambda: MessageServer(handler, memory_budget=wrong("64M")),
        TypeError,
        "memory_budget must be a byte count (an int) or a MemoryBudget, not '64M'",
    ),
    (
        "MessageServer(handler, memory_budget=0)",
        lambda: MessageServer(handler, memory_budget=0),
        ValueError,
        "memory_budget must be at least 1 byte, not 0",
    ),
    (
        "MessageServer(handler, port=99999)",
        lambda: MessageServer(handler, port=99999),
        ValueError,
        "port must be from 0 to 65535, not 99999",
    ),
    (
        "MessageServer(handler, port=65536)",
        lambda: MessageServer(handler, port=65536),
        ValueError,
        "port must be from 0 to 65535, not 65536",
    ),
    (
        "MessageServer(handler, port=-1)",
        lambda: MessageServer(handler, port=-1),
        ValueError,
        "port must be from 0 to 65535, not -1",
    ),
    (
        "MessageServer(handler, port='9999')",
        lambda: MessageServer(handler, port=wrong("9999")),
        TypeError,
        "port must be an int from 0 to 65535, not '9999'",
    ),
    (
        "MessageServer(handler, host=0)",
        lambda: MessageServer(handler, host=wrong(0)),
        TypeError,
        'host must be a str (a name or an address; "" or None for every interface), not 0',
    ),
    (
        "MessageServer(None)",
        lambda: MessageServer(wrong(None)),
        TypeError,
        f"handler must be {HANDLER_KINDS}, not None",
    ),
    (
        "MessageServer(sync_handler)",
        lambda: MessageServer(wrong(sync_handler)),
        TypeError,
        "handler sync_handler must be async def: a plain function cannot wait for messages "
        "(write async def, or a BaseRequestHandler with def respond(self, message))",
    ),
    (
        "MessageServer(SyncHandle)",
        lambda: MessageServer(SyncHandle),
        TypeError,
        "SyncHandle.handle must be async def (the server awaits it): "
        "or define def respond(self, message) instead",
    ),
    (
        "MessageServer(AsyncRespond)",
        lambda: MessageServer(AsyncRespond),
        TypeError,
        "AsyncRespond.respond must be a plain def returning the reply (it runs inline, "
        "with no await): use async def handle() to await",
    ),
    (
        "MessageServer(Nothing)",
        lambda: MessageServer(Nothing),
        TypeError,
        "Nothing defines neither handle() nor respond(): it would close every connection at once",
    ),
    (
        "MessageServer(Both)  # handle() and respond()",
        lambda: MessageServer(Both),
        TypeError,
        "Both defines both handle() and respond(): the server calls handle(), so respond() "
        "would never be called; keep one: def respond(self, message) alone (send what comes "
        "first from async def setup()), or async def handle() alone",
    ),
    (
        "MessageServer(Greeting)  # respond() added to a handle() handler",
        lambda: MessageServer(Greeting),
        TypeError,
        "Greeting defines both handle() and respond(): the server calls handle(), so "
        "respond() would never be called; keep one: def respond(self, message) alone (send "
        "what comes first from async def setup()), or async def handle() alone",
    ),
    (
        "stream.close_reason = 5",
        lambda: setattr(MessageStream(_stream()), "close_reason", 5),
        TypeError,
        "close_reason must be a str (a trioecho.CloseReason, or a reason of the handler's "
        "own) or None, not int",
    ),
    (
        "stream.close_reason = ''",
        lambda: setattr(MessageStream(_stream()), "close_reason", ""),
        ValueError,
        "close_reason must be a non-empty str (or None), not ''",
    ),
    (
        "MessageServer(SyncSetup)",
        lambda: MessageServer(SyncSetup),
        TypeError,
        "SyncSetup.setup must be async def (the server awaits it)",
    ),
    (
        "MessageServer(Seed)  # socketserver's handler",
        lambda: MessageServer(wrong(Seed)),
        TypeError,
        "handler Seed must subclass trioecho.BaseRequestHandler "
        "(not socketserver.BaseRequestHandler)",
    ),
    (
        "MessageServer(EchoHandler(...))  # an instance",
        lambda: MessageServer(wrong(EchoHandler(wrong(None), None, wrong(None)))),
        TypeError,
        "handler must be the class EchoHandler, not an instance of it: "
        "the server makes one per connection",
    ),
    (
        "MessageServer(handler, ssl_context=ssl.create_default_context())",
        lambda: MessageServer(handler, ssl_context=ssl.create_default_context()),
        ValueError,
        "ssl_context is a client-side context (ssl.create_default_context() makes those): "
        "a server needs ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) with "
        "load_cert_chain(), or trioecho.io.tls.server_context(certfile, keyfile)",
    ),
    (
        "MessageServer(handler, ssl_context='cert.pem')",
        lambda: MessageServer(handler, ssl_context=wrong("cert.pem")),
        TypeError,
        "ssl_context must be an ssl.SSLContext or None, not 'cert.pem'",
    ),
    (
        "MessageServer(handler, max_connections=0)",
        lambda: MessageServer(handler, max_connections=0),
        ValueError,
        "max_connections must be at least 1, not 0",
    ),
    (
        "MessageServer(handler, idle_timeout=0)",
        lambda: MessageServer(handler, idle_timeout=0),
        ValueError,
        "idle_timeout must be positive or None, not 0",
    ),
    (
        "MessageServer(handler, send_timeout='5')",
        lambda: MessageServer(handler, send_timeout=wrong("5")),
        TypeError,
        "send_timeout must be a number of seconds or None, not '5'",
    ),
    (
        "MessageServer(handler, keepalive=60)",
        lambda: MessageServer(handler, keepalive=wrong(60)),
        TypeError,
        'keepalive must be a KeepAlive, a str "IDLE[:INTERVAL[:COUNT]]" or None (off), not 60',
    ),
    (
        "MessageServer(handler, keepalive='60s')",
        lambda: MessageServer(handler, keepalive="60s"),
        ValueError,
        'keepalive must be IDLE[:INTERVAL[:COUNT]] (whole seconds; COUNT probes) or "off", '
        "not '60s'",
    ),
    (
        "relay_server(..., keepalive='60:0')",
        lambda: relay_server(
            "db:5432", client_framing="len", server_framing="len", keepalive="60:0"
        ),
        ValueError,
        "keepalive interval must be 1 to 32767 seconds, not 0",
    ),
    (
        "MessageServer(handler, min_send_rate='1k')",
        lambda: MessageServer(handler, min_send_rate=wrong("1k")),
        TypeError,
        "min_send_rate must be a number of bytes a second or None, not '1k'",
    ),
    (
        "MessageServer(handler, min_send_rate=0)",
        lambda: MessageServer(handler, min_send_rate=0),
        ValueError,
        "min_send_rate must be a positive, finite number of bytes a second or None, not 0",
    ),
    (
        "MessageServer(handler, min_send_rate=inf)",
        lambda: MessageServer(handler, min_send_rate=float("inf")),
        ValueError,
        "min_send_rate must be a positive, finite number of bytes a second or None, not inf",
    ),
    (
        "MessageServer(handler, grace=-1)",
        lambda: MessageServer(handler, grace=-1),
        ValueError,
        "grace must be a number of seconds, at least 0, not -1",
    ),
    (
        "MessageServer(handler, drain_delay='5')",
        lambda: MessageServer(handler, drain_delay="5"),  # type: ignore[arg-type]
        ValueError,
        "drain_delay must be a number of seconds, at least 0, not '5'",
    ),
    (
        "MessageServer(handler, backlog=0)",
        lambda: MessageServer(handler, backlog=0),
        ValueError,
        "backlog must be at least 1, not 0",
    ),
    (
        "MessageServer(handler, proxy_protocol='v1')",
        lambda: MessageServer(handler, proxy_protocol=wrong("v1")),
        TypeError,
        "proxy_protocol must be a ProxyProtocolConfig or None, not 'v1'",
    ),
    (
        "MessageStream(b'x')",
        lambda: MessageStream(wrong(b"x")),
        TypeError,
        "MessageStream needs a trio.abc.Stream (or a Transport), not bytes",
    ),
    (
        "MessageStream(stream, 5)",
        lambda: MessageStream(_stream(), wrong(5)),
        TypeError,
        f"framer must be a framer, a FramingConfig or a framing name {FRAMING_NAMES}, not int",
    ),
    (
        "MessageStream(stream, 'lenn')",
        lambda: MessageStream(_stream(), "lenn"),
        ValueError,
        "framer must be one of ('line', 'len', 'raw', 'varint', 'fixed'), not 'lenn'",
    ),
    (
        "EchoSession(5)",
        lambda: EchoSession(wrong(5)),
        TypeError,
        "framing must be a FramingConfig, a framing name or a framer, not int",
    ),
    (
        "make_framer('lenn')",
        lambda: make_framer(wrong("lenn")),
        ValueError,
        "framing must be one of ('line', 'len', 'raw', 'varint', 'fixed'), not 'lenn'",
    ),
    (
        "relay_server('127.0.0.1', ...)",
        lambda: relay_server("127.0.0.1", client_framing="len", server_framing="len"),
        ValueError,
        "upstream must be \"host:port\" (or a (host, port) tuple), not '127.0.0.1'",
    ),
    (
        "relay_server(('127.0.0.1',), ...)",
        lambda: relay_server(
            wrong(("127.0.0.1",)),
            client_framing="len",
            server_framing="len",
        ),
        TypeError,
        "upstream must be a (host, port) tuple or a \"host:port\" string, not ('127.0.0.1',)",
    ),
    (
        "relay_server('db:5432', ..., min_send_rate=-1)",
        lambda: relay_server(
            "db:5432", client_framing="len", server_framing="len", min_send_rate=-1
        ),
        ValueError,
        "min_send_rate must be a positive, finite number of bytes a second or None, not -1",
    ),
    (
        "relay_server('db:99999', ...)",
        lambda: relay_server("db:99999", client_framing="len", server_framing="len"),
        ValueError,
        "upstream's port must be from 0 to 65535, not 99999",
    ),
    (
        "relay_server('127.0.0.1:9999', ...)  # the relay's default port",
        lambda: relay_server("127.0.0.1:9999", client_framing="len", server_framing="len"),
        ValueError,
        "upstream 127.0.0.1:9999 is the relay's own address (127.0.0.1, port 9999): "
        "it would relay to itself; give the relay another port",
    ),
    (
        "relay_server('localhost:7000', ..., host=None, port=7000)",
        lambda: relay_server(
            "localhost:7000", client_framing="len", server_framing="len", host=None, port=7000
        ),
        ValueError,
        "upstream localhost:7000 is the relay's own address (every interface, port 7000): "
        "it would relay to itself; give the relay another port",
    ),
    (
        "relay_server(..., client_framing=4)",
        lambda: relay_server("db:5432", client_framing=wrong(4), server_framing="len"),
        TypeError,
        f"client_framing must be a FramingConfig or a framing name {FRAMING_NAMES}, not int",
    ),
    (
        "relay_server(..., fin_timeout=-1)",
        lambda: relay_server("db:5432", client_framing="len", server_framing="len", fin_timeout=-1),
        ValueError,
        "fin_timeout must be positive or None, not -1",
    ),
    (
        "relay_server(..., half_close='no')",
        lambda: relay_server(
            "db:5432", client_framing="len", server_framing="len", half_close=wrong("no")
        ),
        TypeError,
        "half_close must be True or False, not 'no'",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [case[1:] for case in CONSTRUCTION],
    ids=[case[0] for case in CONSTRUCTION],
)
def test_a_mistake_is_refused_where_it_is_made(
    call: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as refused:
        call()
    assert type(refused.value) is error
    assert str(refused.value) == message


class AsyncCallable:
    async def __call__(self, stream: MessageStream) -> None:
        pass


@pytest.mark.parametrize(
    "good",
    [
        handler,
        partial(handler),
        EchoHandler,
        RespondEchoHandler,
        GenericEchoHandler,
        AsyncCallable(),
    ],
    ids=[
        "async def",
        "partial",
        "BaseRequestHandler",
        "respond() echo",
        "handle() echo",
        "async __call__",
    ],
)
def test_every_working_handler_is_accepted(good: Any) -> None:
    assert MessageServer(good).handler is good


def test_the_accepted_forms_of_host_port_and_budget() -> None:
    assert MessageServer(handler, host="").host is None  # socketserver's "all interfaces"
    assert MessageServer(handler, host=None).host is None
    assert MessageServer(handler, port=0).port == 0
    assert MessageServer(handler, port=65535).port == 65535
    assert MessageServer(handler, memory_budget=1 << 20).budget.limit == 1 << 20
    budget = MemoryBudget(2 << 20)
    assert MessageServer(handler, memory_budget=budget).budget is budget
    relay = relay_server("[::1]:5432", client_framing="len", server_framing="len", port=0)
    assert relay.framing == FramingConfig("len")


@pytest.mark.parametrize(
    ("host", "port", "error", "message"),
    [
        ("127.0.0.1", 99999, ValueError, "port must be from 0 to 65535, not 99999"),
        ("127.0.0.1", -1, ValueError, "port must be from 0 to 65535, not -1"),
        ("", 9999, ValueError, "host must name the server (an empty host is only for listening)"),
        (None, 9999, TypeError, "host must be a str naming the server, not None"),
    ],
)
async def test_open_message_stream_refuses_a_bad_address_before_dialing(
    host: Any, port: int, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as refused:
        await open_message_stream(host, port)
    assert str(refused.value) == message


async def test_server_port_is_the_port_bound(autojump_clock: trio.testing.MockClock) -> None:
    server = MessageServer(handler, port=0)
    assert server.port == 0
    assert repr(server) == "<MessageServer new on port 0, framing='line', 0 connections>"
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve)
        bound = listeners[0].socket.getsockname()
        assert server.port == bound[1] != 0
        assert server.addresses == [bound]
        assert repr(server) == (
            f"<MessageServer serving on 127.0.0.1:{bound[1]}, framing='line', 0 connections>"
        )
        server.shutdown()
    assert server.port == bound[1]
    assert repr(server).startswith("<MessageServer stopped on 127.0.0.1:")


# -- diagnosis at the first connection ---------------------------------------------


async def test_a_plain_client_of_a_tls_server_is_told_to_try_tls(
    server_ssl_context: ssl.SSLContext, autojump_clock: trio.testing.MockClock
) -> None:
    server = MessageServer(EchoHandler, port=0, ssl_context=server_ssl_context)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        async with await open_message_stream("127.0.0.1", server.port) as stream:
            with pytest.raises(GreetingError) as raised:
                await expect_greeting(stream, FramingConfig(), timeout=5)
        server.shutdown()
    assert str(raised.value) == (
        "no greeting: the server sent nothing within 5s: a TLS server waits for the client "
        "to speak first (try --tls), else is it a trioecho service?"
    )


async def test_a_tls_client_of_a_plain_server_is_told_it_does_not_speak_tls(
    client_ssl_context: ssl.SSLContext, autojump_clock: trio.testing.MockClock
) -> None:
    server = MessageServer(EchoHandler, port=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        with pytest.raises(TLSHandshakeError) as raised:
            await open_message_stream("127.0.0.1", server.port, ssl_context=client_ssl_context)
        server.shutdown()
    assert str(raised.value).startswith(
        "TLS handshake failed: the server does not speak TLS (its first bytes are not a TLS "
        "record: [SSL: "
    )


async def test_a_varint_server_is_named_varint(autojump_clock: trio.testing.MockClock) -> None:
    server = MessageServer(EchoHandler, port=0, framing="varint")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        async with await open_message_stream("127.0.0.1", server.port, framing="len") as stream:
            with pytest.raises(GreetingError) as raised:
                await expect_greeting(stream, FramingConfig("len"))
        server.shutdown()
    assert raised.value.options == ["--framing", "varint"]
    assert str(raised.value) == (
        "the server's greeting is not in len framing "
        "(b'\\x0f\\xe4\\xbd\\xa0\\xe5\\xa5\\xbd\\xe6\\xac\\xa2\\xe8\\xbf\\x8e\\xe4\\xbd\\xa0'): "
        "the server speaks varint framing (or len --length-bytes 1, which frames it alike)? "
        "try --framing varint"
    )


# -- the command line --------------------------------------------------------------

CLI: list[tuple[list[str], str]] = [
    (["serve", "--max-frame", "1k"], "argument --max-frame: not a positive integer: '1k'"),
    (["serve", "--port", "99999"], "argument --port: must be 0..65535, not 99999"),
    (["serve", "--port", "http"], "argument --port: not a port number: 'http'"),
    (
        ["serve", "--length-bytes", "5"],
        "argument --length-bytes: must be one of 1, 2, 3, 4, 8, not '5'",
    ),
    (["serve", "--frame-size", "8"], "--frame-size applies to --framing fixed, not line"),
    (["serve", "--length-bytes", "2"], "--length-bytes applies to --framing len, not line"),
    (
        ["serve", "--framing", "len", "--delimiter", ";"],
        "--delimiter applies to --framing line, not len",
    ),
    (
        ["serve", "--framing", "len", "--keep-cr"],
        "--strip-cr/--keep-cr applies to --framing line, not len",
    ),
    (
        ["serve", "--framing", "raw", "--max-frame", "100"],
        "--max-frame applies to --framing line or len or varint, not raw",
    ),
    (
        ["client", "--framing", "varint", "--byteorder", "little"],
        "--byteorder applies to --framing len, not varint",
    ),
    (
        ["relay", "--upstream", "db:5432", "--preset", "postgresql", "--framing", "len"],
        "--framing: --preset postgresql sets the framing (only --max-frame applies with it)",
    ),
    (["serve", "--tls-key", "key.pem"], "--tls-key needs --tls-cert"),
    (
        ["serve", "--tls-cert", "/nonexistent/cert.pem"],
        "--tls-cert: cannot read /nonexistent/cert.pem: No such file or directory",
    ),
]


@pytest.mark.parametrize(("argv", "message"), CLI, ids=[" ".join(case[0]) for case in CLI])
def test_a_command_line_mistake_is_one_readable_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == f"trioecho {argv[0]}: error: {message}"
    assert "_positive_int" not in "\n".join(lines)


def test_a_certificate_without_its_key_is_named(
    tls_files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--port", "0", "--tls-cert", tls_files["cert"]])
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"trioecho serve: error: --tls-cert: {tls_files['cert']} holds no private key: "
        "give the key file too (--tls-key, keyfile)"
    )
    with pytest.raises(SystemExit):
        main(["serve", "--port", "0", "--tls-cert", tls_files["ca"], "--tls-key", tls_files["key"]])
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"trioecho serve: error: --tls-cert: the private key in {tls_files['key']} does not "
        f"belong to the certificate in {tls_files['ca']}"
    )


def test_every_command_has_a_description_and_every_option_a_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from trioecho.cli.options import build_parser

    parser = build_parser()
    group = parser._subparsers
    assert group is not None
    subparsers: dict[str, argparse.ArgumentParser] = group._group_actions[0].choices  # type: ignore[assignment]
    for name, command in subparsers.items():
        assert command.description, name
        for action in command._actions:
            assert action.help, (name, action.option_strings)
            assert "(default: None)" not in action.help % {"default": action.default}


if __name__ == "__main__":
    for shown, call, _error, _message in CONSTRUCTION:
        try:
            call()
        except (TypeError, ValueError) as exc:
            print(f"{shown}\n    {type(exc).__name__}: {exc}")
        else:
            print(f"{shown}\n    accepted!")
