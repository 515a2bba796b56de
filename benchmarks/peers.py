"""The peers trioecho is measured against: the same echo protocol, other servers.

    python benchmarks/peers.py NAME --port PORT --framing {line,len,raw}
        [--tls-cert FILE --tls-key FILE]

prints ``listening on 127.0.0.1:PORT`` when ready and serves until killed.
Every peer sends the greeting, answers each message with message + 好 and
closes on ``q``.  With ``--tls-cert``/``--tls-key`` the peers of TLS_PEERS
(asyncio's, uvloop's and Trio's) serve TLS, with the context trioecho's
server makes (``ssl.create_default_context``, TLS 1.2 or newer: 1.3 with
any client that has it); the others do not (rloop 0.5 has no TLS).  NAME is
one of:

threaded          the seed: socketserver.ThreadingTCPServer, one thread per
                  client; StreamRequestHandler (readline / read) for line and
                  len, the seed's own BaseRequestHandler for raw
asyncio-streams   asyncio.start_server, readline / readexactly, drain per reply
asyncio-protocol  an asyncio Protocol with a pure-Python splitter, one write
                  per read
uvloop-protocol   the same on uvloop (pip install 'trioecho[bench]')
rloop-protocol    the same on rloop, the asyncio loop written in Rust (same
                  extra), ending sessions as rloop needs (RloopEchoProtocol)
trio-plain        trio.serve_tcp, receive_some, pure-Python splitter, one
                  send_all per read

The floor, ``c-epoll`` in compare.py, is not here: it is floor_server.c, in C.
"""

from __future__ import annotations

import argparse
import asyncio
import socketserver
import ssl
import struct
import sys
from typing import Protocol, cast

# The peers that serve TLS with --tls-cert/--tls-key.
TLS_PEERS = ("asyncio-streams", "asyncio-protocol", "uvloop-protocol", "trio-plain")

GREETING = "你好欢迎你".encode()
SUFFIX = "好".encode()
_HEADER = struct.Struct(">I")


class Splitter(Protocol):
    def feed(self, data: bytes) -> list[bytes]: ...

    @staticmethod
    def encode(payloads: list[bytes]) -> bytes: ...


class LineSplitter:
    """Naive line splitting: bytes.split, the unfinished tail kept."""

    def __init__(self) -> None:
        self.tail = b""

    def feed(self, data: bytes) -> list[bytes]:
        lines = (self.tail + data).split(b"\n")
        self.tail = lines.pop()
        return lines

    @staticmethod
    def encode(payloads: list[bytes]) -> bytes:
        return b"".join(p + b"\n" for p in payloads)


