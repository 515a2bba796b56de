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

import dataclasses
import inspect
import math
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from trioecho.arguments import check_timeout, may_be_the_same_listener
from trioecho.framing.config import FramingConfig
from trioecho.framing.starttls import StartTLS
from trioecho.io.keepalive import DEFAULT_KEEPALIVE, KeepAlive
from trioecho.logtext import format_address
from trioecho.server.config import DEFAULT_MIN_SEND_RATE, ServerConfig
from trioecho.server.server import MessageServer
from trioecho.services.relay_config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RELAY_FIN_TIMEOUT,
    DEFAULT_RELAY_IDLE_TIMEOUT,
    DEFAULT_RELAY_SEND_TIMEOUT,
    RELAY_OWNED_SETTINGS,
    Answer,
    FrameHook,
    Refusal,
    RelayConfig,
)
from trioecho.services.relay_connection import OwnConnections, RelayPolicy, relay_connection
from trioecho.services.relay_pair import relay
from trioecho.services.relay_pump import RELAY_READ_SIZE as RELAY_READ_SIZE

# The settings' types and defaults live in relay_config; a pair's relay in
# relay_pair, each of its ways in relay_pump, a connection's setup in
# relay_connection: here, the relay server built from them.
__all__ = ["relay", "relay_server", "relay_server_from_config"]


def relay_server(
    upstream: tuple[str, int] | str | RelayConfig,
    *,
    client_framing: FramingConfig | str | None = None,
    server_framing: FramingConfig | str | None = None,
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
    upstream_ssl_context: ssl.SSLContext | None = None,
    upstream_server_name: str | None = None,
    upstream_starttls: StartTLS | None = None,
    **options: Any,
) -> MessageServer:
    """A :class:`MessageServer` relaying each connection to ``upstream``
    (a ``(host, port)`` tuple or ``"host:port"``).  Frames from clients are
    read with ``client_framing``, frames from the upstream server with
    ``server_framing`` (both required); or ``relay_server(config)``: the
    settings of a :class:`~trioecho.services.relay_config.RelayConfig`,
    with no keyword beside it.  ``on_frame`` and ``answer`` as :func:`relay` takes
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
    (:mod:`trioecho.io.keepalive`).  ``upstream_ssl_context``,
    ``upstream_server_name`` and ``upstream_starttls`` speak TLS to the
    upstream (see :class:`~trioecho.services.relay_config.RelayConfig`); TLS
    towards clients is the listener's (``ssl_context``, ``starttls``).  The
    other ``options`` are :class:`MessageServer`'s.

    An upstream that is the relay's own address is refused here
    (``ValueError``) when the addresses say so, and otherwise detected at the
    first connection, which is closed: a relay never relays to itself."""
    if isinstance(upstream, RelayConfig):
        keywords = locals()
        given = [name for name, default in _KEYWORDS.items() if keywords[name] != default]
        if given or options:
            named = ", ".join([*given, *options])
            raise TypeError(f"relay_server() takes a RelayConfig alone, not with {named}")
        return relay_server_from_config(upstream)
    if client_framing is None or server_framing is None:
        raise TypeError(
            "relay_server() needs client_framing and server_framing (or a RelayConfig alone)"
        )
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
        upstream_ssl_context=upstream_ssl_context,
        upstream_server_name=upstream_server_name,
        upstream_starttls=upstream_starttls,
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


# relay_server()'s keywords and their defaults (beside a RelayConfig, none may differ).
_KEYWORDS = {
    name: parameter.default
    for name, parameter in inspect.signature(relay_server).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
}


def relay_server_from_config(config: RelayConfig) -> MessageServer:
    """``relay_server(config)``: a relay with the settings of ``config``."""
    if not isinstance(config, RelayConfig):
        raise TypeError(f"config must be a RelayConfig, not {type(config).__name__}")
    upstream = cast(tuple[str, int], config.upstream)
    connect_timeout = check_timeout(config.connect_timeout, "connect_timeout", zero=True)
    policy = RelayPolicy(
        config,
        connect_timeout=math.inf if connect_timeout is None else connect_timeout,
        own=OwnConnections(),
    )
    server = MessageServer.from_config(partial(relay_connection, policy), config.listening)
    if may_be_the_same_listener(upstream, server.host, server.port):
        raise ValueError(
            f"upstream {format_address(upstream)} is the relay's own address "
            f"({server.host or 'every interface'}, port {server.port}): it would relay to "
            "itself; give the relay another port"
        )
    return server
