"""PROXY protocol and TLS in front of the handler, over real loopback TCP."""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from support import proxyheaders
from support.helpers import running

from trioecho import FramingConfig, MessageStream
from trioecho.io.tls import certificate_subject, client_context, server_context
from trioecho.logtext import format_address
from trioecho.server.accept import ProxyProtocolConfig, parse_networks, receive_proxy_header
from trioecho.server.handler import BaseRequestHandler
from trioecho.server.server import MessageServer
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler

LOCAL_ONLY = parse_networks(["127.0.0.0/8"])


class WhoAmI(BaseRequestHandler):
    """Replies to every message with the client address the server sees."""

    async def handle(self) -> None:
        async for _ in self.request:
            await self.request.send_message(format_address(self.client_address).encode())


async def raw_connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def receive_until_eof(transport: trio.abc.Stream) -> bytes:
    """What arrives until the server closes (a reset counts as closing: a
    refused peer's unread input makes the kernel answer with one)."""
    data = b""
    try:
        while chunk := await transport.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


def local_port(transport: trio.SocketStream) -> int:
    return int(transport.socket.getsockname()[1])


def proxy_server(handler: Any = WhoAmI, **proxy: Any) -> MessageServer:
    config = ProxyProtocolConfig(**{"allow_from": LOCAL_ONLY, **proxy})
    return MessageServer(handler, host="127.0.0.1", port=0, proxy_protocol=config)


def tls_server(
    context: ssl.SSLContext, handler: Any = EchoHandler, **options: Any
) -> MessageServer:
    return MessageServer(handler, host="127.0.0.1", port=0, ssl_context=context, **options)


