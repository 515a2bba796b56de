"""TLS done by OpenSSL on the socket (``io.tls_socket``, ``io.socket_tls``)
against its twin, ``trio.SSLStream``: the same cases on both readiness
modes, over real loopback TCP.  What OpenSSL holds (records read whole,
several in one segment, with no edge for the rest), a reply of many
records to a slow but steady reader, and close_notify before FIN."""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from typing import Any

import pytest
import trio
import trio.testing
from support.helpers import running

from trioecho.io.opening import open_transport
from trioecho.io.readiness import Readiness
from trioecho.io.tls import tls_stream
from trioecho.io.tls_socket import RECORD_BYTES, TLSSocketStream, unread
from trioecho.server.handler import BaseRequestHandler
from trioecho.server.server import MessageServer
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler

READINESS: list[Readiness] = ["hub", "trio"]


async def tls_pair(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, readiness: Readiness
) -> tuple[trio.abc.Stream, trio.SSLStream[trio.SocketStream]]:
    """A handshaken server-side TLS stream (as the server makes it for
    ``readiness``) and its client, over loopback TCP."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port), client_context, server_hostname="localhost"
    )
    accepted = await listeners[0].accept()
    await listeners[0].aclose()
    assert isinstance(accepted, trio.SocketStream)
    server = tls_stream(accepted, server_context, readiness)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        await server.do_handshake()
    return server, client


@pytest.mark.parametrize("readiness", READINESS)
async def test_the_server_uses_openssl_on_the_socket_with_the_hub_and_trio_sslstream_without(
    readiness: Readiness, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    server, client = await tls_pair(server_ssl_context, client_ssl_context, readiness)
    transport = open_transport(server, readiness=readiness)
    if readiness == "hub":
        assert isinstance(server, TLSSocketStream)
        assert type(transport).__name__ == "TLSSocketTransport"
        assert transport.can_serve_inline and not transport.can_pump
        assert transport.pump_sink == -1  # the C pump never writes plain bytes to it
    else:
        assert isinstance(server, trio.SSLStream)
        assert type(transport).__name__ == "StreamTransport"
    assert transport.addresses() is not None
    await transport.aclose()
    await client.aclose()


async def test_a_context_with_kernel_tls_gets_trio_sslstream_on_the_hub_too(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """The hub's TLS reads count on OpenSSL reading the records from the
    socket itself: with kernel TLS asked for, the twin serves."""
    # OpenSSL 3's SSL_OP_ENABLE_KTLS, which Python 3.12 names
    server_ssl_context.options |= getattr(ssl, "OP_ENABLE_KTLS", 1 << 3)
    server, client = await tls_pair(server_ssl_context, client_ssl_context, "hub")
    assert isinstance(server, trio.SSLStream)
    await server.send_all(b"served")
    assert await client.receive_some(100) == b"served"
    await server.aclose()
    await client.aclose()


@pytest.mark.parametrize("readiness", READINESS)
async def test_small_reads_get_every_byte_openssl_holds(
    readiness: Readiness, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """One 5,000-byte record and 50 small ones, sent at once, read 7 bytes
    at a time: what OpenSSL keeps of a record, and the records still in
    the kernel, come without a new edge."""
    server, client = await tls_pair(server_ssl_context, client_ssl_context, readiness)
    transport = open_transport(server, readiness=readiness)
    big = bytes(range(256)) * 19 + b"x" * 136
    small = [b"record %d;" % i for i in range(50)]
    expected = big + b"".join(small)
    await client.send_all(big)
    for record in small:
        await client.send_all(record)
    received = b""
    with trio.fail_after(10):
        while len(received) < len(expected):
            data = await transport.receive_some(7)
            assert data and len(data) <= 7
            received += data
    assert received == expected
    await transport.aclose()
    await client.aclose()


def records_in_one_segment(context: ssl.SSLContext, port: int, messages: list[bytes]) -> bytes:
    """Connect, read the greeting, then send each message as its own TLS
    record, all the records in one ``sendall``; return every byte the
    server sends until its close_notify (``b""``: an end without one
    raises ``ssl.SSLEOFError``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")

        def pump_until(done: Any) -> None:
            while True:
                try:
                    if done():
                        break
                except ssl.SSLWantReadError:
                    pass
                raw.sendall(outgoing.read())
                data = raw.recv(65536)
                if not data:
                    incoming.write_eof()
                else:
                    incoming.write(data)
            raw.sendall(outgoing.read())

        def handshake() -> bool:
            tls.do_handshake()
            return True

        pump_until(handshake)
        for message in messages:
            tls.write(message)
        raw.sendall(outgoing.read())  # every record in one send
        received = bytearray()

        def read_to_end() -> bool:
            while data := tls.read(65536):
                received.extend(data)
            return True  # b"": close_notify

        pump_until(read_to_end)
        return bytes(received)


@pytest.mark.parametrize("readiness", READINESS)
async def test_many_records_in_one_segment_are_all_answered_then_close_notify(
    readiness: Readiness, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    messages = [b"message %d\n" % i for i in range(200)]
    server = MessageServer(
        EchoHandler,
        host="127.0.0.1",
        port=0,
        ssl_context=server_ssl_context,
        readiness=readiness,
    )
    async with running(server) as port:
        received = await trio.to_thread.run_sync(
            records_in_one_segment, client_ssl_context, port, [*messages, b"q\n"]
        )
    replies = b"".join(m[:-1] + REPLY_SUFFIX + b"\n" for m in messages)
    assert received == GREETING + b"\n" + replies


class Flood(BaseRequestHandler):
    """Sends ``SIZE`` bytes in one message on the first message, then echoes."""

    SIZE = 12 * RECORD_BYTES * 16 + 3  # 192 records and a few bytes

    async def handle(self) -> None:
        async for _ in self.request:
            await self.request.send_message(b"z" * self.SIZE)
            return


def slow_steady_read(context: ssl.SSLContext, port: int, total: int) -> tuple[int, float]:
    """Read ``total`` bytes, 16 KiB every 10 ms, through a small
    receive buffer: the bytes read and the seconds it took."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    raw.settimeout(30)
    raw.connect(("127.0.0.1", port))
    began = time.monotonic()
    with context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as tls:
        tls.sendall(b"go\n")
        got = 0
        while got < total:
            data = tls.recv(16 * 1024)
            if not data:
                break
            got += len(data)
            time.sleep(0.01)
        return got, time.monotonic() - began


@pytest.mark.parametrize("readiness", READINESS)
async def test_a_reply_of_many_records_reaches_a_slow_but_steady_reader(
    readiness: Readiness, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """3 MiB in one reply to a reader slower than the server, through a
    small buffer: writes OpenSSL could not finish are retried with the same
    bytes, and a reader that keeps reading is never cut by the send rule
    (1 s here, while the reply takes longer)."""
    server = MessageServer(
        Flood,
        host="127.0.0.1",
        port=0,
        ssl_context=server_ssl_context,
        readiness=readiness,
        send_timeout=1.0,
    )
    total = Flood.SIZE + 1  # no greeting: that is the echo service's
    async with running(server) as port:
        got, seconds = await trio.to_thread.run_sync(
            slow_steady_read, client_ssl_context, port, total
        )
    assert got == total
    assert seconds > 1.0  # slower than the send timeout: progress moved the deadline


def test_a_closed_tls_stream_has_closed_its_socket(server_ssl_context: ssl.SSLContext) -> None:
    """The socket is the TLS stream's alone once made: closing the stream
    closes it, and a second close does nothing."""

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        accepted = await listeners[0].accept()
        assert isinstance(accepted, trio.SocketStream)
        stream = TLSSocketStream(accepted, server_ssl_context, server_side=True)
        assert accepted.socket.fileno() == -1  # given up to the TLS stream
        assert stream.socket.fileno() >= 0
        await stream.aclose()
        await stream.aclose()
        assert stream.socket.fileno() == -1
        with pytest.raises(trio.ClosedResourceError, match="the TLS stream was closed"):
            await stream.receive_some(1)
        await client.aclose()
        await listeners[0].aclose()

    trio.run(main)


def test_unread_sees_the_rest_of_a_record_and_records_in_the_kernel(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """``unread``, which lets a reader stop after a short read: True while
    OpenSSL holds the rest of a record or the kernel holds a record OpenSSL
    has not read; False once both are empty."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw_client = socket.create_connection(listener.getsockname())
        raw_server, _ = listener.accept()
    with raw_client, raw_server:
        handshaken: list[ssl.SSLSocket] = []
        thread = threading.Thread(
            target=lambda: handshaken.append(
                client_ssl_context.wrap_socket(raw_client, server_hostname="localhost")
            )
        )
        thread.start()
        server = server_ssl_context.wrap_socket(raw_server, server_side=True)
        thread.join(timeout=10)
        (client,) = handshaken
        with client, server:
            assert not unread(server)
            client.sendall(b"one")  # a record each
            client.sendall(b"three")
            select.select([server], [], [], 10)
            assert server.recv(100) == b"one"
            select.select([server], [], [], 10)  # the second record reaches the kernel
            assert unread(server)  # in the kernel, not yet in OpenSSL
            assert server.recv(2) == b"th"
            assert server.pending() == 3
            assert unread(server)  # in OpenSSL only
            assert server.recv(100) == b"ree"
            assert not unread(server)


def test_a_stream_that_is_not_a_plain_socket_stream_is_refused() -> None:
    left, _right = trio.testing.memory_stream_pair()
    with pytest.raises(ValueError, match=r"TLSSocketStream needs a plain trio\.SocketStream"):
        TLSSocketStream(left, ssl.create_default_context(), server_side=True)  # type: ignore[arg-type]


# Sizes on either side of one TLS record: one write, or a write per record.
AROUND_A_RECORD = [RECORD_BYTES - 1, RECORD_BYTES, RECORD_BYTES + 1, 3 * RECORD_BYTES + 5]


@pytest.mark.parametrize("readiness", READINESS)
async def test_the_tls_streams_send_all_around_a_record(
    readiness: Readiness, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    server, client = await tls_pair(server_ssl_context, client_ssl_context, readiness)
    for size in AROUND_A_RECORD:
        payload = bytes(i % 251 for i in range(size))
        await server.send_all(payload)
        received = b""
        with trio.fail_after(10):
            while len(received) < size:
                received += await client.receive_some(65536)
        assert received == payload
    await server.aclose()
    await client.aclose()


def exchange_frames(context: ssl.SSLContext, port: int, payloads: list[bytes]) -> list[bytes]:
    """Over TLS with ``len`` framing: read the greeting, then send each
    payload as a frame and read its whole reply before the next."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):

        def read(count: int) -> bytes:
            data = b""
            while len(data) < count:
                chunk = tls.recv(count - len(data))
                assert chunk, "the server closed"
                data += chunk
            return data

        assert read(4 + len(GREETING)) == len(GREETING).to_bytes(4, "big") + GREETING
        replies = []
        for payload in payloads:
            tls.sendall(len(payload).to_bytes(4, "big") + payload)
            replies.append(read(4 + len(payload) + len(REPLY_SUFFIX)))
        return replies


@pytest.mark.parametrize("readiness", READINESS)
async def test_replies_of_a_record_less_one_a_record_and_more_arrive_whole(
    readiness: Readiness, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """Echo replies whose bytes on the wire are a TLS record less one, a
    record, a record and one, and three records and five: each is sent
    whole, by one write or by a write per record."""
    overhead = 4 + len(REPLY_SUFFIX)  # the reply's header and suffix
    payloads = [bytes(i % 249 for i in range(size - overhead)) for size in AROUND_A_RECORD]
    server = MessageServer(
        EchoHandler,
        host="127.0.0.1",
        port=0,
        framing="len",
        ssl_context=server_ssl_context,
        readiness=readiness,
    )
    async with running(server) as port:
        replies = await trio.to_thread.run_sync(exchange_frames, client_ssl_context, port, payloads)
    assert [len(reply) for reply in replies] == AROUND_A_RECORD
    for payload, reply in zip(payloads, replies, strict=True):
        assert (
            reply == (len(payload) + len(REPLY_SUFFIX)).to_bytes(4, "big") + payload + REPLY_SUFFIX
        )
