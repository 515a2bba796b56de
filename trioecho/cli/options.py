"""The command line's parser: the options of each command, declared.

This module is the parser's declarative tables (``add_argument`` calls and
the groups commands share); what the options' text means is
:mod:`~trioecho.cli.option_types`, and what they build is
:mod:`~trioecho.cli.framing_args` (the framing) and
:mod:`~trioecho.cli.configs` (the servers' configurations, the relay's
presets, a client's TLS context).
"""

from __future__ import annotations

import argparse
from typing import Any

from trioecho._version import __version__
from trioecho.cli.configs import PRESETS, RELAY_PRESET_TIMEOUTS, client_tls, resolve_relay_timeouts
from trioecho.cli.framing_args import (
    DEFAULT_FRAMING,
    framing_default,
    framing_from_args,
    resolve_framing_options,
)
from trioecho.cli.option_types import (
    delimiter,
    file_mode,
    host_port,
    keepalive,
    length_adjustment,
    length_bytes,
    length_offset,
    metrics_address,
    port,
    positive_int,
    positive_seconds,
    rate_or_off,
    seconds,
    seconds_or_off,
    varint_bytes,
    worker_count,
)
from trioecho.framing.base import DEFAULT_MAX_FRAME, DEFAULT_MAX_LINE, FRAMINGS
from trioecho.framing.contract import LENGTH_BYTES
from trioecho.framing.implementation import IMPLEMENTATION
from trioecho.io.budget import DEFAULT_MEMORY_BUDGET
from trioecho.io.keepalive import DEFAULT_KEEPALIVE
from trioecho.io.readiness import READINESS_MODES
from trioecho.io.tls import UPSTREAM_TLS_MODES, VERIFY_CLIENT
from trioecho.server.accept import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_PROXY_ALLOW_FROM,
    DEFAULT_PROXY_TIMEOUT,
    PROXY_MODES,
)
from trioecho.server.config import (
    DEFAULT_DRAIN_DELAY,
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MIN_SEND_RATE,
    DEFAULT_PORT,
    DEFAULT_SEND_TIMEOUT,
)
from trioecho.server.listeners import DEFAULT_UNIX_MODE
from trioecho.services.echo import (
    BaseEchoHandler,
    EchoHandler,
    GenericEchoHandler,
    RespondEchoHandler,
)
from trioecho.services.relay_config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RELAY_FIN_TIMEOUT,
    DEFAULT_RELAY_IDLE_TIMEOUT,
    DEFAULT_RELAY_SEND_TIMEOUT,
)
from trioecho.workers.supervisor import DEFAULT_WORKER_TIMEOUT

# build_parser is this module's own; the others are imported from here too
# (they lived here before the option types and what the options build
# moved out).
__all__ = [
    "ECHO_HANDLERS",
    "PRESETS",
    "RELAY_PRESET_TIMEOUTS",
    "build_parser",
    "client_tls",
    "framing_from_args",
    "resolve_framing_options",
    "resolve_relay_timeouts",
]

# serve --handler: the echo service's three handlers, the same bytes on the wire.
ECHO_HANDLERS: dict[str, type[BaseEchoHandler]] = {
    "session": EchoHandler,
    "respond": RespondEchoHandler,
    "handle": GenericEchoHandler,
}


def _add_keepalive(limits: argparse._ArgumentGroup, where: str) -> None:
    """``--keepalive``, for the connections ``where`` names."""
    limits.add_argument(
        "--keepalive",
        type=keepalive,
        default=DEFAULT_KEEPALIVE,
        metavar="IDLE[:INTERVAL[:COUNT]]",
        help=f"TCP keepalive {where}: after IDLE seconds with nothing from a peer, probe it "
        "every INTERVAL seconds and close it after COUNT unanswered probes, so a peer that "
        "vanished (no FIN, no reset: a dead host, a cut link) frees its slot within "
        "IDLE+INTERVAL*COUNT seconds, even with --idle-timeout 0; a live peer answers and "
        "is never cut.  TCP_USER_TIMEOUT is set to that bound (to --send-timeout with "
        "--keepalive off; 0 with --send-timeout 0), so bytes in flight to a dead peer end it "
        "too; off: no keepalive (default: %(default)s: a dead peer is found within 2 "
        "minutes, a live idle one costs one probe a minute)",
    )


