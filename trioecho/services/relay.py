"""A frame relay: a trioecho server that passes every frame on to another server.

Each client connection gets its own connection upstream and two pumps, one
each way.  A pump passes the bytes on as they arrive, checked by its side's
framer (:meth:`~trioecho.MessageStream.forward_to`): every frame header is
validated against the framing and its ``max_frame`` before the frame goes
on, a frame's body streams through in pieces however long it is (memory: a
read, not a frame), and on the readiness hub the hub itself forwards each
read, with no task wake-up per message.  The bytes sent are the bytes
received, so the relay is transparent::

    server = relay_server(
        ("db.internal", 5432),
        client_framing=presets.postgresql("client"),
        server_framing=presets.postgresql("server"),
        answer_factory=presets.PostgresNegotiation,  # TLS would hide the frames
        port=6432,
    )
    await server.serve()

Frames are read whole, as objects, only where a hook needs them:
``answer`` for a phased framing's first phase (PostgreSQL's startup
packets), ``on_frame(direction, frame)`` (``"up"``: client to server,
``"down"``) for every frame, for logging and tests; and for line framings,
whose ends are searched for rather than announced.

When one side ends its stream the relay closes the other side's sending
half and keeps relaying the other way until that ends too; when one side
breaks (a reset, a framing error: the bytes before the bad header are
passed on first) both connections close.  An over-long line in discard mode
is logged and dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
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
from trioecho.errors import (
    FramingError,
    IdleTimeoutError,
    ProtocolRefusedError,
    RelayError,
    SinkError,
    TrioEchoError,
)
from trioecho.framing.base import Framer, can_forward, drops_too_long
from trioecho.framing.config import FramingConfig, framing_config
from trioecho.framing.phased import PhasedFramer
from trioecho.framing.presets import FinalAnswer
from trioecho.logtext import format_address
from trioecho.server.server import MessageServer
from trioecho.stream.message_stream import MessageStream

__all__ = [
    "DEFAULT_RELAY_IDLE_TIMEOUT",
    "DEFAULT_RELAY_SEND_TIMEOUT",
    "Answer",
    "FrameHook",
    "Refusal",
    "relay",
    "relay_server",
]

logger = logging.getLogger("trioecho.relay")

Direction = Literal["up", "down"]
FrameHook = Callable[[Direction, bytes], None]
Answer = Callable[[bytes], bytes | None]
Refusal = Callable[[Direction, FramingError], bytes | None]
DEFAULT_CONNECT_TIMEOUT = 10.0
# Bytes a pump reads at a time from either side: what it holds while the
# other side is slow to take them (a frame longer than this streams through).
RELAY_READ_SIZE = 16 * 1024
DEFAULT_RELAY_IDLE_TIMEOUT = 3600.0
DEFAULT_RELAY_SEND_TIMEOUT = 60.0


_SIDES: dict[Direction, tuple[str, str]] = {
    "up": ("client", "upstream"),
    "down": ("upstream", "client"),
}
# What a stream raises when its peer or the network fails it (not a bug).
_PEER_FAILURES = (TrioEchoError, trio.BrokenResourceError)


def _forwards(source: MessageStream, on_frame: FrameHook | None, answer: Answer | None) -> bool:
    """Whether a pump can pass ``source``'s bytes on as they arrive
    (:meth:`MessageStream.forward_to`) rather than frame by frame: no hook
    needs the frames as objects (``answer`` is only for a phased framing's
    first phase: PostgreSQL's startup packets), and the framer can forward
    now (a length-field framing, past any first phase, at a boundary)."""
    if on_frame is not None or source.has_pending:
        return False
    framer = source.framer
    return (answer is None or isinstance(framer, PhasedFramer)) and can_forward(framer)


async def _pump(
    source: MessageStream,
    sink: MessageStream,
    encoder: Framer,
    direction: Direction,
    on_frame: FrameHook | None,
    answer: Answer | None = None,
    refusal: Refusal | None = None,
) -> None:
    """``source``'s input to ``sink`` until ``source`` ends; then end
    ``sink``'s sending side.  Bytes go on as they arrive, checked by the
    framer (:func:`_forwards`), or else frame by frame: ``encoder`` frames
    them in ``source``'s framing (``sink``'s own framer is for what ``sink``
    sends), and a frame ``answer`` has a reply for is answered to ``source``
    instead of passed on.  A peer failure on either stream raises
    :class:`RelayError` naming its side."""
    source_side, sink_side = _SIDES[direction]
    while True:
        if _forwards(source, on_frame, answer):
            try:
                await source.forward_to(sink)
            except SinkError as exc:
                raise RelayError(sink_side, exc.error) from exc.error
            except FramingError as exc:
                told = await _refuse(source, sink, direction, exc, refusal)
                raise RelayError(source_side, exc, refusal=told) from exc
            except _PEER_FAILURES as exc:
                raise RelayError(source_side, exc) from exc
            break
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
            if drops_too_long(source.framer):
                logger.warning("relay: dropped an over-long line (%s): %s", direction, error)
                continue
            told = await _refuse(source, sink, direction, error, refusal)
            raise RelayError(source_side, error, refusal=told) from error
    try:
        await sink.send_eof()
    except TypeError:  # a transport without half-close (TLS): close it all
        await sink.aclose()
    except _PEER_FAILURES as exc:
        raise RelayError(sink_side, exc) from exc


async def _refuse(
    source: MessageStream,
    sink: MessageStream,
    direction: Direction,
    error: FramingError,
    refusal: Refusal | None,
) -> bytes | None:
    """Tell the client why a frame is refused, when ``refusal`` says what.

    The down pump is the client's only sender, and at a frame boundary now
    (forwarding stops before the bad header): it sends the refusal itself.
    For a client's bad frame (``"up"``) the refusal is returned, to be sent
    once both pumps have stopped, and only if the down way is between
    frames and not sending at this moment (else it would cut into a frame:
    the close alone tells the client); None otherwise."""
    if refusal is None:
        return None
    if direction == "down":
        await _tell_the_client(sink, refusal(direction, error))
        return None
    if source.sending or not sink.at_frame_boundary:
        return None
    return refusal(direction, error)


async def _tell_the_client(client: MessageStream, refusal: bytes | None) -> None:
    """Send the client why its relay refuses a frame, if it can still hear
    it: not if it is gone, nor while the other pump's send to it waits for
    it to read (then the close alone tells it)."""
    if refusal:
        with contextlib.suppress(*_PEER_FAILURES, trio.ClosedResourceError, trio.BusyResourceError):
            await client.send_framed(refusal)


async def _answer_some(source: MessageStream, frames: list[bytes], answer: Answer) -> list[bytes]:
    """Send ``answer``'s replies back to ``source``; return the frames to pass
    on.  A :class:`FinalAnswer` is sent, then the client refused
    (:class:`~trioecho.errors.ProtocolRefusedError` with its reason)."""
    passed = []
    for frame in frames:
        reply = answer(frame)
        if reply is None:
            passed.append(frame)
            continue
        await source.send_framed(reply)
        if isinstance(reply, FinalAnswer):
            raise ProtocolRefusedError(reply.reason)  # the pump names the side
    return passed


async def relay(
    client: MessageStream,
    server: MessageStream,
    *,
    client_framing: FramingConfig | str,
    server_framing: FramingConfig | str,
    on_frame: FrameHook | None = None,
    answer: Answer | None = None,
    idle_timeout: float | None = None,
    finish_timeout: float | None = None,
    refusal: Refusal | None = None,
) -> None:
    """Relay frames between ``client`` and ``server``, which read with
    ``client_framing`` and ``server_framing``, until both have ended, or
    either breaks: then :class:`RelayError` (which side, and its error) is
    raised, the first failure alone; the caller closes the streams.
    ``answer(frame)``, for each frame from the client (with a phased
    framing, PostgreSQL's: each frame of its first phase, the startup
    packets), returns bytes to send back to the client instead of passing
    the frame on, or None.

    Without ``on_frame`` (and, with ``answer``, after a phased framing's
    first phase) the bytes go on as they arrive
    (:meth:`~trioecho.MessageStream.forward_to`): every header is checked,
    a frame's body streams through however long it is, and on the readiness
    hub no task wakes per message.  ``on_frame`` needs the frames as objects:
    then every frame is read whole (up to ``max_frame``) and re-encoded.
    ``refusal(direction, error)``, for a frame either side sent that the
    framing refuses, returns bytes to send the client before both close
    (:func:`~trioecho.framing.presets.postgres_refusal`: an ErrorResponse).

    Limits (None: none): with no bytes either way for ``idle_timeout``
    seconds, or once one side has ended, if the other has not finished within
    ``finish_timeout`` seconds, both close (:class:`RelayError` with an
    :class:`~trioecho.errors.IdleTimeoutError`).  A send that stays blocked
    is each stream's own ``send_timeout``."""
    up = framing_config(client_framing, "client_framing").new_framer()
    down = framing_config(server_framing, "server_framing").new_framer()
    idle = check_timeout(idle_timeout, "idle_timeout")
    finish = check_timeout(finish_timeout, "finish_timeout")
    failures: list[RelayError] = []
    closed: list[RelayError] = []  # pumps whose stream was closed under them
    async with trio.open_nursery() as nursery:
        ended: list[Direction] = []

        async def pump(
            source: MessageStream,
            sink: MessageStream,
            encoder: Framer,
            direction: Direction,
            answer: Answer | None,
        ) -> None:
            try:
                await _pump(source, sink, encoder, direction, on_frame, answer, refusal)
            except RelayError as exc:
                failures.append(exc)
                nursery.cancel_scope.cancel()  # the other way ends with it
                return
            except trio.ClosedResourceError as exc:
                # Closed under it: by the other way's failure (a send that
                # timed out closes its stream), or by the server.
                closed.append(RelayError(_SIDES[direction][0], exc))
                nursery.cancel_scope.cancel()
                return
            ended.append(direction)
            if len(ended) == 2:
                nursery.cancel_scope.cancel()  # both done: the timers go too
            elif finish is not None:
                nursery.start_soon(end_unfinished, direction, finish)

        async def end_unfinished(direction: Direction, timeout: float) -> None:
            await trio.sleep(timeout)
            ended_side, other = _SIDES[direction]
            failures.append(
                RelayError(
                    other,
                    IdleTimeoutError(
                        f"not finished {timeout:g} s after the {ended_side} side ended"
                    ),
                )
            )
            nursery.cancel_scope.cancel()

        def moved() -> int:
            return client.bytes_received + server.bytes_received

        async def end_if_idle(timeout: float) -> None:
            # A look every quarter of the timeout: no cost per message.
            seen, since = moved(), trio.current_time()
            while True:
                await trio.sleep(timeout / 4)
                now, bytes_moved = trio.current_time(), moved()
                if bytes_moved != seen:
                    seen, since = bytes_moved, now
                elif now - since >= timeout:
                    failures.append(
                        RelayError(
                            "client", IdleTimeoutError(f"no bytes either way for {timeout:g} s")
                        )
                    )
                    nursery.cancel_scope.cancel()
                    return

        if idle is not None:
            nursery.start_soon(end_if_idle, idle)
        nursery.start_soon(pump, client, server, up, "up", answer)
        nursery.start_soon(pump, server, client, down, "down", None)

    if failures and failures[0].refusal is not None:
        # The down way stopped between frames: the client hears why now.
        await _tell_the_client(client, failures[0].refusal)
    if failures or closed:
        raise (failures or closed)[0]


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


