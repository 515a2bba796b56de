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
        refusal=presets.postgres_refusal,  # an ErrorResponse says why it closes
        half_close=False,  # PostgreSQL has none: a side's end closes both
        idle_timeout=None,  # pgbouncer's: no timeout cuts a live client
        send_timeout=None,
        port=6432,
    )
    await server.serve()

Frames are read whole, as objects, only where a hook needs them:
``answer`` for a phased framing's first phase (PostgreSQL's startup
packets), ``on_frame(direction, frame)`` (``"up"``: client to server,
``"down"``) for every frame, for logging and tests; and for line framings,
whose ends are searched for rather than announced.

When one side ends its stream the relay closes the other side's sending
half and keeps relaying the other way until that ends too, while bytes keep
moving (``fin_timeout``, HAProxy's ``timeout client-fin``/``server-fin``);
with ``half_close=False`` (PostgreSQL's protocol has no half-close) a side's
end closes both connections at once, as pgbouncer does.  When one side
breaks (a reset, a framing error: the bytes before the bad header are
passed on first) both connections close.  Each ending is one log line
(``trioecho.relay``) naming the client, the side (the upstream with its
address) and the reason.  An over-long line in discard mode is logged and
dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import trio

from trioecho.arguments import (
    check_timeout,
    is_loopback_host,
    may_be_the_same_listener,
)
from trioecho.errors import (
    FramingError,
    IdleTimeoutError,
    MemoryBudgetError,
    ProtocolRefusedError,
    RelayError,
    SinkError,
    SlowReaderError,
    TrioEchoError,
)
from trioecho.framing.base import Framer, can_forward, drops_too_long
from trioecho.framing.config import FramingConfig, framing_config
from trioecho.framing.phased import PhasedFramer
from trioecho.framing.presets import FinalAnswer
from trioecho.io.dial import dial
from trioecho.io.keepalive import DEFAULT_KEEPALIVE, KeepAlive
from trioecho.logtext import format_address
from trioecho.reasons import CloseReason
from trioecho.server.config import DEFAULT_MIN_SEND_RATE, ServerConfig
from trioecho.server.endings import close_reason_of
from trioecho.server.server import MessageServer
from trioecho.services.relay_config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RELAY_FIN_TIMEOUT,
    DEFAULT_RELAY_IDLE_TIMEOUT,
    DEFAULT_RELAY_SEND_TIMEOUT,
    RELAY_OWNED_SETTINGS,
    Answer,
    Direction,
    FrameHook,
    Refusal,
    RelayConfig,
)
from trioecho.stream.message_stream import MessageStream

# The settings' types and defaults live in relay_config (imported here too).
__all__ = ["relay", "relay_server", "relay_server_from_config"]

logger = logging.getLogger("trioecho.relay")

# Bytes a pump reads at a time from either side: what it holds while the
# other side is slow to take them (a frame longer than this streams through).
RELAY_READ_SIZE = 16 * 1024
# Seconds the client is given to take what the relay tells it before closing.
_TELL_WAIT = 5.0


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
    """Send the client why its relay closes, if it can still hear it: not
    if it is gone, nor while the other pump's send to it waits for it to
    read (then the close alone tells it), nor past ``_TELL_WAIT`` seconds."""
    if refusal:
        with (
            trio.move_on_after(_TELL_WAIT),
            contextlib.suppress(*_PEER_FAILURES, trio.ClosedResourceError, trio.BusyResourceError),
        ):
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
    fin_timeout: float | None = None,
    half_close: bool = True,
    refusal: Refusal | None = None,
) -> tuple[str, ...]:
    """Relay frames between ``client`` and ``server``, which read with
    ``client_framing`` and ``server_framing``, until both have ended, or
    either breaks: then :class:`RelayError` (which side, and its error) is
    raised, the first failure alone; the caller closes the streams.
    Returns the sides (``"client"``, ``"upstream"``) that ended their
    streams, in order.  ``answer(frame)``, for each frame from the client
    (with a phased framing, PostgreSQL's: each frame of its first phase, the
    startup packets), returns bytes to send back to the client instead of
    passing the frame on, or None.

    Without ``on_frame`` (and, with ``answer``, after a phased framing's
    first phase) the bytes go on as they arrive
    (:meth:`~trioecho.MessageStream.forward_to`): every header is checked,
    a frame's body streams through however long it is, and on the readiness
    hub no task wakes per message.  ``on_frame`` needs the frames as objects:
    then every frame is read whole (up to ``max_frame``) and re-encoded.

    Endings: a side's end is passed on (the other side's sending half is
    closed) and the other way goes on; with ``half_close=False`` (a protocol
    without half-close: PostgreSQL's) a side's own end closes both at once
    instead, and only the client's input stopped by the server
    (:meth:`~trioecho.MessageStream.stop_receiving`, on shutdown) is passed
    on so that the upstream can finish.

    ``refusal(direction, error)`` returns bytes to send the client before
    both close (:func:`~trioecho.framing.presets.postgres_refusal`: an
    ErrorResponse), for a frame either side sent that the framing refuses
    (``direction``: the way it came), and for the timeouts below that end a
    pair the client can still hear: ``idle_timeout`` (``"up"``, an
    :class:`~trioecho.errors.IdleTimeoutError`) and a send to the upstream
    that stalled (``"down"``, a :class:`~trioecho.errors.SlowReaderError`).
    The client is told only when the way down is between frames and not
    sending (else the close alone tells it), within 5 s.

    Limits (None: none): with no bytes moving either way (read or sent)
    for ``idle_timeout`` seconds, or once one side has ended, none for
    ``fin_timeout`` seconds, both close (:class:`RelayError` with an
    :class:`~trioecho.errors.IdleTimeoutError`; looked at every quarter of
    the timeout).  A send waiting for a side to read follows that stream's
    own send rule (``send_timeout``, ``min_send_rate``)."""
    up = framing_config(client_framing, "client_framing").new_framer()
    down = framing_config(server_framing, "server_framing").new_framer()
    idle = check_timeout(idle_timeout, "idle_timeout")
    fin = check_timeout(fin_timeout, "fin_timeout")
    half_close = _check_bool(half_close, "half_close")
    failures: list[RelayError] = []
    closed: list[RelayError] = []  # pumps whose stream was closed under them
    ended: list[str] = []  # the sides whose streams ended, in order

    def moved() -> int:
        client.sync_counters()  # what the C pump counted so far
        server.sync_counters()
        return client.bytes_received + server.bytes_received + client.bytes_sent + server.bytes_sent

    def notice(direction: Direction, error: Exception) -> bytes | None:
        """``refusal``'s words for the client, if it can hear them now."""
        if refusal is None or client.sending or not server.at_frame_boundary:
            return None
        return refusal(direction, error)

    async with trio.open_nursery() as nursery:

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
                if exc.side == "upstream" and isinstance(exc.error, SlowReaderError):
                    exc.refusal = notice("down", exc.error)
                failures.append(exc)
                nursery.cancel_scope.cancel()  # the other way ends with it
                return
            except trio.ClosedResourceError as exc:
                # Closed under it: by the other way's failure (a send that
                # timed out closes its stream), or by the server.
                closed.append(RelayError(_SIDES[direction][0], exc))
                nursery.cancel_scope.cancel()
                return
            side = _SIDES[direction][0]
            ended.append(side)
            if len(ended) == 2 or (not half_close and _ended_by_its_peer(source)):
                nursery.cancel_scope.cancel()  # done: the timers go too
            elif fin is not None:
                nursery.start_soon(end_unfinished, side, fin)

        async def end_unfinished(ended_side: str, timeout: float) -> None:
            await _until_still(moved, timeout)
            other = "upstream" if ended_side == "client" else "client"
            error = IdleTimeoutError(
                f"not finished: no bytes for {timeout:g} s after the {ended_side} side ended"
            )
            failures.append(RelayError(other, error))
            nursery.cancel_scope.cancel()

        async def end_if_idle(timeout: float) -> None:
            await _until_still(moved, timeout)
            error = IdleTimeoutError(f"no bytes either way for {timeout:g} s")
            failures.append(RelayError("client", error, refusal=notice("up", error)))
            nursery.cancel_scope.cancel()

        if idle is not None:
            nursery.start_soon(end_if_idle, idle)
        nursery.start_soon(pump, client, server, up, "up", answer)
        nursery.start_soon(pump, server, client, down, "down", None)

    if failures and failures[0].refusal is not None:
        # The down way stopped between frames: the client hears why now.
        await _tell_the_client(client, failures[0].refusal)
    if failures or closed:
        raise (failures or closed)[0]
    return tuple(ended)