# The load generator (bench) speaks the first release's framings.
BENCH_FRAMINGS = ("line", "len", "raw")


def _add_address_options(
    parser: argparse.ArgumentParser, title: str, what: str, *, listening: bool = False
) -> argparse._ArgumentGroup:
    """--host and --port: where a server listens (and its --uds, --backlog
    and --fd), or the server a client dials; returns the group ``title``."""
    group = parser.add_argument_group(title)
    group.add_argument("--host", default=DEFAULT_HOST, help=f"{what} (default: %(default)s)")
    group.add_argument(
        "--port",
        type=port,
        default=DEFAULT_PORT,
        help="TCP port (default: %(default)s)",
    )
    if listening:
        group.add_argument(
            "--uds",
            metavar="PATH",
            help="listen on this unix socket instead of --host/--port (a stale socket file "
            "is replaced, one in use refused; removed at stop)",
        )
        group.add_argument(
            "--uds-mode",
            type=file_mode,
            default=DEFAULT_UNIX_MODE,
            metavar="OCTAL",
            help=f"--uds: the socket file's mode (default: {DEFAULT_UNIX_MODE:o})",
        )
        group.add_argument(
            "--backlog",
            type=positive_int,
            default=None,
            metavar="N",
            help="connections the kernel may queue before they are accepted "
            "(default: the system's limit, net.core.somaxconn)",
        )
        group.add_argument(
            "--fd",
            action="append",
            metavar="N|NAME",
            help="serve on an inherited listening socket instead of --host/--port: file "
            "descriptor N, or the systemd socket named NAME (FileDescriptorName=); may be "
            "repeated.  Sockets systemd passes (LISTEN_FDS) are adopted without it",
        )
    return group


def _add_framing_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "framing",
        "how messages are cut from the byte stream (each option applies to the "
        "framings it names; given with another, it is refused)",
    )
    group.add_argument(
        "--framing",
        choices=FRAMINGS,
        default=None,
        help="line: delimited lines (newline by default); len: a length field; varint: a "
        "LEB128 varint length; fixed: --frame-size bytes each (library and relay use: the "
        "echo service cannot answer it); raw: the seed's unframed format "
        f"(default: {DEFAULT_FRAMING})",
    )
    group.add_argument(
        "--length-bytes",
        type=length_bytes,
        metavar="{" + ",".join(map(str, LENGTH_BYTES)) + "}",
        help=f"len: the length field's size in bytes (default: {framing_default('length_bytes')})",
    )
    group.add_argument(
        "--byteorder",
        choices=("big", "little"),
        help="len: the length field's byte order "
        f"(default: {framing_default('byteorder')}, network order)",
    )
    group.add_argument(
        "--length-offset",
        type=length_offset,
        metavar="N",
        help="len, varint: N bytes (a type byte, say) before the length field "
        f"(default: {framing_default('length_offset')})",
    )
    group.add_argument(
        "--length-adjustment",
        type=length_adjustment,
        metavar="N",
        help="len: added to the length field's value to get the body's size "
        f"(-4 when the field counts itself; default: {framing_default('length_adjustment')})",
    )
    group.add_argument(
        "--include-header",
        action="store_true",
        default=None,
        help="len, varint: messages keep the bytes before the body (offset bytes and length "
        "field); the echo service then answers each message with its header, length rewritten",
    )
    group.add_argument(
        "--varint-bytes",
        type=varint_bytes,
        metavar="N",
        help="varint: most bytes a length may take "
        f"(1-10; MQTT: 4; default: {framing_default('varint_bytes')})",
    )
    group.add_argument(
        "--frame-size",
        type=positive_int,
        metavar="N",
        help="fixed: bytes per message (required)",
    )
    group.add_argument(
        "--delimiter",
        action="append",
        type=delimiter,
        metavar="BYTES",
        help="line: the delimiter, with escapes (\\n, \\r\\n, \\0, \\x1e); repeat it for "
        "several: a line ends at the first to occur, replies end with the first given "
        "(default: \\n)",
    )
    group.add_argument(
        "--max-frame",
        type=positive_int,
        metavar="BYTES",
        help=f"line, len, varint: largest message in bytes (default: {DEFAULT_MAX_LINE} for "
        f"line, {DEFAULT_MAX_FRAME} for len and varint; relay --preset: the protocol's own "
        "limit, which costs no memory: the relay streams a message through)",
    )
    cr = group.add_mutually_exclusive_group()
    cr.add_argument(
        "--strip-cr",
        dest="strip_cr",
        action="store_const",
        const=True,
        help="line: strip one \\r just before the delimiter that ends a line, whichever "
        "delimiter it is (telnet and Windows end lines with \\r\\n; the default)",
    )
    cr.add_argument(
        "--keep-cr",
        dest="strip_cr",
        action="store_const",
        const=False,
        help="line: keep a \\r before the delimiter as part of the message",
    )
    group.add_argument(
        "--on-too-long",
        choices=("error", "discard"),
        help="line: a line over --max-frame closes the connection (error), or is dropped "
        f"and the connection goes on (discard); default: {framing_default('on_too_long')}",
    )


