"""One relayed connection of a relay server: its setup, its pair, its log line.

:func:`relay_connection` is the handler a
:func:`~trioecho.services.relay.relay_server` serves each client with:
it refuses a client that is the relay's own upstream connection (a loop),
dials the upstream (:func:`~trioecho.io.dial.dial`, within
``connect_timeout``), checks that the upstream is not the relay itself,
gives the pair its ``answer``, relays (:func:`~trioecho.services.relay_pair.relay`)
and writes the one log line (``trioecho.relay``) that says how the pair
ended: the client, the side (the upstream with its address) and the reason.
Every way it closes the client sets the client's close reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import ssl
from typing import Any, cast

import trio

from trioecho.arguments import is_loopback_host
from trioecho.errors import (
    FramingError,
    MemoryBudgetError,
    ProtocolRefusedError,
    RelayError,
    SlowReaderError,
    TLSHandshakeError,
    TrioEchoError,
)
from trioecho.framing.config import FramingConfig
from trioecho.io.dial import dial
from trioecho.io.keepalive import KeepAlive
from trioecho.io.tls import TLSStream, start_upstream_tls
from trioecho.logtext import format_address
from trioecho.reasons import CloseReason
from trioecho.server.endings import close_reason_of
from trioecho.services.relay_config import RelayConfig
from trioecho.services.relay_pair import ended_by_its_peer, relay
from trioecho.services.relay_pump import RELAY_READ_SIZE
from trioecho.stream.message_stream import MessageStream

__all__ = ["OwnConnections", "RelayPolicy", "relay_connection"]

logger = logging.getLogger("trioecho.relay")

_LOOP_WAIT = 5.0  # seconds a loop connection is given to be refused


class OwnConnections:
    """The local ports of a relay's upstream connections, each recorded
    before it connects: a client connecting from one of them is the relay
    itself (a loop), refused before it dials upstream again."""

    def __init__(self) -> None:
        self.ports: set[int] = set()

    def is_own(self, peer: Any) -> bool:
        return is_loopback_host(peer[0]) and peer[1] in self.ports


@dataclasses.dataclass(frozen=True)
class RelayPolicy:
    """What each relayed connection of a relay server gets: its checked
    ``config``, its ``connect_timeout`` in seconds (``math.inf``: no
    limit) and the relay's ``own`` upstream connections."""

    config: RelayConfig
    connect_timeout: float
    own: OwnConnections


async def relay_connection(policy: RelayPolicy, client: MessageStream) -> None:
    """Relay ``client`` to the upstream, as the module docstring says."""
    upstream = cast(tuple[str, int], policy.config.upstream)
    where = format_address(upstream)
    client_addresses = client.addresses()
    peer = format_address(client_addresses[1]) if client_addresses is not None else "client"
    if client_addresses is not None and policy.own.is_own(client_addresses[1]):
        _refuse_the_loop(client, peer, where)
        return
    dialed = await _dial_upstream(policy, upstream, peer, where)
    if dialed is None:
        client.close_reason = CloseReason.UPSTREAM_UNREACHABLE
        return
    tcp, local_port = dialed
    try:
        if policy.config.upstream_ssl_context is not None:
            secured = await _secure_upstream(policy, tcp, peer, where)
            if secured is None:
                client.close_reason = CloseReason.UPSTREAM_UNREACHABLE
                await trio.aclose_forcefully(tcp)
                return
            tcp = secured
        await _relay_dialed(policy.config, client, tcp, peer, where)
    finally:
        policy.own.ports.discard(local_port)


async def _secure_upstream(
    policy: RelayPolicy, tcp: trio.SocketStream, peer: str, where: str
) -> TLSStream | None:
    """TLS over the new upstream connection ``tcp`` (its StartTLS request
    first, if the config has one), within ``connect_timeout``; None,
    logged with the side and the reason, if it cannot be set up (the
    caller closes ``tcp``)."""
    config = policy.config
    context = cast(ssl.SSLContext, config.upstream_ssl_context)
    name = config.upstream_server_name or cast(tuple[str, int], config.upstream)[0]
    with trio.move_on_after(policy.connect_timeout):
        try:
            return await start_upstream_tls(tcp, context, name, config.upstream_starttls)
        except TLSHandshakeError as exc:
            logger.warning("%s: closing: TLS with the upstream %s: %s", peer, where, exc)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.warning(
                "%s: closing: the upstream %s went away while TLS was set up: %s", peer, where, exc
            )
        return None
    logger.warning(
        "%s: closing: TLS with the upstream %s: not set up in %g s",
        peer,
        where,
        policy.connect_timeout,
    )
    return None