def _ended_by_its_peer(stream: MessageStream) -> bool:
    """Whether ``stream``'s input ended because its peer ended it (not
    stopped by the server: :meth:`~trioecho.MessageStream.stop_receiving`)."""
    return stream.close_reason == CloseReason.PEER_CLOSED


async def _until_still(moved: Callable[[], int], timeout: float) -> None:
    """Return once ``moved()`` has not changed for ``timeout`` seconds,
    looked at every quarter of it (no cost per message): between
    ``timeout`` and 1.25 times it after the last change."""
    seen, since = moved(), trio.current_time()
    while True:
        await trio.sleep(timeout / 4)
        now, count = trio.current_time(), moved()
        if count != seen:
            seen, since = count, now
        elif now - since >= timeout:
            return


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
    min_send_rate: float | None
    fin_timeout: float | None
    half_close: bool
    own: _OwnConnections
    keepalive: KeepAlive | None = None


async def _relay_connection(policy: _RelayPolicy, client: MessageStream) -> None:
    where = format_address(policy.upstream)
    own = policy.own
    client_addresses = client.addresses()
    peer = format_address(client_addresses[1]) if client_addresses is not None else "client"
    if client_addresses is not None and own.is_own(client_addresses[1]):
        logger.error("%s: the upstream %s is this relay itself: closing", peer, where)
        client.close_reason = CloseReason.UPSTREAM_UNREACHABLE
        return
    host, port = policy.upstream
    dialed = None
    with trio.move_on_after(policy.connect_timeout):
        try:
            dialed = await dial(
                host,
                port,
                claim=own.ports.add,
                release=own.ports.discard,
                keepalive=policy.keepalive,
                send_timeout=policy.send_timeout,
            )
        except OSError as exc:
            logger.warning(
                "%s: closing: cannot connect to the upstream %s: %s",
                peer,
                where,
                os.strerror(exc.errno) if exc.errno else exc,
            )
            client.close_reason = CloseReason.UPSTREAM_UNREACHABLE
            return
    if dialed is None:
        logger.warning(
            "%s: closing: cannot connect to the upstream %s: no answer in %g s",
            peer,
            where,
            policy.connect_timeout,
        )
        client.close_reason = CloseReason.UPSTREAM_UNREACHABLE
        return
    tcp, local_port = dialed
    answer = policy.answer_factory() if policy.answer_factory is not None else policy.answer
    client.receive_size = RELAY_READ_SIZE
    try:
        # The upstream connection's buffers count in the server's memory budget too.
        account = client.open_sibling_account()
        stream = MessageStream(
            tcp,
            policy.server_framing,
            receive_size=RELAY_READ_SIZE,
            send_timeout=policy.send_timeout,
            min_send_rate=policy.min_send_rate,
            account=account,
        )
        async with stream as server:
            if _is_itself(client, server):
                logger.error("%s: the upstream %s is this relay itself: closing", peer, where)
                client.close_reason = CloseReason.UPSTREAM_UNREACHABLE
                # Keep our port known until the loop connection's other end,
                # which comes from it, has refused it (it then closes).
                with trio.move_on_after(_LOOP_WAIT):
                    await _until_closed(server)
                return
            try:
                ended = await relay(
                    client,
                    server,
                    client_framing=policy.client_framing,
                    server_framing=policy.server_framing,
                    on_frame=policy.on_frame,
                    answer=answer,
                    idle_timeout=policy.idle_timeout,
                    fin_timeout=policy.fin_timeout,
                    half_close=policy.half_close,
                    refusal=policy.refusal,
                )
            except RelayError as exc:
                client.close_reason = close_reason_of(exc)
                _log_failure(peer, where, exc)
            else:
                _log_ending(peer, where, client, ended)
    finally:
        own.ports.discard(local_port)