def _add_tls_client_options(parser: argparse.ArgumentParser) -> None:
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls", action="store_true", help="connect with TLS")
    tls.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="trust the CA certificates in this PEM file instead of the system's (implies --tls)",
    )
    tls.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name the server's certificate must carry (default: --host)",
    )
    tls.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="present this PEM client certificate to a server that asks for one (implies --tls)",
    )
    tls.add_argument(
        "--tls-key", metavar="FILE", help="its private key (default: in --tls-cert's file)"
    )


def _add_server_tls_options(parser: argparse.ArgumentParser) -> None:
    """The certificate a server serves TLS with, and its handshake's limit."""
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this PEM certificate chain")
    tls.add_argument(
        "--tls-key", metavar="FILE", help="its private key (default: in --tls-cert's file)"
    )
    tls.add_argument(
        "--tls-verify-client",
        choices=tuple(VERIFY_CLIENT),
        default="none",
        help="ask clients for a certificate that chains to --tls-client-ca: none, optional "
        "(a client without one is served), required (default: %(default)s)",
    )
    tls.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="the PEM CA certificates client certificates must chain to",
    )
    tls.add_argument(
        "--tls-handshake-timeout",
        type=positive_seconds,
        default=DEFAULT_HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection whose handshake takes longer (default: %(default)s)",
    )


def _add_proxy_protocol_options(parser: argparse.ArgumentParser) -> None:
    """Whether a server expects a PROXY protocol header, from whom, how long."""
    proxy = parser.add_argument_group("PROXY protocol (behind HAProxy and other load balancers)")
    proxy.add_argument(
        "--proxy-protocol",
        choices=tuple(PROXY_MODES),
        default="off",
        help="expect a PROXY protocol header of this version on every connection "
        "(auto: v1 or v2); the handler's client_address is then the real client "
        "(default: %(default)s)",
    )
    proxy.add_argument(
        "--proxy-allow-from",
        metavar="CIDR[,CIDR...]",
        help="the proxies allowed to send headers; others are refused "
        f"(default: {','.join(DEFAULT_PROXY_ALLOW_FROM)})",
    )
    proxy.add_argument(
        "--proxy-timeout",
        type=positive_seconds,
        default=DEFAULT_PROXY_TIMEOUT,
        metavar="SECONDS",
        help="close a connection whose header is not complete in time (default: %(default)s)",
    )


def _add_server_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """What every server command takes: where it listens, its framing, its
    connection limit and shutdown grace; returns the limits group, for the
    command's own limits."""
    _add_address_options(parser, "listening", "the address to listen on", listening=True)
    _add_framing_options(parser)
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-connections",
        type=positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="at the limit, stop accepting until one closes (default: %(default)s)",
    )
    limits.add_argument(
        "--grace",
        type=seconds,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, seconds the open connections are served on, idle ones "
        "included, before they are closed (default: %(default)s)",
    )
    limits.add_argument(
        "--drain-delay",
        type=seconds,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, seconds /readyz answers 503 while accepting goes on, so "
        "that a load balancer's health check takes the server out first "
        f"(default: {DEFAULT_DRAIN_DELAY:g} with --metrics, else 0)",
    )
    return limits


LOG_LEVELS = ("debug", "info", "warning", "error")