@pytest.mark.parametrize(
    ("header", "seen"),
    [
        (proxyheaders.v1(("192.0.2.10", 56324)), "192.0.2.10:56324"),
        (proxyheaders.v1(("2001:db8::10", 443)), "[2001:db8::10]:443"),
        (proxyheaders.v2(("198.51.100.7", 40000), tlvs=((1, b"h2"),)), "198.51.100.7:40000"),
        (proxyheaders.v2(("2001:db8::7", 1)), "[2001:db8::7]:1"),
        (proxyheaders.v2("/run/client.sock", "/run/srv.sock"), "/run/client.sock"),
    ],
)
async def test_client_address_is_the_real_client(
    header: bytes, seen: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        async with running(proxy_server()) as port:
            transport = await raw_connect(port)
            # Header and first messages in one segment: nothing after the header is lost.
            await transport.send_all(header + b"one\ntwo\n")
            stream = MessageStream(transport)
            assert await stream.receive_message() == seen.encode()
            assert await stream.receive_message() == seen.encode()
            await stream.aclose()


@pytest.mark.parametrize("header", [proxyheaders.v1(None), proxyheaders.v2(None, command=0)])
async def test_unknown_and_local_keep_the_connection_address(
    header: bytes, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        async with running(proxy_server()) as port:
            transport = await raw_connect(port)
            await transport.send_all(header + b"x\n")
            stream = MessageStream(transport)
            assert await stream.receive_message() == f"127.0.0.1:{local_port(transport)}".encode()
            await stream.aclose()


async def test_header_dribbled_one_byte_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    header = proxyheaders.v1(("192.0.2.1", 7))
    with trio.fail_after(10):
        async with running(proxy_server(EchoHandler)) as port:
            transport = await raw_connect(port)
            for byte in header + b"hi\n":
                await transport.send_all(bytes([byte]))
                await trio.sleep(0.002)
            stream = MessageStream(transport)
            assert await stream.receive_message() == GREETING
            assert await stream.receive_message() == b"hi" + REPLY_SUFFIX
            await stream.aclose()


async def test_the_reader_never_consumes_past_the_header(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for header in (proxyheaders.v1(("192.0.2.1", 7)), proxyheaders.v2(("192.0.2.1", 7))):
        a, b = trio.socket.socketpair()
        with a, b:
            await a.send(header + b"payload")
            parsed = await receive_proxy_header(b, (1, 2))
            assert parsed.source == ("192.0.2.1", 7)
            assert await b.recv(100) == b"payload"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"hello\n", "no PROXY protocol header: the connection starts with b'hello\\n'"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", "port 99999 out of range"),
        (proxyheaders.v2(("192.0.2.1", 1))[:14] + b"\xff\xff", "more than the limit of 4096"),
        (b"PROXY TCP4 " + b"9" * 120, "longer than 107 bytes"),
    ],
)
async def test_malformed_header_closes_with_a_log_line(
    data: bytes,
    reason: str,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        async with running(proxy_server(EchoHandler)) as port:
            bad = await raw_connect(port)
            await bad.send_all(data)
            assert await receive_until_eof(bad) == b""  # not even the greeting
            peer = f"127.0.0.1:{local_port(bad)}"
            good = await raw_connect(port)
            await good.send_all(proxyheaders.v2(("192.0.2.9", 9)) + b"ok\n")
            stream = MessageStream(good)
            assert await stream.receive_message() == GREETING
            assert await stream.receive_message() == b"ok" + REPLY_SUFFIX
            await stream.aclose()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(line.startswith(f"{peer}: closing: ") and reason in line for line in lines), lines


async def test_header_timeout(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        async with running(proxy_server(EchoHandler, timeout=0.3)) as port:
            slow = await raw_connect(port)
            await slow.send_all(b"PROXY TCP4 ")  # and nothing more
            start = trio.current_time()
            assert await receive_until_eof(slow) == b""
            assert 0.25 <= trio.current_time() - start < 5
            peer = f"127.0.0.1:{local_port(slow)}"
    assert f"{peer}: closing: no complete PROXY header within 0.3 s" in caplog.messages


async def test_peer_outside_the_allow_list_is_refused(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    server = proxy_server(EchoHandler, allow_from=parse_networks(["10.0.0.0/8"]))
    with trio.fail_after(10):
        async with running(server) as port:
            transport = await raw_connect(port)
            await transport.send_all(proxyheaders.v1(("192.0.2.1", 1)) + b"hi\n")
            assert await receive_until_eof(transport) == b""
            peer = f"127.0.0.1:{local_port(transport)}"
    assert (
        f"{peer}: closing: PROXY header refused: peer 127.0.0.1 is not in the allowed "
        "proxies (10.0.0.0/8)" in caplog.messages
    )


async def test_version_restriction(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        async with running(proxy_server(versions=(2,))) as port:
            transport = await raw_connect(port)
            await transport.send_all(proxyheaders.v1(("192.0.2.1", 1)) + b"hi\n")
            assert await receive_until_eof(transport) == b""


# -- TLS ----------------------------------------------------------------------


async def tls_connect(port: int, context: ssl.SSLContext, prefix: bytes = b"") -> MessageStream:
    transport = await raw_connect(port)
    if prefix:
        await transport.send_all(prefix)
    tls = trio.SSLStream(transport, context, server_hostname="localhost")
    await tls.do_handshake()
    return MessageStream(tls, FramingConfig("line").new_framer())


async def test_tls_echo(
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = tls_server(server_ssl_context)
    with trio.fail_after(10):
        async with running(server) as port:
            stream = await tls_connect(port, client_ssl_context)
            assert await stream.receive_message() == GREETING
            await stream.send_messages([b"secret", b"\xff\x00"])
            assert await stream.receive_message() == b"secret" + REPLY_SUFFIX
            assert await stream.receive_message() == b"\xff\x00" + REPLY_SUFFIX
            await stream.send_message(b"q")
            with pytest.raises(trio.EndOfChannel):
                await stream.receive_message()
            await stream.aclose()


@pytest.mark.parametrize(
    "garbage",
    [b"hello\n", b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", b"\x16\x03\x01\xff\xff" + b"A" * 64],
)
async def test_garbage_handshake_closes_only_that_connection(
    garbage: bytes,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    caplog.set_level(logging.INFO, "trioecho.server")
    server = tls_server(server_ssl_context)
    with trio.fail_after(10):
        async with running(server) as port:
            good = await tls_connect(port, client_ssl_context)
            assert await good.receive_message() == GREETING
            bad = await raw_connect(port)
            await bad.send_all(garbage)
            if garbage.endswith(b"A" * 64):  # a record announcing more than it sends
                await bad.send_eof()
            data = await receive_until_eof(bad)
            assert GREETING not in data  # a TLS alert at most
            peer = f"127.0.0.1:{local_port(bad)}"
            await bad.aclose()  # the server waits for it (at most ALERT_SECONDS)
            await trio.sleep(0.1)
            await good.send_message(b"still fine")
            assert await good.receive_message() == b"still fine" + REPLY_SUFFIX
            await good.aclose()
    failed = [r for r in caplog.records if r.getMessage().startswith(f"{peer}: closing: TLS ")]
    assert [r.levelno for r in failed] == [logging.INFO], caplog.messages  # the peer's doing


async def test_tls_handshake_timeout(
    server_ssl_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    caplog.set_level(logging.INFO, "trioecho.server")
    server = tls_server(server_ssl_context, handshake_timeout=0.3)
    with trio.fail_after(10):
        async with running(server) as port:
            silent = await raw_connect(port)
            assert await receive_until_eof(silent) == b""
            peer = f"127.0.0.1:{local_port(silent)}"
    assert f"{peer}: closing: TLS handshake not done within 0.3 s" in caplog.messages


async def test_proxy_header_then_tls(
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = tls_server(
        server_ssl_context, WhoAmI, proxy_protocol=ProxyProtocolConfig(allow_from=LOCAL_ONLY)
    )
    with trio.fail_after(10):
        async with running(server) as port:
            header = proxyheaders.v2(("203.0.113.5", 5555))
            stream = await tls_connect(port, client_ssl_context, prefix=header)
            await stream.send_message(b"who")
            assert await stream.receive_message() == b"203.0.113.5:5555"
            await stream.aclose()


async def test_shutdown_does_not_wait_for_connections_being_set_up(
    server_ssl_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    caplog.set_level(logging.INFO, logger="trioecho")
    servers = [
        (proxy_server(EchoHandler, timeout=60), b"PROXY "),  # half a header
        (tls_server(server_ssl_context), b"\x16\x03\x01"),  # half a TLS record header
    ]
    with trio.fail_after(10):
        for server, start_of_setup in servers:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(server.serve)
                stuck = await raw_connect(listeners[0].socket.getsockname()[1])
                await stuck.send_all(start_of_setup)
                while not server._setting_up:
                    await trio.sleep(0.01)
                start = trio.current_time()
                server.shutdown()
                await server.wait_stopped()
                assert trio.current_time() - start < 1  # not the 60 s or 10 s timeouts
                assert await receive_until_eof(stuck) == b""
    peer = f"127.0.0.1:{local_port(stuck)}"
    assert f"{peer}: closed before it was set up: shutting down" in caplog.messages


class WhoAreYou(BaseRequestHandler):
    """Replies to every message with the subject of the client's certificate."""

    async def handle(self) -> None:
        async for _ in self.request:
            subject = certificate_subject(self.request.peer_certificate)
            await self.request.send_message(str(subject).encode())


async def test_a_handler_sees_the_clients_verified_certificate(
    tls_files: dict[str, str], tls_ca: trustme.CA, tmp_path: Path
) -> None:
    """With ``verify_client="optional"`` a client without a certificate is
    served and its handler sees None; one with a certificate from the
    client CA is seen with its subject (its SANs too); plain TCP has none."""
    context = server_context(
        tls_files["cert"], tls_files["key"], client_ca=tls_files["ca"], verify_client="optional"
    )
    leaf = tls_ca.issue_cert("bob@example.com", common_name="bob", organization_name="Ex, Inc")
    cert, key = tmp_path / "bob.pem", tmp_path / "bob.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    anonymous = client_context(tls_files["ca"])
    bob = client_context(tls_files["ca"], certfile=str(cert), keyfile=str(key))
    server = tls_server(context, WhoAreYou)
    seen = []
    with trio.fail_after(10):
        async with running(server) as port:
            for client in (anonymous, bob):
                stream = await tls_connect(port, client)
                await stream.send_message(b"who?")
                seen.append(await stream.receive_message())
                await stream.aclose()
    assert seen[0] == b"None"
    assert re.fullmatch(rb"CN=bob,OU=Testing cert #\S+,O=Ex\\, Inc", seen[1]), seen[1]


def test_server_and_client_contexts_refuse_options_that_do_not_fit(
    tls_files: dict[str, str],
) -> None:
    cert, key, ca = tls_files["cert"], tls_files["key"], tls_files["ca"]
    with pytest.raises(ValueError, match=r"^verify_client must be one of none, optional, "):
        server_context(cert, key, client_ca=ca, verify_client="yes")
    with pytest.raises(ValueError, match=r"^verify_client 'required' needs the CA certificates"):
        server_context(cert, key, verify_client="required")
    with pytest.raises(ValueError, match=r"^a client CA file checks client certificates only "):
        server_context(cert, key, client_ca=ca)
    with pytest.raises(ValueError, match=r" holds no PEM CA certificate: "):
        server_context(cert, key, client_ca=key, verify_client="optional")
    with pytest.raises(ValueError, match=r"^a client key \(keyfile, --tls-key\) needs its "):
        client_context(ca, keyfile=key)
    with pytest.raises(ValueError, match=r"holds no PEM certificate$"):
        client_context(ca, certfile=key)