class LenSplitter:
    """Naive length-prefixed splitting: a struct.unpack_from loop."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self.buffer + data
        frames: list[bytes] = []
        pos = 0
        while len(buffer) - pos >= 4:
            (length,) = _HEADER.unpack_from(buffer, pos)
            end = pos + 4 + length
            if end > len(buffer):
                break
            frames.append(buffer[pos + 4 : end])
            pos = end
        self.buffer = buffer[pos:]
        return frames

    @staticmethod
    def encode(payloads: list[bytes]) -> bytes:
        return b"".join(_HEADER.pack(len(p)) + p for p in payloads)


class RawSplitter:
    def feed(self, data: bytes) -> list[bytes]:
        return [data]

    @staticmethod
    def encode(payloads: list[bytes]) -> bytes:
        return b"".join(payloads)


SPLITTERS: dict[str, type[Splitter]] = {
    "line": LineSplitter,
    "len": LenSplitter,
    "raw": RawSplitter,
}


def replies(messages: list[bytes]) -> tuple[list[bytes], bool]:
    """Replies to a batch, and whether a ``q`` ended the session."""
    out: list[bytes] = []
    for message in messages:
        if message == b"q":
            return out, True
        out.append(message + SUFFIX)
    return out, False


# -- threaded: the seed ----------------------------------------------------


class SeedRawHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn = self.request
        conn.sendall(GREETING)
        while True:
            data = conn.recv(1024)
            if not data or data == b"q":
                break
            conn.sendall(data + SUFFIX)


class LineStreamHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(GREETING + b"\n")
        for line in self.rfile:
            message = line[:-1] if line.endswith(b"\n") else line
            if message == b"q":
                break
            self.wfile.write(message + SUFFIX + b"\n")


class LenStreamHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(_HEADER.pack(len(GREETING)) + GREETING)
        while True:
            header = self.rfile.read(4)
            if len(header) < 4:
                break
            message = self.rfile.read(_HEADER.unpack(header)[0])
            if message == b"q":
                break
            self.wfile.write(_HEADER.pack(len(message) + len(SUFFIX)) + message + SUFFIX)


class ThreadedServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096


def serve_threaded(port: int, framing: str) -> None:
    handler = {"raw": SeedRawHandler, "line": LineStreamHandler, "len": LenStreamHandler}[framing]
    with ThreadedServer(("127.0.0.1", port), handler) as server:
        announce(server.server_address[1])
        server.serve_forever()


# -- asyncio -----------------------------------------------------------------


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server context as trioecho's (trioecho.io.tls.server_context): the
    defaults for serving clients, TLS 1.2 at the least, this certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


async def serve_asyncio_streams(port: int, framing: str, tls: ssl.SSLContext | None = None) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        splitter = SPLITTERS[framing]
        writer.write(splitter.encode([GREETING]))
        try:
            while True:
                if framing == "line":
                    line = await reader.readline()
                    if not line:
                        break
                    message = line.rstrip(b"\n")
                elif framing == "len":
                    header = await reader.readexactly(4)
                    message = await reader.readexactly(_HEADER.unpack(header)[0])
                else:
                    message = await reader.read(1024)
                    if not message:
                        break
                if message == b"q":
                    break
                writer.write(splitter.encode([message + SUFFIX]))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096, ssl=tls)
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


class EchoProtocol(asyncio.Protocol):
    def __init__(self, framing: str) -> None:
        self.splitter = SPLITTERS[framing]()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.splitter.encode([GREETING]))

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:  # closed by an earlier q
            return
        out, done = replies(self.splitter.feed(data))
        if out:
            transport.write(self.splitter.encode(out))
        if done:
            self.transport = None
            self.end(transport)

    def end(self, transport: asyncio.Transport) -> None:
        """End the session after a ``q``: the replies before it still go out."""
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # Drop the transport, breaking the protocol <-> transport cycle:
        # rloop closes a socket only once its transport is freed.
        self.transport = None


class RloopEchoProtocol(EchoProtocol):
    """EchoProtocol, ending its sessions so that rloop 0.5 sends the FIN.

    rloop's ``close()`` leaves the socket open until the transport object
    is freed, which its loop defers (the client would wait for an end, and
    the descriptor stays open).  ``write_eof()`` shuts the socket down for
    writing once the replies are out; ``close()`` too, after that, would
    stop it: with replies still queued, rloop closes (late) instead.
    """

    def end(self, transport: asyncio.Transport) -> None:
        transport.write_eof()
        if not transport.get_write_buffer_size():
            transport.close()

    def eof_received(self) -> None:
        # The client's end: answer it with ours now (rloop closes next).
        if self.transport is not None and not self.transport.get_write_buffer_size():
            self.transport.write_eof()


async def serve_asyncio_protocol(
    port: int, framing: str, tls: ssl.SSLContext | None = None
) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: EchoProtocol(framing), "127.0.0.1", port, backlog=4096, ssl=tls
    )
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


async def serve_rloop_protocol(port: int, framing: str) -> None:
    """The asyncio Protocol server as rloop 0.5 must run it: accepting from
    ``create_server`` on, then waiting forever.

    Not ``Server.serve_forever()``: on rloop 0.5 it starts the listener a
    second time (so does ``start_serving()``), after which every connection
    is refused.
    """
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: RloopEchoProtocol(framing), "127.0.0.1", port, backlog=4096
    )
    announce(server.sockets[0].getsockname()[1])
    await loop.create_future()


def run_on_rloop(port: int, framing: str) -> None:
    """The asyncio Protocol server on rloop's loop, until killed.

    rloop's own ``new_event_loop()``, driven directly rather than through
    ``asyncio.Runner(loop_factory=...)`` (Python 3.11+), so Python 3.10 runs it too.
    """
    import rloop

    loop = rloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve_rloop_protocol(port, framing))
    finally:
        loop.close()


# -- trio --------------------------------------------------------------------


async def serve_trio_plain(port: int, framing: str, tls: ssl.SSLContext | None = None) -> None:
    import trio

    async def handle(stream: trio.abc.Stream) -> None:
        splitter = SPLITTERS[framing]()
        receive_size = 1024 if framing == "raw" else 65536
        try:
            await stream.send_all(splitter.encode([GREETING]))
            while data := await stream.receive_some(receive_size):
                # bytes(): typed bytes | bytearray; both streams give bytes (not copied)
                out, done = replies(splitter.feed(bytes(data)))
                if out:
                    await stream.send_all(splitter.encode(out))
                if done:
                    return
        except trio.BrokenResourceError:
            pass

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1", backlog=4096)
    announce(listeners[0].socket.getsockname()[1])
    if tls is None:
        await trio.serve_listeners(handle, listeners)
    else:
        await trio.serve_listeners(handle, [trio.SSLListener(lst, tls) for lst in listeners])


def announce(port: int) -> None:
    print(f"listening on 127.0.0.1:{port}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="benchmark peers of trioecho")
    parser.add_argument(
        "name",
        choices=[
            "threaded",
            "asyncio-streams",
            "asyncio-protocol",
            "uvloop-protocol",
            "rloop-protocol",
            "trio-plain",
        ],
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--framing", choices=["line", "len", "raw"], default="len")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this PEM chain")
    parser.add_argument("--tls-key", metavar="FILE", help="its private key")
    args = parser.parse_args()
    tls = None
    if args.tls_cert is not None or args.tls_key is not None:
        if args.name not in TLS_PEERS:
            parser.error(f"{args.name} does not serve TLS (those that do: {', '.join(TLS_PEERS)})")
        if args.tls_cert is None or args.tls_key is None:
            parser.error("TLS needs both --tls-cert and --tls-key")
        tls = tls_context(args.tls_cert, args.tls_key)
    if args.name == "threaded":
        serve_threaded(args.port, args.framing)
    elif args.name == "asyncio-streams":
        asyncio.run(serve_asyncio_streams(args.port, args.framing, tls))
    elif args.name == "asyncio-protocol":
        asyncio.run(serve_asyncio_protocol(args.port, args.framing, tls))
    elif args.name == "uvloop-protocol":
        import uvloop

        uvloop.run(serve_asyncio_protocol(args.port, args.framing, tls))
    elif args.name == "rloop-protocol":
        run_on_rloop(args.port, args.framing)
    else:
        import trio

        trio.run(serve_trio_plain, args.port, args.framing, tls)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
