"""A frame relay: a trioecho server that passes every frame on to another server.

Each client connection gets its own connection upstream; two tasks pump
frames, one each way, each reading whole frames with one side's
:class:`~trioecho.MessageStream` and sending them, re-encoded, with the
other's.  With a preset whose frames keep their header
(``trioecho.framing.presets``), re-encoding gives back the bytes received, so the
relay is transparent; what it adds is that every message is checked against
the framing (and its ``max_frame``) on the way::

    server = relay_server(
        ("db.internal", 5432),
        client_framing=presets.postgresql("client"),
        server_framing=presets.postgresql("server"),
        answer=presets.refuse_encryption,  # TLS would hide the frames
        port=6432,
    )
    await server.serve()

When one side ends its stream the relay closes the other side's sending
half and keeps relaying the other way until that ends too; when one side
breaks (a reset, a framing error: the frames before the bad one are passed
on first) both connections close.  An over-long line in discard mode is
logged and dropped.  ``on_frame(direction,
frame)`` (``"up"``: client to server, ``"down"``) sees each frame before it
is sent on, for logging and tests.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import trio

from trioecho.arguments import (
    check_timeout,
    is_loopback_host,
    may_be_the_same_listener,
    parse_address,
)
from trioecho.errors import FramingError, RelayError, TrioEchoError
from trioecho.framing.base import Framer, drops_too_long
from trioecho.framing.config import FramingConfig, framing_config
from trioecho.logtext import format_address
from trioecho.server.server import MessageServer
from trioecho.stream.message_stream import MessageStream

__all__ = ["Answer", "FrameHook", "relay", "relay_server"]

logger = logging.getLogger("trioecho.relay")

Direction = Literal["up", "down"]
FrameHook = Callable[[Direction, bytes], None]
Answer = Callable[[bytes], bytes | None]
DEFAULT_CONNECT_TIMEOUT = 10.0


_SIDES: dict[Direction, tuple[str, str]] = {
    "up": ("client", "upstream"),
    "down": ("upstream", "client"),
}
# What a stream raises when its peer or the network fails it (not a bug).
_PEER_FAILURES = (TrioEchoError, trio.BrokenResourceError)


async def _pump(
    source: MessageStream,
    sink: MessageStream,
    encoder: Framer,
    direction: Direction,
    on_frame: FrameHook | None,
    answer: Answer | None = None,
) -> None:
    """Frames from ``source`` to ``sink`` until ``source`` ends; then end
    ``sink``'s sending side.  ``encoder`` frames them in ``source``'s framing
    (``sink``'s own framer is for what ``sink`` sends).  A frame ``answer``
    has a reply for is answered to ``source`` instead of passed on.  A peer
    failure on either stream raises :class:`RelayError` naming its side."""
    source_side, sink_side = _SIDES[direction]
    while True:
        error: FramingError | None = None
        try:
            frames = await source.receive_messages()
        except trio.EndOfChannel:
            break
        except FramingError as exc:  # the frames before the bad one still go on
            frames, error = exc.frames, exc
        except _PEER_FAILURES as exc:
            raise RelayError(source_side, exc) from exc
        if on_frame is not None:
            for frame in frames:
                on_frame(direction, frame)
        try:
            if answer is not None:
                frames = await _answer_some(source, frames, answer)
        except _PEER_FAILURES as exc:
            raise RelayError(source_side, exc) from exc
        try:
            if frames:
                await sink.send_framed(encoder.encode_many(frames), len(frames))
        except _PEER_FAILURES as exc:
            raise RelayError(sink_side, exc) from exc
        if error is not None:
            framer = source.framer
            if drops_too_long(framer):
                logger.warning("relay: dropped an over-long line (%s): %s", direction, error)
                continue
            raise RelayError(source_side, error) from error
    try:
        await sink.send_eof()
    except TypeError:  # a transport without half-close (TLS): close it all
        await sink.aclose()
    except _PEER_FAILURES as exc:
        raise RelayError(sink_side, exc) from exc


async def _answer_some(source: MessageStream, frames: list[bytes], answer: Answer) -> list[bytes]:
    """Send ``answer``'s replies back to ``source``; return the frames to pass on."""
    passed = []
    for frame in frames:
        reply = answer(frame)
        if reply is None:
            passed.append(frame)
        else:
            await source.send_framed(reply)
    return passed


async def relay(
    client: MessageStream,
    server: MessageStream,
    *,
    client_framing: FramingConfig | str,
    server_framing: FramingConfig | str,
    on_frame: FrameHook | None = None,
    answer: Answer | None = None,
) -> None:
    """Relay frames between ``client`` and ``server``, which read with
    ``client_framing`` and ``server_framing``, until both have ended, or
    either breaks: then :class:`RelayError` (which side, and its error) is
    raised, the first failure alone; the caller closes the streams.
    ``answer(frame)``, for each frame from the client, returns bytes to send
    back to the client instead of passing the frame on, or None."""
    up = framing_config(client_framing, "client_framing").new_framer()
    down = framing_config(server_framing, "server_framing").new_framer()
    failures: list[RelayError] = []
    async with trio.open_nursery() as nursery:

        async def pump(*args: Any) -> None:
            try:
                await _pump(*args)
            except RelayError as exc:
                failures.append(exc)
                nursery.cancel_scope.cancel()  # the other way ends with it

        nursery.start_soon(pump, client, server, up, "up", on_frame, answer)
        nursery.start_soon(pump, server, client, down, "down", on_frame)
    if failures:
        raise failures[0]


class _OwnConnections:
    """The local ports of a relay's upstream connections, each recorded
    before it connects: a client connecting from one of them is the relay
    itself (a loop), refused before it dials upstream again."""

    def __init__(self) -> None:
        self.ports: set[int] = set()

    def is_own(self, peer: Any) -> bool:
        return is_loopback_host(peer[0]) and peer[1] in self.ports


def _host_port(address: Any) -> tuple[str, int]:
    """A socket address as (host, port), an IPv4-mapped IPv6 host as IPv4."""
    host = address[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:") :]
    return host, address[1]


async def _dial(host: str, port: int, own: _OwnConnections) -> tuple[trio.SocketStream, int]:
    """Connect to ``host``:``port``, trying its addresses in order; the
    socket is bound first, so its port is in ``own`` before the connection
    can arrive anywhere.  Returns the stream and that port (the caller
    removes it from ``own``)."""
    last: OSError | None = None
    for family, kind, protocol, _, address in await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        sock = trio.socket.socket(family, kind, protocol)
        try:
            await sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            local_port = sock.getsockname()[1]
            own.ports.add(local_port)
            try:
                await sock.connect(address)
            except BaseException:
                own.ports.discard(local_port)
                raise
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock), local_port
    raise last if last is not None else OSError(f"{host} has no address")


_LOOP_WAIT = 5.0  # seconds a loop connection is given to be refused


async def _until_closed(stream: MessageStream) -> None:
    """Read and drop ``stream``'s messages until it ends or breaks."""
    with contextlib.suppress(trio.EndOfChannel, TrioEchoError, trio.BrokenResourceError):
        while True:
            await stream.receive_messages()


def _is_itself(client: MessageStream, server: MessageStream) -> bool:
    """Whether the upstream connection reached the client's own listener."""
    client_addresses, server_addresses = client.addresses(), server.addresses()
    if client_addresses is None or server_addresses is None:
        return False
    return _host_port(server_addresses[1]) == _host_port(client_addresses[0])


async def _relay_connection(
    upstream: tuple[str, int],
    client_framing: FramingConfig,
    server_framing: FramingConfig,
    on_frame: FrameHook | None,
    answer: Answer | None,
    connect_timeout: float,
    own: _OwnConnections,
    client: MessageStream,
) -> None:
    where = format_address(upstream)
    client_addresses = client.addresses()
    if client_addresses is not None and own.is_own(client_addresses[1]):
        logger.error("relay: the upstream %s is this relay itself: closing", where)
        return
    host, port = upstream
    dialed = None
    with trio.move_on_after(connect_timeout):
        try:
            dialed = await _dial(host, port, own)
        except OSError as exc:
            logger.warning("relay: cannot connect to %s: %s", where, exc.strerror or exc)
            return
    if dialed is None:
        logger.warning("relay: cannot connect to %s: no answer in %g s", where, connect_timeout)
        return
    tcp, local_port = dialed
    try:
        async with MessageStream(tcp, server_framing) as server:
            if _is_itself(client, server):
                logger.error("relay: the upstream %s is this relay itself: closing", where)
                # Keep our port known until the loop connection's other end,
                # which comes from it, has refused it (it then closes).
                with trio.move_on_after(_LOOP_WAIT):
                    await _until_closed(server)
                return
            await relay(
                client,
                server,
                client_framing=client_framing,
                server_framing=server_framing,
                on_frame=on_frame,
                answer=answer,
            )
    finally:
        own.ports.discard(local_port)


def relay_server(
    upstream: tuple[str, int] | str,
    *,
    client_framing: FramingConfig | str,
    server_framing: FramingConfig | str,
    on_frame: FrameHook | None = None,
    answer: Answer | None = None,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    idle_timeout: float | None = None,
    **options: Any,
) -> MessageServer:
    """A :class:`MessageServer` relaying each connection to ``upstream``
    (a ``(host, port)`` tuple or ``"host:port"``).  Frames from clients are
    read with ``client_framing``, frames from the upstream server with
    ``server_framing``; ``on_frame`` and ``answer`` as :func:`relay` takes
    them.  A client whose upstream connection fails, or takes over
    ``connect_timeout`` seconds (None: no limit), is closed.
    ``idle_timeout`` defaults to none (a database client may wait long for
    a reply); the other ``options`` are :class:`MessageServer`'s.

    An upstream that is the relay's own address is refused here
    (``ValueError``) when the addresses say so, and otherwise detected at the
    first connection, which is closed: a relay never relays to itself."""
    address = parse_address(upstream, "upstream")
    client_framing = framing_config(client_framing, "client_framing")
    server_framing = framing_config(server_framing, "server_framing")
    timeout = check_timeout(connect_timeout, "connect_timeout", zero=True)
    connect_timeout = math.inf if timeout is None else timeout
    handler = partial(
        _relay_connection,
        address,
        client_framing,
        server_framing,
        on_frame,
        answer,
        connect_timeout,
        _OwnConnections(),
    )
    server = MessageServer(handler, framing=client_framing, idle_timeout=idle_timeout, **options)
    if may_be_the_same_listener(address, server.host, server.port):
        raise ValueError(
            f"upstream {format_address(address)} is the relay's own address "
            f"({server.host or 'every interface'}, port {server.port}): it would relay to "
            "itself; give the relay another port"
        )
    return server