@dataclasses.dataclass(frozen=True)
class _RelayPolicy:
    """What each relayed connection of a :func:`relay_server` gets."""

    upstream: tuple[str, int]
    client_framing: FramingConfig
    server_framing: FramingConfig
    on_frame: FrameHook | None
    answer: Answer | None
    answer_factory: Callable[[], Answer] | None
    refusal: Refusal | None
    connect_timeout: float
    idle_timeout: float | None
    send_timeout: float | None
    own: _OwnConnections


async def _relay_connection(policy: _RelayPolicy, client: MessageStream) -> None:
    where = format_address(policy.upstream)
    own = policy.own
    client_addresses = client.addresses()
    peer = format_address(client_addresses[1]) if client_addresses is not None else "client"
    if client_addresses is not None and own.is_own(client_addresses[1]):
        logger.error("%s: the upstream %s is this relay itself: closing", peer, where)
        client.close_reason = "upstream_unreachable"
        return
    host, port = policy.upstream
    dialed = None
    with trio.move_on_after(policy.connect_timeout):
        try:
            dialed = await _dial(host, port, own)
        except OSError as exc:
            logger.warning(
                "%s: closing: cannot connect to the upstream %s: %s",
                peer,
                where,
                os.strerror(exc.errno) if exc.errno else exc,
            )
            client.close_reason = "upstream_unreachable"
            return
    if dialed is None:
        logger.warning(
            "%s: closing: cannot connect to the upstream %s: no answer in %g s",
            peer,
            where,
            policy.connect_timeout,
        )
        client.close_reason = "upstream_unreachable"
        return
    tcp, local_port = dialed
    answer = policy.answer_factory() if policy.answer_factory is not None else policy.answer
    client.receive_size = RELAY_READ_SIZE
    try:
        # The upstream connection's buffers count in the server's memory budget too.
        account = client.account.budget.open_account() if client.account is not None else None
        stream = MessageStream(
            tcp,
            policy.server_framing,
            receive_size=RELAY_READ_SIZE,
            send_timeout=policy.send_timeout,
            account=account,
        )
        async with stream as server:
            if _is_itself(client, server):
                logger.error("%s: the upstream %s is this relay itself: closing", peer, where)
                client.close_reason = "upstream_unreachable"
                # Keep our port known until the loop connection's other end,
                # which comes from it, has refused it (it then closes).
                with trio.move_on_after(_LOOP_WAIT):
                    await _until_closed(server)
                return
            await relay(
                client,
                server,
                client_framing=policy.client_framing,
                server_framing=policy.server_framing,
                on_frame=policy.on_frame,
                answer=answer,
                idle_timeout=policy.idle_timeout,
                finish_timeout=policy.send_timeout,
                refusal=policy.refusal,
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
    answer_factory: Callable[[], Answer] | None = None,
    refusal: Refusal | None = None,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    idle_timeout: float | None = DEFAULT_RELAY_IDLE_TIMEOUT,
    send_timeout: float | None = DEFAULT_RELAY_SEND_TIMEOUT,
    **options: Any,
) -> MessageServer:
    """A :class:`MessageServer` relaying each connection to ``upstream``
    (a ``(host, port)`` tuple or ``"host:port"``).  Frames from clients are
    read with ``client_framing``, frames from the upstream server with
    ``server_framing``; ``on_frame`` and ``answer`` as :func:`relay` takes
    them (``answer_factory()``, if given instead, makes each connection its
    own ``answer``: :class:`~trioecho.framing.presets.PostgresNegotiation`);
    ``refusal`` as :func:`relay` takes it.
    A client whose upstream connection fails, or takes over
    ``connect_timeout`` seconds (None: no limit), is closed.

    Limits, each None for none: ``idle_timeout`` (default an hour: a
    database session may sit idle long, but not for ever) closes a pair on
    which no bytes moved either way for that long (looked at every quarter of it); ``send_timeout``
    (default 60 s) bounds a send to either side that stays blocked (the peer
    does not read), and how long the other side gets to finish once one
    side has ended (a client gone while its upstream never answers frees
    both connections and its slot within it).  The other ``options`` are
    :class:`MessageServer`'s.

    An upstream that is the relay's own address is refused here
    (``ValueError``) when the addresses say so, and otherwise detected at the
    first connection, which is closed: a relay never relays to itself."""
    address = parse_address(upstream, "upstream")
    client_framing = framing_config(client_framing, "client_framing")
    server_framing = framing_config(server_framing, "server_framing")
    timeout = check_timeout(connect_timeout, "connect_timeout", zero=True)
    if answer is not None and answer_factory is not None:
        raise ValueError("give answer or answer_factory, not both")
    policy = _RelayPolicy(
        upstream=address,
        client_framing=client_framing,
        server_framing=server_framing,
        on_frame=on_frame,
        answer=answer,
        answer_factory=answer_factory,
        refusal=refusal,
        connect_timeout=math.inf if timeout is None else timeout,
        idle_timeout=check_timeout(idle_timeout, "idle_timeout"),
        send_timeout=check_timeout(send_timeout, "send_timeout"),
        own=_OwnConnections(),
    )
    # The pair's idle timeout is the relay's own (a client waiting for a
    # long query is not idle); each stream's send timeout is send_timeout.
    server = MessageServer(
        partial(_relay_connection, policy),
        framing=client_framing,
        idle_timeout=None,
        send_timeout=policy.send_timeout,
        **options,
    )
    if may_be_the_same_listener(address, server.host, server.port):
        raise ValueError(
            f"upstream {format_address(address)} is the relay's own address "
            f"({server.host or 'every interface'}, port {server.port}): it would relay to "
            "itself; give the relay another port"
        )
    return server
