"""The command line's flags mapped onto the library's configurations, once:
:func:`server_config_from_args` for ``serve``, :func:`relay_config_from_args`
for ``relay`` (with its ``--preset``'s framings and timeouts:
:data:`PRESETS`, :func:`resolve_relay_timeouts`), :func:`client_tls` for
``client`` and ``bench``.  Every check of a value is the configuration's
own; what is checked here is only what the command line adds (presets, units).

What only the command line uses is typed too: :class:`ServeOptions` (the
handler, TLS files, metrics, logging) and a worker's :class:`WorkerContext`
(its index, its link to the supervisor, its sockets).  A supervisor hands
each worker a :class:`ServeSpec`: a :class:`ServerConfig` and the
:class:`ServeOptions`, pickled; no ``argparse.Namespace`` leaves ``main``.
"""

from __future__ import annotations

import argparse
import dataclasses
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

from trioecho.framing import presets
from trioecho.framing.config import FramingConfig
from trioecho.framing.starttls import StartTLS
from trioecho.io.tls import client_context, load_certificate, server_context, verify_clients
from trioecho.server.accept import ProxyProtocolConfig
from trioecho.server.config import DEFAULT_DRAIN_DELAY, ServerConfig
from trioecho.services.relay_config import (
    DEFAULT_RELAY_IDLE_TIMEOUT,
    DEFAULT_RELAY_SEND_TIMEOUT,
    RELAY_OWNED_SETTINGS,
    RelayConfig,
)

__all__ = [
    "PRESETS",
    "RELAY_PRESET_TIMEOUTS",
    "LogOptions",
    "ServeOptions",
    "ServeSpec",
    "WorkerContext",
    "client_tls",
    "flag_values",
    "relay_config_from_args",
    "resolve_relay_timeouts",
    "server_config_from_args",
]

# --preset NAME: (what clients send, what the server sends), given max_frame.
PRESETS: dict[str, tuple[Callable[..., FramingConfig], Callable[..., FramingConfig]]] = {
    "postgresql": (partial(presets.postgresql, "client"), partial(presets.postgresql, "server")),
    "mqtt": (presets.mqtt, presets.mqtt),
    "protobuf-delimited": (presets.protobuf_delimited, presets.protobuf_delimited),
}
# relay: the timeouts' defaults, and a --preset's own where its protocol's
# proxies differ.  PostgreSQL's follow pgbouncer's (client_idle_timeout = 0,
# no send timeout): no timeout cuts a live client (flow control bounds what
# a paused reader holds; dead peers are TCP keepalive's).
RELAY_TIMEOUTS: dict[str, float | None] = {
    "idle_timeout": DEFAULT_RELAY_IDLE_TIMEOUT,
    "send_timeout": DEFAULT_RELAY_SEND_TIMEOUT,
}
RELAY_PRESET_TIMEOUTS: dict[str, dict[str, float | None]] = {
    "postgresql": {"idle_timeout": None, "send_timeout": None},
}