def _side(side: str, upstream: str) -> str:
    """A side of a relayed pair, for a log line: the upstream with its address."""
    return "the client side" if side == "client" else f"the upstream side ({upstream})"


def _log_failure(peer: str, upstream: str, exc: RelayError) -> None:
    """The one line for a pair that one side's failure closed: the client
    (``peer``), the side and the reason; WARNING for what a peer did
    wrong, INFO for a reset or a timeout (ERROR: a frame of our own that
    cannot be framed)."""
    error = exc.error
    level = logging.INFO
    reason = str(error)
    if isinstance(error, FramingError):
        level = logging.ERROR if error.local else logging.WARNING
        reason = f"{type(error).__name__}: {error}"
    elif isinstance(error, SlowReaderError | MemoryBudgetError | ProtocolRefusedError):
        level = logging.WARNING
    elif isinstance(error, trio.ClosedResourceError):
        reason = "closed by the server"
    logger.log(level, "%s: closing: %s: %s", peer, _side(exc.side, upstream), reason)


def _log_ending(peer: str, upstream: str, client: MessageStream, ended: tuple[str, ...]) -> None:
    """The one line (INFO) for a pair whose sides ended: both in turn, or,
    without half-close, the one whose end closed both."""
    first = _side(ended[0], upstream)
    if ended[0] == "client" and not _ended_by_its_peer(client):
        first += " stopped (shutdown)"
    else:
        first += " ended"
    if len(ended) == 1:
        other = _side("upstream" if ended[0] == "client" else "client", upstream)
        logger.info("%s: closing: %s; no half-close: %s closes too", peer, first, other)
    else:
        logger.info("%s: closed: %s, then %s", peer, first, _side(ended[1], upstream))


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
    min_send_rate: float | None = DEFAULT_MIN_SEND_RATE,
    fin_timeout: float | None = DEFAULT_RELAY_FIN_TIMEOUT,
    half_close: bool = True,
    keepalive: KeepAlive | str | None = DEFAULT_KEEPALIVE,
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

    Endings: a side's end is passed on to the other, which may go on
    sending until it ends too (``half_close=False``: the first end closes
    both at once, as pgbouncer does for PostgreSQL, whose protocol has no
    half-close: a client gone while its upstream is silent frees both
    connections and its slot at once).  Each ending is one log line naming
    the client, the side and the reason.

    Limits, each None for none: ``idle_timeout`` (default an hour: a
    database session may sit idle long, but not for ever) closes a pair on
    which no bytes moved either way for that long (looked at every quarter
    of it); ``send_timeout`` (default 60 s) and ``min_send_rate`` (default
    1024 bytes a second) are the send rule for sends to either side, as
    :class:`MessageServer` takes them (a send that makes no progress for
    ``send_timeout``, or past it averages below ``min_send_rate``, closes
    both connections); ``fin_timeout`` (default 30 s, HAProxy's ``timeout
    client-fin``/``server-fin``) closes a pair once one side has ended and
    no bytes moved for that long.  A
    PostgreSQL relay cuts no live client, as pgbouncer (no idle timeout,
    no send timeout; ``trioecho relay --preset postgresql``): give
    ``idle_timeout=None, send_timeout=None, half_close=False`` and dead
    peers are TCP keepalive's; a ``refusal`` tells the client why a timeout
    closed it (:func:`relay`).  ``keepalive`` (default 60:10:6: a dead
    peer found within 2 minutes) is TCP keepalive on both sides, the
    clients' connections and the upstream ones, as pgbouncer's
    ``tcp_keepalive``; ``TCP_USER_TIMEOUT`` comes with it
    (:mod:`trioecho.io.keepalive`).  The other ``options``
    are :class:`MessageServer`'s.

    An upstream that is the relay's own address is refused here
    (``ValueError``) when the addresses say so, and otherwise detected at the
    first connection, which is closed: a relay never relays to itself."""
    config = RelayConfig(
        upstream,
        client_framing,
        server_framing,
        on_frame=on_frame,
        answer=answer,
        answer_factory=answer_factory,
        refusal=refusal,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        send_timeout=send_timeout,
        min_send_rate=min_send_rate,
        fin_timeout=fin_timeout,
        half_close=half_close,
        keepalive=keepalive,
    )
    owned = [name for name in RELAY_OWNED_SETTINGS if name in options]
    if owned:
        raise TypeError(
            f"relay_server() sets {owned[0]} itself, from its own settings "
            "(client_framing, idle_timeout, send_timeout, min_send_rate, keepalive)"
        )
    if options:
        config = dataclasses.replace(config, listener=ServerConfig(**options))
    return relay_server_from_config(config)


def relay_server_from_config(config: RelayConfig) -> MessageServer:
    """:func:`relay_server` with the settings of ``config``."""
    if not isinstance(config, RelayConfig):
        raise TypeError(f"config must be a RelayConfig, not {type(config).__name__}")
    upstream = cast(tuple[str, int], config.upstream)
    connect_timeout = check_timeout(config.connect_timeout, "connect_timeout", zero=True)
    policy = _RelayPolicy(
        upstream=upstream,
        client_framing=cast(FramingConfig, config.client_framing),
        server_framing=cast(FramingConfig, config.server_framing),
        on_frame=config.on_frame,
        answer=config.answer,
        answer_factory=config.answer_factory,
        refusal=config.refusal,
        connect_timeout=math.inf if connect_timeout is None else connect_timeout,
        idle_timeout=config.idle_timeout,
        send_timeout=config.send_timeout,
        min_send_rate=config.min_send_rate,
        fin_timeout=config.fin_timeout,
        half_close=config.half_close,
        own=_OwnConnections(),
        keepalive=cast(KeepAlive | None, config.keepalive),
    )
    server = MessageServer.from_config(partial(_relay_connection, policy), config.listening)
    if may_be_the_same_listener(upstream, server.host, server.port):
        raise ValueError(
            f"upstream {format_address(upstream)} is the relay's own address "
            f"({server.host or 'every interface'}, port {server.port}): it would relay to "
            "itself; give the relay another port"
        )
    return server


def _check_bool(value: object, name: str) -> bool:
    """``value`` if it is a bool, else ``TypeError`` naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value