def _refuse_the_loop(client: MessageStream, peer: str, where: str) -> None:
    """Close ``client``: the upstream it would be relayed to is this relay."""
    logger.error("%s: the upstream %s is this relay itself: closing", peer, where)
    client.close_reason = CloseReason.UPSTREAM_UNREACHABLE


async def _dial_upstream(
    policy: RelayPolicy, upstream: tuple[str, int], peer: str, where: str
) -> tuple[Any, int] | None:
    """The upstream connection and its local port (recorded in
    ``policy.own`` until the caller discards it), or None, logged, if it
    fails or takes over ``connect_timeout`` seconds."""
    config = policy.config
    host, port = upstream
    with trio.move_on_after(policy.connect_timeout):
        try:
            return await dial(
                host,
                port,
                claim=policy.own.ports.add,
                release=policy.own.ports.discard,
                keepalive=cast(KeepAlive | None, config.keepalive),
                send_timeout=config.send_timeout,
            )
        except OSError as exc:
            logger.warning(
                "%s: closing: cannot connect to the upstream %s: %s",
                peer,
                where,
                os.strerror(exc.errno) if exc.errno else exc,
            )
            return None
    logger.warning(
        "%s: closing: cannot connect to the upstream %s: no answer in %g s",
        peer,
        where,
        policy.connect_timeout,
    )
    return None


async def _relay_dialed(
    config: RelayConfig, client: MessageStream, tcp: Any, peer: str, where: str
) -> None:
    """Relay ``client`` over the dialed upstream connection ``tcp`` (closed
    on return), unless it reached the relay itself; log how the pair ended."""
    answer = config.answer_factory() if config.answer_factory is not None else config.answer
    client.receive_size = RELAY_READ_SIZE
    # The upstream connection's buffers count in the server's memory budget too.
    account = client.open_sibling_account()
    stream = MessageStream(
        tcp,
        cast(FramingConfig, config.server_framing),
        receive_size=RELAY_READ_SIZE,
        send_timeout=config.send_timeout,
        min_send_rate=config.min_send_rate,
        account=account,
    )
    async with stream as server:
        if _is_itself(client, server):
            _refuse_the_loop(client, peer, where)
            # Keep our port known until the loop connection's other end,
            # which comes from it, has refused it (it then closes).
            with trio.move_on_after(_LOOP_WAIT):
                await _until_closed(server)
            return
        try:
            ended = await relay(
                client,
                server,
                client_framing=config.client_framing,
                server_framing=config.server_framing,
                on_frame=config.on_frame,
                answer=answer,
                idle_timeout=config.idle_timeout,
                fin_timeout=config.fin_timeout,
                half_close=config.half_close,
                refusal=config.refusal,
            )
        except RelayError as exc:
            client.close_reason = close_reason_of(exc)
            _log_failure(peer, where, exc)
        else:
            _log_ending(peer, where, client, ended)


def _host_port(address: Any) -> tuple[str, int]:
    """A socket address as (host, port), an IPv4-mapped IPv6 host as IPv4."""
    host = address[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:") :]
    return host, address[1]


def _is_itself(client: MessageStream, server: MessageStream) -> bool:
    """Whether the upstream connection reached the client's own listener."""
    client_addresses, server_addresses = client.addresses(), server.addresses()
    if client_addresses is None or server_addresses is None:
        return False
    return _host_port(server_addresses[1]) == _host_port(client_addresses[0])


async def _until_closed(stream: MessageStream) -> None:
    """Read and drop ``stream``'s messages until it ends or breaks."""
    with contextlib.suppress(trio.EndOfChannel, TrioEchoError, trio.BrokenResourceError):
        while True:
            await stream.receive_messages()


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
    if ended[0] == "client" and not ended_by_its_peer(client):
        first += " stopped (shutdown)"
    else:
        first += " ended"
    if len(ended) == 1:
        other = _side("upstream" if ended[0] == "client" else "client", upstream)
        logger.info("%s: closing: %s; no half-close: %s closes too", peer, first, other)
    else:
        logger.info("%s: closed: %s, then %s", peer, first, _side(ended[1], upstream))
