"""A relay's configuration: :class:`RelayConfig`, every setting of a
:func:`~trioecho.services.relay.relay_server` with its default, its check
and its meaning, in one frozen value; the settings of the relay's own
listener are its :class:`~trioecho.server.config.ServerConfig`.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable
from typing import Literal

from trioecho.arguments import check_rate, check_timeout, parse_address
from trioecho.framing.config import FramingConfig, framing_config
from trioecho.framing.starttls import StartTLS
from trioecho.io.keepalive import DEFAULT_KEEPALIVE, KeepAlive, keepalive_of
from trioecho.server.config import DEFAULT_MIN_SEND_RATE, ServerConfig

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_RELAY_FIN_TIMEOUT",
    "DEFAULT_RELAY_IDLE_TIMEOUT",
    "DEFAULT_RELAY_SEND_TIMEOUT",
    "RELAY_OWNED_SETTINGS",
    "Answer",
    "Direction",
    "FrameHook",
    "Refusal",
    "RelayConfig",
]

Direction = Literal["up", "down"]
FrameHook = Callable[[Direction, bytes], None]
Answer = Callable[[bytes], bytes | None]
# What to tell the client before the relay closes a pair: given the way of
# the side at fault ("up": the client's, "down": the upstream's) and the
# error (a refused frame's FramingError, an IdleTimeoutError, a
# SlowReaderError), bytes to send it, or None.
Refusal = Callable[[Direction, Exception], bytes | None]

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_RELAY_IDLE_TIMEOUT = 3600.0
DEFAULT_RELAY_SEND_TIMEOUT = 60.0
# Once one side has ended, how long the other may move no bytes before both
# close (HAProxy's timeout client-fin/server-fin): short, since a side that
# has said its last word ties up a slot, but bytes still moving restart it.
DEFAULT_RELAY_FIN_TIMEOUT = 30.0

# The listener settings the relay sets itself, from its own (see
# RelayConfig.listening): giving them in `listener` is refused.
RELAY_OWNED_SETTINGS = ("framing", "idle_timeout", "send_timeout", "min_send_rate", "keepalive")


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is a bool, else ``TypeError`` naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class RelayConfig:
    """Every setting of a :func:`~trioecho.services.relay.relay_server`.

    Checked where it is made, with the errors ``relay_server`` raises for
    the same keyword; ``upstream`` is stored as a ``(host, port)`` tuple,
    the framings as :class:`FramingConfig`, ``keepalive`` as a
    :class:`KeepAlive` (or None).  ``listener`` holds the relay's own
    listening settings (address, connection limit, TLS, PROXY, ...); the
    five the relay sets from its own (:data:`RELAY_OWNED_SETTINGS`) must be
    left at their defaults there.
    """

    upstream: tuple[str, int] | str
    """Where each client is relayed: ``(host, port)`` or ``"host:port"``."""
    client_framing: FramingConfig | str
    """How frames from clients are read (and checked)."""
    server_framing: FramingConfig | str
    """How frames from the upstream server are read (and checked)."""
    on_frame: FrameHook | None = None
    """Called with each frame's direction and bytes (see ``relay``)."""
    answer: Answer | None = None
    """Answers the client's first frames itself (see ``relay``)."""
    answer_factory: Callable[[], Answer] | None = None
    """Makes each connection its own ``answer`` (not with ``answer``)."""
    refusal: Refusal | None = None
    """What to tell the client before a pair is closed (see ``relay``)."""
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT
    """Seconds the upstream connection may take; 0 or None: no limit."""
    idle_timeout: float | None = DEFAULT_RELAY_IDLE_TIMEOUT
    """Seconds a pair may move no bytes either way; None: no limit."""
    send_timeout: float | None = DEFAULT_RELAY_SEND_TIMEOUT
    """The send rule's no-progress limit, for sends to either side."""
    min_send_rate: float | None = DEFAULT_MIN_SEND_RATE
    """The send rule's floor, bytes a second, for sends to either side."""
    fin_timeout: float | None = DEFAULT_RELAY_FIN_TIMEOUT
    """Seconds a pair may move no bytes once one side has ended."""
    half_close: bool = True
    """Pass one side's end on (False: the first end closes both)."""
    keepalive: KeepAlive | str | None = DEFAULT_KEEPALIVE
    """TCP keepalive on both sides' connections; None: off."""
    upstream_ssl_context: ssl.SSLContext | None = None
    """TLS towards the upstream with this client-side context
    (:func:`trioecho.io.tls.upstream_context` makes one for libpq's modes);
    None: plain TCP.  Frames are checked on the plain text either way."""
    upstream_server_name: str | None = None
    """The name the upstream's certificate must carry (``verify-full``), sent
    as SNI too; None: the upstream's host."""
    upstream_starttls: StartTLS | None = None
    """Ask the upstream for TLS this way first (PostgreSQL's SSLRequest,
    :data:`~trioecho.framing.presets.POSTGRESQL_STARTTLS`); None: TLS from
    the first byte."""
    listener: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    """The relay's own listening settings, but for :data:`RELAY_OWNED_SETTINGS`."""

    def __post_init__(self) -> None:
        # In this order, which decides the error when several are wrong.
        self._store("upstream", parse_address(self.upstream, "upstream"))
        self._store("client_framing", framing_config(self.client_framing, "client_framing"))
        self._store("server_framing", framing_config(self.server_framing, "server_framing"))
        check_timeout(self.connect_timeout, "connect_timeout", zero=True)
        if self.answer is not None and self.answer_factory is not None:
            raise ValueError("give answer or answer_factory, not both")
        check_timeout(self.idle_timeout, "idle_timeout")
        check_timeout(self.send_timeout, "send_timeout")
        check_rate(self.min_send_rate, "min_send_rate")
        check_timeout(self.fin_timeout, "fin_timeout")
        check_bool(self.half_close, "half_close")
        self._store("keepalive", keepalive_of(self.keepalive))
        context = self.upstream_ssl_context
        if context is not None and (
            not isinstance(context, ssl.SSLContext) or context.protocol != ssl.PROTOCOL_TLS_CLIENT
        ):
            raise TypeError(
                "upstream_ssl_context must be a client-side ssl.SSLContext "
                f"(trioecho.io.tls.upstream_context()), not {context!r}"
            )
        if self.upstream_starttls is not None and not isinstance(self.upstream_starttls, StartTLS):
            raise TypeError(
                f"upstream_starttls must be a StartTLS or None, not {self.upstream_starttls!r}"
            )
        if not isinstance(self.listener, ServerConfig):
            raise TypeError(f"listener must be a ServerConfig, not {type(self.listener).__name__}")
        defaults = ServerConfig()
        for name in RELAY_OWNED_SETTINGS:
            if getattr(self.listener, name) != getattr(defaults, name):
                raise ValueError(
                    f"listener.{name} is the relay's own setting: give it to the relay "
                    "(client_framing, idle_timeout, send_timeout, min_send_rate, keepalive)"
                )

    def _store(self, name: str, value: object) -> None:
        """Keep a field's checked form (the dataclass is frozen)."""
        object.__setattr__(self, name, value)

    @property
    def listening(self) -> ServerConfig:
        """The settings the relay's listener is served with: ``listener``,
        reading clients with ``client_framing``, with no idle timeout of its
        own (the pair's is the relay's: a client waiting for a long query is
        not idle), and the relay's send rule and keepalive."""
        return self.listener.replace(
            framing=self.client_framing,
            idle_timeout=None,
            send_timeout=self.send_timeout,
            min_send_rate=self.min_send_rate,
            keepalive=self.keepalive,
        )