def _add_metrics_and_logging(parser: argparse.ArgumentParser) -> None:
    """What every server command reports: its metrics endpoint, its logs."""
    group = parser.add_argument_group("metrics")
    group.add_argument(
        "--metrics",
        type=metrics_address,
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, with /healthz and "
        "/readyz (HOST defaults to 127.0.0.1: another address must be named)",
    )
    logging_group = parser.add_argument_group("logging")
    group = logging_group.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="log every connection")
    group.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    logging_group.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=None,
        help="the lowest level logged, over -q (default: info for serve, warning otherwise); "
        "connections are logged with -v",
    )
    logging_group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per record with every field (default: %(default)s)",
    )
    logging_group.add_argument(
        "--log-config",
        metavar="FILE",
        help="configure logging from FILE instead (logging.config.dictConfig, as .json or "
        ".toml); not with --log-level, --log-format, -q or -v",
    )
    logging_group.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="one INFO record per closed connection on the trioecho.access logger, whatever "
        "--log-level says, with its fields as attributes (peer, client, tls, duration, "
        "messages and bytes each way, close_reason) (default: off)",
    )


def _add_command(
    commands: Any, name: str, summary: str, description: str
) -> argparse.ArgumentParser:
    """The parser of the command ``name``; it records itself in the parsed
    arguments (``command_parser``), so that the command reports its own
    mistakes ("trioecho serve: error: ...")."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=description
    )
    parser.set_defaults(command_parser=parser)
    return parser


def _add_serve(commands: Any) -> None:
    serve = _add_command(
        commands,
        "serve",
        "run the echo service (the default)",
        "The seed's echo service: greets each client, answers every message "
        "with the message and 好, ends a session on q.",
    )
    limits = _add_server_options(serve)
    limits.add_argument(
        "--idle-timeout",
        type=seconds_or_off,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection with no complete message for this long; "
        "0: never (default: %(default)s)",
    )
    limits.add_argument(
        "--send-timeout",
        type=seconds_or_off,
        default=DEFAULT_SEND_TIMEOUT,
        metavar="SECONDS",
        help="close a peer that takes none of its replies for this long while a send waits "
        "(the deadline restarts whenever it takes more: a slow but steady reader is not "
        "cut); also the lossless close's; 0: never, and no --min-send-rate either "
        "(default: %(default)s)",
    )
    _add_min_send_rate(limits)
    _add_keepalive(limits, "on accepted connections")
    _add_memory_budget(
        limits,
        "MiB that unfinished messages and unsent replies may hold over all connections; "
        "past it, the largest stop being read",
    )
    service = serve.add_argument_group("service")
    service.add_argument(
        "--handler",
        choices=tuple(ECHO_HANDLERS),
        default="session",
        help="how the echo is answered (same bytes on the wire): session (the C echo "
        "session, served inline), respond (a Python respond() per message, inline) or "
        "handle (an async handle() loop in each connection's task); default: %(default)s",
    )
    service.add_argument(
        "--generic",
        dest="handler",
        action="store_const",
        const="handle",
        help="the same as --handler handle",
    )
    service.add_argument(
        "--readiness",
        choices=READINESS_MODES,
        default=None,
        help="how plain TCP connections wait for their socket: hub (one shared edge-triggered "
        "epoll set) or trio (Trio's own waits, one re-arm per wait); default: "
        "$TRIOECHO_READINESS, else hub",
    )
    workers = serve.add_argument_group("workers")
    workers.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        metavar="N|auto",
        help="run N server processes sharing one listening socket, restarted if they die, "
        "replaced one at a time on SIGHUP; auto: one per CPU (default: %(default)s)",
    )
    workers.add_argument(
        "--reuse-port",
        action="store_true",
        help="with --workers: each worker opens its own SO_REUSEPORT socket on the port "
        "instead (the kernel spreads connections evenly, but a worker that dies, is killed "
        "or reloaded resets the connections queued on its socket)",
    )
    workers.add_argument(
        "--worker-timeout",
        type=positive_seconds,
        default=DEFAULT_WORKER_TIMEOUT,
        metavar="SECONDS",
        help="with --workers: kill and restart a worker whose event loop has not "
        "turned for this long (default: %(default)s)",
    )
    _add_server_tls_options(serve)
    _add_proxy_protocol_options(serve)
    _add_metrics_and_logging(serve)


def _add_client(commands: Any) -> None:
    client = _add_command(
        commands,
        "client",
        "send stdin lines, print the replies",
        "An interactive client: each line of stdin is one message, each reply "
        "is printed.  It checks the server's greeting and names the framing the server "
        "seems to speak if it is not this one.",
    )
    _add_address_options(client, "server", "the server's host name or address")
    _add_framing_options(client)
    _add_tls_client_options(client)


def _add_min_send_rate(limits: argparse._ArgumentGroup) -> None:
    limits.add_argument(
        "--min-send-rate",
        type=rate_or_off,
        default=DEFAULT_MIN_SEND_RATE,
        metavar="BYTES",
        help="the floor under --send-timeout: close a peer that, once a send has waited "
        "--send-timeout seconds, has read under this many bytes a second on average since "
        "it began to wait (a trickling reader cannot hold its slot for ever; each byte it "
        "takes buys 1/BYTES seconds more); 0: no floor (default: %(default)g)",
    )


def _add_memory_budget(limits: argparse._ArgumentGroup, help_text: str) -> None:
    limits.add_argument(
        "--memory-budget",
        type=positive_int,
        default=DEFAULT_MEMORY_BUDGET >> 20,
        metavar="MIB",
        help=help_text + " (default: %(default)s)",
    )


def _add_relay(commands: Any) -> None:
    relay = _add_command(
        commands,
        "relay",
        "pass every frame between clients and an upstream server, checked against the framing",
        "A frame relay: each client gets its own connection to the upstream "
        "server, and every frame each way is checked against the framing (and --max-frame) "
        "before it is passed on.",
    )
    relay.add_argument(
        "--upstream",
        type=host_port,
        required=True,
        metavar="HOST:PORT",
        help="the server to relay to (not the relay's own --host/--port)",
    )
    relay.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        help="a real protocol's framing (PostgreSQL: a client's request for TLS is "
        "answered by the relay, which must see the messages: S with --tls-cert, TLS "
        "ending at the relay (direct TLS too), else N; a side's end closes both "
        "connections at once, as pgbouncer does: the protocol has no half-close; no idle "
        "or send timeout unless given); otherwise the framing options, the same both ways",
    )
    limits = _add_server_options(relay)
    _add_relay_timeout(
        limits,
        "--idle-timeout",
        "close a client and its upstream connection when no bytes have moved either "
        f"way for this long; 0: never (default: {DEFAULT_RELAY_IDLE_TIMEOUT:g}, an hour: a "
        "database session may sit idle, a client waiting for a long query is not idle; "
        "with --preset postgresql: 0, as pgbouncer's client_idle_timeout, and when given, "
        "the client is told first: FATAL 57P05, as PostgreSQL's idle_session_timeout)",
    )
    _add_relay_timeout(
        limits,
        "--send-timeout",
        "close both connections when a send to either side makes no progress for this "
        f"long (a peer that stopped reading); 0: never (default: {DEFAULT_RELAY_SEND_TIMEOUT:g}; "
        "with --preset postgresql: 0, as pgbouncer, which has none: flow control bounds "
        "what a paused reader holds; when given, an upstream that does not read gets the "
        "client FATAL 08006 first)",
    )
    limits.add_argument(
        "--fin-timeout",
        type=seconds_or_off,
        default=DEFAULT_RELAY_FIN_TIMEOUT,
        metavar="SECONDS",
        help="once one side has ended (its end is passed on), close both connections when "
        "no bytes have moved for this long (HAProxy's timeout client-fin/server-fin); "
        f"0: never (default: {DEFAULT_RELAY_FIN_TIMEOUT:g})",
    )
    limits.add_argument(
        "--connect-timeout",
        type=seconds_or_off,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help="close a client whose upstream connection is not made within this long "
        f"(pgbouncer's server_connect_timeout); 0: never (default: {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    _add_min_send_rate(limits)
    _add_keepalive(limits, "on both sides, the clients' connections and the upstream ones")
    _add_memory_budget(
        limits,
        "MiB that both sides' unsent bytes and unfinished frames may hold over all "
        "connections (a frame streams through: it holds a read, not the frame); past it, "
        "reading waits",
    )
    _add_server_tls_options(relay)
    _add_upstream_tls_options(relay)
    _add_metrics_and_logging(relay)


def _add_upstream_tls_options(relay: argparse.ArgumentParser) -> None:
    """How the relay speaks TLS to its upstream (libpq's and pgbouncer's names)."""
    tls = relay.add_argument_group("TLS to the upstream")
    tls.add_argument(
        "--upstream-tls",
        choices=UPSTREAM_TLS_MODES,
        default="disable",
        help="disable: plain TCP; require: TLS, the certificate not checked; verify-ca: it "
        "must chain to --upstream-tls-ca; verify-full: and name the upstream (with --preset "
        "postgresql the relay sends its own SSLRequest first, and N is an error) "
        "(default: %(default)s)",
    )
    tls.add_argument(
        "--upstream-tls-ca",
        metavar="FILE",
        help="the PEM CA certificates the upstream's must chain to (default: the system's)",
    )
    tls.add_argument(
        "--upstream-tls-cert",
        metavar="FILE",
        help="present this PEM client certificate to the upstream",
    )
    tls.add_argument(
        "--upstream-tls-key", metavar="FILE", help="its key (default: in --upstream-tls-cert)"
    )
    tls.add_argument(
        "--upstream-tls-server-name",
        metavar="NAME",
        help="the name the upstream's certificate must carry, and SNI (default: its host)",
    )


def _add_relay_timeout(limits: argparse._ArgumentGroup, flag: str, help_text: str) -> None:
    """A relay timeout in seconds (0: never) whose default is the
    ``--preset``'s, else the relay's own: left unset on the parser, it is
    filled in by :func:`~trioecho.cli.configs.resolve_relay_timeouts`."""
    limits.add_argument(
        flag, type=seconds_or_off, default=argparse.SUPPRESS, metavar="SECONDS", help=help_text
    )


def _add_bench(commands: Any) -> None:
    bench = _add_command(
        commands,
        "bench",
        "load a server with many pipelined messages, check every reply",
        "A load generator in C: many connections, each keeping --depth "
        "messages in flight; every reply is checked.  Reports messages per second and "
        "latency percentiles.",
    )
    target = _add_address_options(bench, "server", "host name or address")
    target.add_argument(
        "--framing",
        choices=BENCH_FRAMINGS,
        default="line",
        help="the server's framing (default: %(default)s)",
    )
    load = bench.add_argument_group("load")
    load.add_argument(
        "-c",
        "--connections",
        type=positive_int,
        default=100,
        metavar="N",
        help="connections at once (default: %(default)s)",
    )
    load.add_argument(
        "-d",
        "--depth",
        type=positive_int,
        default=1,
        metavar="N",
        help="messages in flight per connection (default: %(default)s)",
    )
    load.add_argument(
        "-s",
        "--size",
        type=positive_int,
        default=64,
        metavar="BYTES",
        help="message bytes (default: %(default)s)",
    )
    load.add_argument(
        "--duration",
        type=positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="seconds measured (default: %(default)s)",
    )
    load.add_argument(
        "--warmup",
        type=seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds before measuring (default: %(default)s)",
    )
    report = bench.add_argument_group("report")
    report.add_argument("--json", action="store_true", help="print one JSON object")
    report.add_argument(
        "--server-pid",
        type=positive_int,
        default=None,
        metavar="PID",
        help="a server on this machine: also report its CPU time per message, from "
        "/proc/PID/stat (steadier than msgs/s on a shared machine)",
    )
    _add_tls_client_options(bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioecho",
        description="The seed tutorial's echo service on Trio, with real message framing. "
        "With no command, runs 'serve'.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"trioecho {__version__} (framer: {IMPLEMENTATION})",
    )
    commands = parser.add_subparsers(dest="command", metavar="{serve,client,relay,demo,bench}")
    _add_serve(commands)
    _add_client(commands)
    _add_relay(commands)
    _add_command(
        commands,
        "demo",
        "show sticky packets: raw vs line vs len framing",
        "Shows the seed's sticky-packet problem on a real socket: three messages "
        "sent back to back arrive merged without framing, and separate with line and "
        "len framing.",
    )
    _add_bench(commands)
    return parser