def flag_values(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The flags ``names`` as keyword arguments: for the parameters named
    as the flags' destinations."""
    return {name: getattr(args, name) for name in names}


def same_named_flags(args: argparse.Namespace, config_type: type) -> dict[str, Any]:
    """Every flag whose destination is a field of the dataclass
    ``config_type``, as keyword arguments: an option whose flag is named as
    its field (``--connect-timeout``, ``connect_timeout``) needs no line
    here.  A flag that means something else than its field (another unit, a
    name to build from) is given explicitly after these, and wins."""
    return {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(config_type)
        if hasattr(args, field.name)
    }


@dataclasses.dataclass(frozen=True)
class LogOptions:
    """How a command logs (``configure_logging``): its flags."""

    command: str = "serve"
    log_level: str | None = None
    log_format: str = "text"
    log_config: str | None = None
    access_log: bool = False
    verbose: bool = False
    quiet: bool = False
    worker_index: int | None = None
    """A worker's index, named in each line (None: not a worker)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LogOptions:
        return cls(
            command=args.command,
            log_level=getattr(args, "log_level", None),
            log_format=getattr(args, "log_format", "text"),
            log_config=getattr(args, "log_config", None),
            access_log=getattr(args, "access_log", False),
            verbose=getattr(args, "verbose", False),
            quiet=getattr(args, "quiet", False),
        )


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """What ``serve`` and ``relay`` use beyond the server's configuration."""

    handler: str = "session"
    """``serve --handler``: which echo handler (ECHO_HANDLERS)."""
    tls_cert: str | None = None
    """Loaded at start (each worker loads its own) and again on SIGHUP."""
    tls_key: str | None = None
    tls_client_ca: str | None = None
    """``--tls-client-ca``, read again on SIGHUP with the certificate."""
    tls_verify_client: str = "none"
    tls_alpn: tuple[str, ...] = ()
    """The ALPN protocols the server offers (``relay --preset postgresql``:
    ``postgresql``, which direct TLS must name)."""
    metrics: tuple[str, int] | None = None
    """Where ``/metrics`` is served (the supervisor's, with workers)."""
    log: LogOptions = LogOptions()
    inherited_listeners: bool = False
    """The listening sockets outlive this service (systemd's socket
    activation, ``--fd``): a drain leaves them as they are (see
    :meth:`MessageServer.serve_listeners`)."""

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, *, inherited_listeners: bool = False
    ) -> ServeOptions:
        return cls(
            handler=getattr(args, "handler", "session"),
            tls_cert=getattr(args, "tls_cert", None),
            tls_key=getattr(args, "tls_key", None),
            tls_client_ca=getattr(args, "tls_client_ca", None),
            tls_verify_client=getattr(args, "tls_verify_client", "none"),
            tls_alpn=tls_alpn_of(args),
            metrics=args.metrics,
            log=LogOptions.from_args(args),
            inherited_listeners=inherited_listeners,
        )


@dataclasses.dataclass(frozen=True)
class WorkerContext:
    """One worker's own: its index, its end of the supervisor's socket pair,
    its port, and the listening sockets it inherited (none: it opens its
    own with ``SO_REUSEPORT``)."""

    index: int
    supervisor_fd: int
    port: int
    listen_fds: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class ServeSpec:
    """What one worker of ``serve --workers N`` serves, checked once by the
    supervisor's command line and sent to each worker (pickled, over its
    private socket pair).  The TLS context is not in it: each worker loads
    it from ``options.tls_cert``."""

    config: ServerConfig
    options: ServeOptions


def _listener_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The listening settings ``serve`` and ``relay`` share: the flags named
    as :class:`ServerConfig`'s fields, and those named otherwise."""
    return {
        **same_named_flags(args, ServerConfig),
        "framing": None,  # the command's own, built from the framing flags
        "unix_path": args.uds,
        "unix_mode": args.uds_mode,
        "memory_budget": args.memory_budget << 20,  # given in MiB
        "drain_delay": drain_delay_of(args),
    }


def drain_delay_of(args: argparse.Namespace) -> float:
    """``--drain-delay``, or its default: ``DEFAULT_DRAIN_DELAY`` with
    ``--metrics`` (a health check can see ``/readyz``), else 0 (nothing
    can see that the server is draining, so waiting would serve nothing)."""
    if args.drain_delay is not None:
        return float(args.drain_delay)
    return DEFAULT_DRAIN_DELAY if args.metrics is not None else 0.0


def server_config_from_args(
    args: argparse.Namespace,
    framing: FramingConfig,
    proxy: ProxyProtocolConfig | None,
    ssl_context: ssl.SSLContext | None,
    *,
    reuse_port: bool = False,
) -> ServerConfig:
    """``serve``'s :class:`ServerConfig`: its flags, the ``framing`` and
    ``proxy`` built from them, the loaded TLS context, and ``reuse_port``
    (a worker's own listening socket)."""
    return ServerConfig(
        **{
            **_listener_settings(args),
            "framing": framing,
            "proxy_protocol": proxy,
            "ssl_context": ssl_context,
            "handshake_timeout": args.tls_handshake_timeout,
            "reuse_port": reuse_port,
        }
    )


