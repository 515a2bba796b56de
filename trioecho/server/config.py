"""A server's configuration: :class:`ServerConfig`, every setting of a
:class:`~trioecho.server.server.MessageServer` with its default, its check
and its meaning, in one frozen value.

``MessageServer(handler, **settings)`` builds one from its keywords;
``MessageServer(handler, config)`` takes one made elsewhere (the command
line maps its flags onto it once).  A configuration without
an ``ssl_context`` pickles, so a supervisor can hand it to its workers.
"""

from __future__ import annotations

import dataclasses
import ssl

from trioecho.arguments import (
    check_count,
    check_listen_host,
    check_port,
    check_rate,
    check_timeout,
)
from trioecho.framing.config import FramingConfig, framing_config
from trioecho.framing.starttls import StartTLS
from trioecho.io.budget import MemoryBudget, memory_budget_of
from trioecho.io.keepalive import DEFAULT_KEEPALIVE, KeepAlive, keepalive_of
from trioecho.io.readiness import Readiness, resolve_readiness
from trioecho.io.tls import check_server_context
from trioecho.server.accept import DEFAULT_HANDSHAKE_TIMEOUT, ProxyProtocolConfig
from trioecho.server.listeners import DEFAULT_UNIX_MODE

__all__ = [
    "DEFAULT_DRAIN_DELAY",
    "DEFAULT_GRACE",
    "DEFAULT_HOST",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MIN_SEND_RATE",
    "DEFAULT_PORT",
    "DEFAULT_SEND_TIMEOUT",
    "ServerConfig",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9999
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_IDLE_TIMEOUT = 300.0  # seconds without a complete message
DEFAULT_SEND_TIMEOUT = 30.0  # seconds a send may wait with no progress on a peer not reading
# Bytes a second a waiting send must average past send_timeout: stops a
# trickling reader, never a real slow link (a 9.6 kbit/s modem is 1,200).
DEFAULT_MIN_SEND_RATE = 1024.0
DEFAULT_GRACE = 5.0  # seconds handlers get to finish on shutdown
# The command line's --drain-delay with --metrics (where /readyz can be seen):
# longer than HAProxy's default health check takes to mark a server down
# (fall 3 x inter 2 s), with a second to spare.
DEFAULT_DRAIN_DELAY = 7.0


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Every setting of a :class:`~trioecho.server.server.MessageServer`.

    Each field is checked where the configuration is made, with the same
    errors ``MessageServer`` raises for the same keyword: ``TypeError`` for
    a value of the wrong type, ``ValueError`` for one out of range.  Values
    given in a convenient form are stored in their checked one: a framing
    name as its :class:`FramingConfig`, a keepalive string as its
    :class:`KeepAlive`, the host ``""`` as None.  ``memory_budget`` and
    ``readiness`` keep None until a server is built from the configuration:
    each server then gets a budget of its own (a :class:`MemoryBudget` given
    here is shared by every server built from this configuration) and reads
    ``$TRIOECHO_READINESS``.
    """

    host: str | None = DEFAULT_HOST
    """Where to listen: an address or a name; None (or ``""``) for every interface."""
    port: int = DEFAULT_PORT
    """The TCP port; 0 for a free one (the server's ``port`` says which once
    it listens)."""
    framing: FramingConfig | str | None = None
    """How messages are cut: a :class:`FramingConfig`, or a framing name
    (stored as its configuration); None for lines."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Connections at once; at the limit the server stops accepting until
    a connection closes."""
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    """Seconds a connection may go without a complete message before it is
    closed; None: no limit."""
    send_timeout: float | None = DEFAULT_SEND_TIMEOUT
    """Seconds a send may wait with no progress on a peer that does not read.

    With ``min_send_rate``, the send rule (:mod:`~trioecho.io.send_deadline`):
    a send waiting for its peer to read is cut, and the connection closed
    (:class:`~trioecho.errors.SlowReaderError`, counted as ``slow_reader``),
    when the peer has taken none of it for ``send_timeout`` seconds (the
    deadline restarts each time it takes more: a slow but steady reader is
    never cut), or when, past ``send_timeout`` seconds, it has averaged less
    than ``min_send_rate`` bytes a second since the send blocked (a
    trickling reader cannot hold its slot for ever).  The lossless close at
    the end of a connection follows the same rule.  None: no limit, and no
    floor either."""
    min_send_rate: float | None = DEFAULT_MIN_SEND_RATE
    """Bytes a second a waiting send must average once past ``send_timeout``
    (see there); None: no floor."""
    keepalive: KeepAlive | str | None = DEFAULT_KEEPALIVE
    """TCP keepalive for accepted connections (set on the listening sockets,
    which they inherit): a :class:`KeepAlive`, its text
    ``"IDLE[:INTERVAL[:COUNT]]"``, or None (or ``"off"``) for none.  The
    default, 60:10:6, frees a dead idle peer within 2 minutes of its last
    packet.  ``TCP_USER_TIMEOUT`` comes with it: the keepalive bound, or
    ``send_timeout`` without keepalive (:mod:`trioecho.io.keepalive`)."""
    grace: float = DEFAULT_GRACE
    """Seconds connections get to finish on shutdown; on a drain (or a
    retirement), seconds the open connections are served on as usual,
    idle ones included, before they are shut down."""
    drain_delay: float = 0.0
    """Seconds a drain (:meth:`~trioecho.server.server.MessageServer.drain`,
    ``trioecho serve`` on SIGTERM) goes on accepting after the server stops
    reporting ready (``/readyz`` answers 503), so that a load balancer's
    health check takes it out before it stops accepting.  0: stop
    accepting at once."""
    backlog: int | None = None
    """The listening sockets' accept queue; None: Trio's default, the
    system's maximum."""
    reuse_port: bool = False
    """``SO_REUSEPORT`` on the listening sockets, so that several processes
    can listen on one port (TCP only, not ``unix_path``)."""
    proxy_protocol: ProxyProtocolConfig | None = None
    """Read a PROXY protocol header before the connection is served."""
    ssl_context: ssl.SSLContext | None = None
    """Serve TLS with this server-side context (a configuration with one
    does not pickle)."""
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT
    """Seconds a TLS handshake (or a PROXY header) may take."""
    starttls: StartTLS | None = None
    """With ``ssl_context``: the protocol's request for TLS in clear
    (:data:`~trioecho.framing.presets.POSTGRESQL_STARTTLS`) is answered and
    TLS starts then, or at once on a ClientHello (direct TLS, which must
    name the protocol's ALPN); a client that asks for neither is served in
    clear, as PostgreSQL serves it.  None: TLS from the first byte."""
    memory_budget: MemoryBudget | int | None = None
    """Bytes that unfinished messages and unsent replies may hold over all
    connections at once: a byte count, a :class:`MemoryBudget` shared with
    other servers, or None for the default."""
    readiness: Readiness | None = None
    """How plain TCP connections wait: ``"hub"``, ``"trio"``, or None for
    ``$TRIOECHO_READINESS`` (default ``"hub"``) when a server is built."""
    unix_path: str | None = None
    """Listen on a unix socket at this path instead of ``host:port``, its
    file created with ``unix_mode`` and removed at stop; a stale socket file
    is replaced, one a live server uses refused.  A unix peer's
    ``client_address`` (and log name) is ``"unix:PATH"``; PROXY headers are
    taken from every unix peer (the file's mode decides who may connect)."""
    unix_mode: int = DEFAULT_UNIX_MODE
    """The unix socket file's mode (default 0o660: owner and group may connect)."""

    def __post_init__(self) -> None:
        # Checked in this order, which decides the error when several
        # settings are wrong at once (tests pin it).
        unix_path = self.unix_path
        if unix_path is not None:
            if not isinstance(unix_path, str) or not unix_path:
                raise TypeError(f"unix_path must be a non-empty str, not {unix_path!r}")
            if self.reuse_port:
                raise ValueError("reuse_port is for TCP ports, not unix_path")
        unix_mode = self.unix_mode
        if not isinstance(unix_mode, int) or not 0 <= unix_mode <= 0o777:
            raise ValueError(f"unix_mode must be a file mode from 0 to 0o777, not {unix_mode!r}")
        self._store("host", check_listen_host(self.host))
        check_port(self.port)
        self._store("framing", framing_config(self.framing))
        check_count(self.max_connections, "max_connections", 1)
        check_timeout(self.idle_timeout, "idle_timeout")
        check_timeout(self.send_timeout, "send_timeout")
        check_rate(self.min_send_rate, "min_send_rate")
        self._store("keepalive", keepalive_of(self.keepalive))
        check_timeout(self.handshake_timeout, "handshake_timeout")
        self._store("grace", _seconds(self.grace, "grace"))
        self._store("drain_delay", _seconds(self.drain_delay, "drain_delay"))
        if self.backlog is not None:
            check_count(self.backlog, "backlog", 1)
        proxy_protocol = self.proxy_protocol
        if proxy_protocol is not None and not isinstance(proxy_protocol, ProxyProtocolConfig):
            raise TypeError(
                f"proxy_protocol must be a ProxyProtocolConfig or None, not {proxy_protocol!r}"
            )
        check_server_context(self.ssl_context)
        starttls = self.starttls
        if starttls is not None:
            if not isinstance(starttls, StartTLS):
                raise TypeError(f"starttls must be a StartTLS or None, not {starttls!r}")
            if self.ssl_context is None:
                raise ValueError("starttls needs an ssl_context: the TLS it starts")
        if self.memory_budget is not None:
            memory_budget_of(self.memory_budget)  # checked; each server builds its own
        if self.readiness is not None:
            resolve_readiness(self.readiness)

    def _store(self, name: str, value: object) -> None:
        """Keep a field's checked form (the dataclass is frozen)."""
        object.__setattr__(self, name, value)

    @property
    def framing_config(self) -> FramingConfig:
        """:attr:`framing`, as the :class:`FramingConfig` it is stored as."""
        framing = self.framing
        assert isinstance(framing, FramingConfig)
        return framing

    def replace(self, **changes: object) -> ServerConfig:
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _seconds(value: object, name: str) -> float:
    """``value`` as a float of seconds, at least 0 (``ValueError`` naming ``name``)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{name} must be a number of seconds, at least 0, not {value!r}")
    return float(value)