def relay_config_from_args(
    args: argparse.Namespace,
    framing: FramingConfig,
    server_tls: ssl.SSLContext | None = None,
    upstream_tls: ssl.SSLContext | None = None,
) -> RelayConfig:
    """``relay``'s :class:`RelayConfig`: its flags, with the timeouts not
    given filled in (:func:`resolve_relay_timeouts`), a ``--preset``'s
    framings and PostgreSQL behaviour, and the loaded TLS contexts towards
    clients (``server_tls``) and the upstream (``upstream_tls``), with the
    protocol's StartTLS on each side that has TLS."""
    resolve_relay_timeouts(args)
    if args.preset is not None:
        client_preset, server_preset = PRESETS[args.preset]
        # Without --max-frame, each preset's own default: its protocol's limit.
        limit = {"max_frame": args.max_frame} if args.max_frame is not None else {}
        client_framing = client_preset(**limit)
        server_framing = server_preset(**limit)
    else:
        client_framing = server_framing = framing
    postgresql = args.preset == "postgresql"
    return RelayConfig(
        **{
            **same_named_flags(args, RelayConfig),
            "client_framing": client_framing,
            "server_framing": server_framing,
            "answer_factory": presets.PostgresNegotiation if postgresql else None,
            "refusal": presets.postgres_refusal if postgresql else None,
            "half_close": not postgresql,  # a PostgreSQL session has no half-close
            "listener": _relay_listener(args, server_tls),
            "upstream_ssl_context": upstream_tls,
            "upstream_server_name": args.upstream_tls_server_name,
            "upstream_starttls": _starttls_of(args) if upstream_tls is not None else None,
        }
    )


def _relay_listener(args: argparse.Namespace, server_tls: ssl.SSLContext | None) -> ServerConfig:
    """The relay's own listener: the listening settings alone (what it
    forwards is the relay's to set: :data:`RELAY_OWNED_SETTINGS`), and TLS."""
    settings = _listener_settings(args)
    return ServerConfig(
        **{name: value for name, value in settings.items() if name not in RELAY_OWNED_SETTINGS},
        ssl_context=server_tls,
        handshake_timeout=args.tls_handshake_timeout,
        starttls=_starttls_of(args) if server_tls is not None else None,
    )


def resolve_relay_timeouts(args: argparse.Namespace) -> None:
    """Fill in ``relay``'s timeouts not given on the command line: its
    ``--preset``'s (:data:`RELAY_PRESET_TIMEOUTS`), else the relay's own."""
    own = RELAY_PRESET_TIMEOUTS.get(args.preset, {}) if args.preset is not None else {}
    for name, default in RELAY_TIMEOUTS.items():
        if not hasattr(args, name):
            setattr(args, name, own.get(name, default))


def client_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context ``--tls``/``--tls-ca``/``--tls-cert`` ask for (client
    and bench), or None; a file that cannot be used is a usage error."""
    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key needs --tls-cert")
    if not (args.tls or args.tls_ca or args.tls_cert):
        return None
    try:
        context = client_context(args.tls_ca)
    except OSError as exc:  # ssl.SSLError included
        parser.error(f"cannot load --tls-ca {args.tls_ca}: {exc}")
    if not args.tls_cert:
        return context
    try:
        load_certificate(context, args.tls_cert, args.tls_key)
        return context
    except ValueError as exc:  # what the files hold
        parser.error(f"--tls-cert: {exc}")
    except OSError as exc:
        files = args.tls_cert + (f" or {args.tls_key}" if args.tls_key else "")
        parser.error(f"--tls-cert: cannot read {files}: {exc.strerror or exc}")


def server_tls(options: ServeOptions) -> ssl.SSLContext | None:
    """The server's TLS context from ``options`` (``--tls-cert``,
    ``--tls-key``, ``--tls-client-ca``, ``--tls-verify-client``), or None
    without a certificate; at start, on SIGHUP and in each worker.  Raises
    ``OSError`` or ``ValueError`` (:func:`trioecho.io.tls.server_context`)."""
    if options.tls_cert is None:
        return None
    context = server_context(options.tls_cert, options.tls_key)
    verify_clients(context, options.tls_client_ca, options.tls_verify_client)
    if options.tls_alpn:
        context.set_alpn_protocols(list(options.tls_alpn))
    return context


def tls_alpn_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The ALPN protocols a command's TLS offers: the StartTLS protocol's
    (``relay --preset postgresql``), else none."""
    starttls = _starttls_of(args)
    return (starttls.alpn,) if starttls is not None and starttls.alpn else ()


def _starttls_of(args: argparse.Namespace) -> StartTLS | None:
    """How the command's protocol asks for TLS in clear, if it does."""
    return presets.POSTGRESQL_STARTTLS if getattr(args, "preset", None) == "postgresql" else None
