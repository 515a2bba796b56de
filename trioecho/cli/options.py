"""The command line's options: argument types, the option groups the commands
share, the parser, and what the options build (a framing, a client's TLS
context).
"""

from __future__ import annotations

import argparse
import dataclasses
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

from trioecho._backend import IMPLEMENTATION
from trioecho._version import __version__
from trioecho.arguments import parse_address
from trioecho.framing import presets
from trioecho.framing.base import DEFAULT_MAX_FRAME, DEFAULT_MAX_LINE, FRAMINGS, MAX_DELIMITER
from trioecho.framing.config import OPTION_FRAMINGS, FramingConfig
from trioecho.framing.contract import LENGTH_BYTES, MAX_ADJUSTMENT, MAX_OFFSET, MAX_VARINT
from trioecho.io.budget import DEFAULT_MEMORY_BUDGET
from trioecho.io.keepalive import DEFAULT_KEEPALIVE, KeepAlive
from trioecho.io.readiness import READINESS_MODES
from trioecho.io.tls import client_context
from trioecho.server.accept import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_PROXY_ALLOW_FROM,
    DEFAULT_PROXY_TIMEOUT,
    PROXY_MODES,
)
from trioecho.server.listeners import DEFAULT_UNIX_MODE
from trioecho.server.server import (
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MIN_SEND_RATE,
    DEFAULT_PORT,
    DEFAULT_SEND_TIMEOUT,
)
from trioecho.services.echo import (
    BaseEchoHandler,
    EchoHandler,
    GenericEchoHandler,
    RespondEchoHandler,
)
from trioecho.services.relay_config import (
    DEFAULT_RELAY_FIN_TIMEOUT,
    DEFAULT_RELAY_IDLE_TIMEOUT,
    DEFAULT_RELAY_SEND_TIMEOUT,
)
from trioecho.workers.supervisor import DEFAULT_WORKER_TIMEOUT, cpu_count

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
# serve --handler: the echo service's three handlers, the same bytes on the wire.
ECHO_HANDLERS: dict[str, type[BaseEchoHandler]] = {
    "session": EchoHandler,
    "respond": RespondEchoHandler,
    "handle": GenericEchoHandler,
}


def _integer(text: str, what: str, base: int = 10) -> int:
    """``text`` as an int, or the argparse error "not a WHAT: 'TEXT'"."""
    try:
        return int(text, base)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def _positive_int(text: str) -> int:
    value = _integer(text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    value = _integer(text, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, not {value}")
    return value


def _file_mode(text: str) -> int:
    value = _integer(text, "an octal file mode", 8)
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"must be 0..777, not {text}")
    return value


def _length_bytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value not in LENGTH_BYTES:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(map(str, LENGTH_BYTES))}, not {text!r}"
        )
    return value


# Longest duration an option takes: a day (also keeps Trio's deadlines finite).
MAX_SECONDS = 86400.0


def _seconds(text: str) -> float:
    """A finite number of seconds, 0 to MAX_SECONDS."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not 0 <= value <= MAX_SECONDS:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_SECONDS:g} seconds, not {text}")
    return value


def _seconds_or_off(text: str) -> float | None:
    value = _seconds(text)
    return None if value == 0 else value


def _keepalive(text: str) -> KeepAlive | None:
    """``--keepalive IDLE[:INTERVAL[:COUNT]]`` or ``off``."""
    try:
        return KeepAlive.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_keepalive(limits: argparse._ArgumentGroup, where: str) -> None:
    """``--keepalive``, for the connections ``where`` names."""
    limits.add_argument(
        "--keepalive",
        type=_keepalive,
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


def _int_in(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _integer(text, "an integer")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be between {low} and {high}")
        return value

    return parse


_length_offset = _int_in(0, MAX_OFFSET, "the length offset")
_length_adjustment = _int_in(-MAX_ADJUSTMENT, MAX_ADJUSTMENT, "the length adjustment")
_varint_bytes = _int_in(1, MAX_VARINT, "a varint length")


def _delimiter(text: str) -> bytes:
    """A delimiter given on the command line, with backslash escapes."""
    try:
        value = (
            text.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1")
        )
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        raise argparse.ArgumentTypeError(f"bad delimiter {text!r}: {exc}") from None
    if not 1 <= len(value) <= MAX_DELIMITER:
        raise argparse.ArgumentTypeError(
            f"a delimiter is 1 to {MAX_DELIMITER} bytes, not {len(value)}: {text!r}"
        )
    return value


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), _port(port)


def _add_address_options(
    parser: argparse.ArgumentParser, title: str, what: str, *, listening: bool = False
) -> None:
    """--host and --port: where a server listens (and its --backlog), or the
    server a client dials."""
    group = parser.add_argument_group(title)
    group.add_argument("--host", default=DEFAULT_HOST, help=f"{what} (default: %(default)s)")
    group.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="TCP port (default: %(default)s)"
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
            type=_file_mode,
            default=DEFAULT_UNIX_MODE,
            metavar="OCTAL",
            help=f"--uds: the socket file's mode (default: {DEFAULT_UNIX_MODE:o})",
        )
        group.add_argument(
            "--backlog",
            type=_positive_int,
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


# Each framing option: its flag, and the FramingConfig field it sets, which
# gives the framings it applies to (OPTION_FRAMINGS) and its default (but
# for those in _NONE_UNTIL_BUILT, which stay None: framing_from_args
# decides).  They default to None on the parser, so that one given for a
# framing it does not apply to is refused (resolve_framing_options)
# instead of ignored.
FRAMING_OPTIONS: dict[str, tuple[str, str]] = {
    "length_bytes": ("--length-bytes", "length_bytes"),
    "byteorder": ("--byteorder", "byteorder"),
    "length_offset": ("--length-offset", "length_offset"),
    "length_adjustment": ("--length-adjustment", "length_adjustment"),
    "include_header": ("--include-header", "include_header"),
    "varint_bytes": ("--varint-bytes", "max_length_bytes"),
    "frame_size": ("--frame-size", "frame_size"),
    "delimiter": ("--delimiter", "delimiter"),
    "strip_cr": ("--strip-cr/--keep-cr", "strip_cr"),
    "on_too_long": ("--on-too-long", "on_too_long"),
    "max_frame": ("--max-frame", "max_frame"),
}
_NONE_UNTIL_BUILT = ("frame_size", "delimiter", "max_frame")
_FRAMING_DEFAULTS = {field.name: field.default for field in dataclasses.fields(FramingConfig)}
DEFAULT_FRAMING = str(_FRAMING_DEFAULTS["framing"])


def framing_default(dest: str) -> object:
    """A framing option's default: its FramingConfig field's (or None)."""
    return None if dest in _NONE_UNTIL_BUILT else _FRAMING_DEFAULTS[FRAMING_OPTIONS[dest][1]]


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
        type=_length_bytes,
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
        type=_length_offset,
        metavar="N",
        help="len, varint: N bytes (a type byte, say) before the length field "
        f"(default: {framing_default('length_offset')})",
    )
    group.add_argument(
        "--length-adjustment",
        type=_length_adjustment,
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
        type=_varint_bytes,
        metavar="N",
        help="varint: most bytes a length may take "
        f"(1-10; MQTT: 4; default: {framing_default('varint_bytes')})",
    )
    group.add_argument(
        "--frame-size", type=_positive_int, metavar="N", help="fixed: bytes per message (required)"
    )
    group.add_argument(
        "--delimiter",
        action="append",
        type=_delimiter,
        metavar="BYTES",
        help="line: the delimiter, with escapes (\\n, \\r\\n, \\0, \\x1e); repeat it for "
        "several: a line ends at the first to occur, replies end with the first given "
        "(default: \\n)",
    )
    group.add_argument(
        "--max-frame",
        type=_positive_int,
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


def resolve_framing_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, preset: str | None = None
) -> None:
    """Refuse a framing option given for a framing it does not apply to (or
    with ``--preset``, which sets the framing), then fill in the defaults."""
    if preset is not None:
        given = [
            flag
            for dest, (flag, _field) in FRAMING_OPTIONS.items()
            if dest != "max_frame" and getattr(args, dest) is not None
        ]
        if args.framing is not None:
            given.insert(0, "--framing")
        if given:
            parser.error(
                f"{', '.join(given)}: --preset {preset} sets the framing "
                "(only --max-frame applies with it)"
            )
    framing = args.framing or DEFAULT_FRAMING
    for dest, (flag, field) in FRAMING_OPTIONS.items():
        value = getattr(args, dest)
        framings = OPTION_FRAMINGS[field]
        if value is None:
            setattr(args, dest, framing_default(dest))
        elif preset is None and framing not in framings:
            parser.error(f"{flag} applies to --framing {' or '.join(framings)}, not {framing}")
    args.framing = framing


def resolve_relay_timeouts(args: argparse.Namespace) -> None:
    """Fill in ``relay``'s timeouts not given on the command line: its
    ``--preset``'s (:data:`RELAY_PRESET_TIMEOUTS`), else the relay's own."""
    own = RELAY_PRESET_TIMEOUTS.get(args.preset, {}) if args.preset is not None else {}
    for name, default in RELAY_TIMEOUTS.items():
        if not hasattr(args, name):
            setattr(args, name, own.get(name, default))


def _rate_or_off(text: str) -> float | None:
    """``--min-send-rate``: a finite number of bytes a second; 0: none."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be bytes a second, not {text!r}") from None
    if not 0 <= value < float("inf"):  # also false for nan
        raise argparse.ArgumentTypeError(f"must be a finite number, at least 0, not {text}")
    return None if value == 0 else value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _workers(text: str) -> int:
    if text == "auto":
        return cpu_count()
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a number or 'auto', not {text!r}")
    return _positive_int(text)


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


def _add_server_tls_and_proxy_options(parser: argparse.ArgumentParser) -> None:
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this PEM certificate chain")
    tls.add_argument(
        "--tls-key", metavar="FILE", help="its private key (default: in --tls-cert's file)"
    )
    tls.add_argument(
        "--tls-handshake-timeout",
        type=_positive_seconds,
        default=DEFAULT_HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection whose handshake takes longer (default: %(default)s)",
    )
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
        type=_positive_seconds,
        default=DEFAULT_PROXY_TIMEOUT,
        metavar="SECONDS",
        help="close a connection whose header is not complete in time (default: %(default)s)",
    )


def _add_server_limits(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """What every server command takes: its connection limit and shutdown
    grace; returns the group, for the command's own limits."""
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-connections",
        type=_positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="at the limit, stop accepting until one closes (default: %(default)s)",
    )
    limits.add_argument(
        "--grace",
        type=_seconds,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, seconds connections get to finish (default: %(default)s)",
    )
    return limits


LOG_LEVELS = ("debug", "info", "warning", "error")


def _metrics_address(text: str) -> tuple[str, int]:
    """``--metrics``: ``PORT`` (on 127.0.0.1) or ``HOST:PORT``."""
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    try:
        return parse_address(text, "--metrics")
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(
            f"not [HOST:]PORT: {text!r} ({exc})" if ":" in text else f"not [HOST:]PORT: {text!r}"
        ) from None


def _add_metrics(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics")
    group.add_argument(
        "--metrics",
        type=_metrics_address,
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, with /healthz and "
        "/readyz (HOST defaults to 127.0.0.1: another address must be named)",
    )


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
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


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the echo service (the default)",
        description="The seed's echo service: greets each client, answers every message "
        "with the message and 好, ends a session on q.",
    )
    serve.set_defaults(command_parser=serve)
    _add_address_options(serve, "listening", "the address to listen on", listening=True)
    _add_framing_options(serve)
    limits = _add_server_limits(serve)
    limits.add_argument(
        "--idle-timeout",
        type=_seconds_or_off,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection with no complete message for this long; "
        "0: never (default: %(default)s)",
    )
    limits.add_argument(
        "--send-timeout",
        type=_seconds_or_off,
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
        type=_workers,
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
        type=_positive_seconds,
        default=DEFAULT_WORKER_TIMEOUT,
        metavar="SECONDS",
        help="with --workers: kill and restart a worker whose event loop has not "
        "turned for this long (default: %(default)s)",
    )
    _add_server_tls_and_proxy_options(serve)
    _add_metrics(serve)
    _add_verbosity(serve)


def _add_client(commands: Any) -> None:
    client = commands.add_parser(
        "client",
        help="send stdin lines, print the replies",
        description="An interactive client: each line of stdin is one message, each reply "
        "is printed.  It checks the server's greeting and names the framing the server "
        "seems to speak if it is not this one.",
    )
    client.set_defaults(command_parser=client)
    _add_address_options(client, "server", "the server's host name or address")
    _add_framing_options(client)
    _add_tls_client_options(client)


def _add_min_send_rate(limits: argparse._ArgumentGroup) -> None:
    limits.add_argument(
        "--min-send-rate",
        type=_rate_or_off,
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
        type=_positive_int,
        default=DEFAULT_MEMORY_BUDGET >> 20,
        metavar="MIB",
        help=help_text + " (default: %(default)s)",
    )


def _add_relay(commands: Any) -> None:
    relay = commands.add_parser(
        "relay",
        help="pass every frame between clients and an upstream server, checked against the framing",
        description="A frame relay: each client gets its own connection to the upstream "
        "server, and every frame each way is checked against the framing (and --max-frame) "
        "before it is passed on.",
    )
    relay.set_defaults(command_parser=relay)
    relay.add_argument(
        "--upstream",
        type=_host_port,
        required=True,
        metavar="HOST:PORT",
        help="the server to relay to (not the relay's own --host/--port)",
    )
    relay.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        help="a real protocol's framing (PostgreSQL: a client's request for TLS is "
        "refused by the relay, which must see the messages; a side's end closes both "
        "connections at once, as pgbouncer does: the protocol has no half-close; no idle "
        "or send timeout unless given); otherwise the framing options, the same both ways",
    )
    _add_address_options(relay, "listening", "the address to listen on", listening=True)
    _add_framing_options(relay)
    limits = _add_server_limits(relay)
    limits.add_argument(
        "--idle-timeout",
        type=_seconds_or_off,
        default=argparse.SUPPRESS,  # the --preset's, else the relay's: resolve_relay_timeouts
        metavar="SECONDS",
        help="close a client and its upstream connection when no bytes have moved either "
        f"way for this long; 0: never (default: {DEFAULT_RELAY_IDLE_TIMEOUT:g}, an hour: a "
        "database session may sit idle, a client waiting for a long query is not idle; "
        "with --preset postgresql: 0, as pgbouncer's client_idle_timeout, and when given, "
        "the client is told first: FATAL 57P05, as PostgreSQL's idle_session_timeout)",
    )
    limits.add_argument(
        "--send-timeout",
        type=_seconds_or_off,
        default=argparse.SUPPRESS,  # the --preset's, else the relay's: resolve_relay_timeouts
        metavar="SECONDS",
        help="close both connections when a send to either side makes no progress for this "
        f"long (a peer that stopped reading); 0: never (default: {DEFAULT_RELAY_SEND_TIMEOUT:g}; "
        "with --preset postgresql: 0, as pgbouncer, which has none: flow control bounds "
        "what a paused reader holds; when given, an upstream that does not read gets the "
        "client FATAL 08006 first)",
    )
    limits.add_argument(
        "--fin-timeout",
        type=_seconds_or_off,
        default=DEFAULT_RELAY_FIN_TIMEOUT,
        metavar="SECONDS",
        help="once one side has ended (its end is passed on), close both connections when "
        "no bytes have moved for this long (HAProxy's timeout client-fin/server-fin); "
        f"0: never (default: {DEFAULT_RELAY_FIN_TIMEOUT:g})",
    )
    _add_min_send_rate(limits)
    _add_keepalive(limits, "on both sides, the clients' connections and the upstream ones")
    _add_memory_budget(
        limits,
        "MiB that both sides' unsent bytes and unfinished frames may hold over all "
        "connections (a frame streams through: it holds a read, not the frame); past it, "
        "reading waits",
    )
    _add_metrics(relay)
    _add_verbosity(relay)


def _add_bench(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="load a server with many pipelined messages, check every reply",
        description="A load generator in C: many connections, each keeping --depth "
        "messages in flight; every reply is checked.  Reports messages per second and "
        "latency percentiles.",
    )
    bench.set_defaults(command_parser=bench)
    target = bench.add_argument_group("server")
    target.add_argument(
        "--host", default=DEFAULT_HOST, help="host name or address (default: %(default)s)"
    )
    target.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="TCP port (default: %(default)s)"
    )
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
        type=_positive_int,
        default=100,
        metavar="N",
        help="connections at once (default: %(default)s)",
    )
    load.add_argument(
        "-d",
        "--depth",
        type=_positive_int,
        default=1,
        metavar="N",
        help="messages in flight per connection (default: %(default)s)",
    )
    load.add_argument(
        "-s",
        "--size",
        type=_positive_int,
        default=64,
        metavar="BYTES",
        help="message bytes (default: %(default)s)",
    )
    load.add_argument(
        "--duration",
        type=_positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="seconds measured (default: %(default)s)",
    )
    load.add_argument(
        "--warmup",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds before measuring (default: %(default)s)",
    )
    report = bench.add_argument_group("report")
    report.add_argument("--json", action="store_true", help="print one JSON object")
    report.add_argument(
        "--server-pid",
        type=_positive_int,
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
    demo = commands.add_parser(
        "demo",
        help="show sticky packets: raw vs line vs len framing",
        description="Shows the seed's sticky-packet problem on a real socket: three messages "
        "sent back to back arrive merged without framing, and separate with line and "
        "len framing.",
    )
    demo.set_defaults(command_parser=demo)
    _add_bench(commands)
    return parser


def framing_from_args(args: argparse.Namespace) -> FramingConfig:
    if args.framing == "fixed" and args.frame_size is None:
        raise ValueError("--framing fixed needs --frame-size")
    return FramingConfig(
        args.framing,
        length_bytes=args.length_bytes,
        byteorder=args.byteorder,
        max_frame=args.max_frame,
        delimiter=tuple(args.delimiter or (b"\n",)),
        strip_cr=args.strip_cr,
        on_too_long=args.on_too_long,
        length_offset=args.length_offset,
        length_adjustment=args.length_adjustment,
        include_header=args.include_header,
        max_length_bytes=args.varint_bytes,
        frame_size=args.frame_size,
    )


def client_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context ``--tls``/``--tls-ca`` ask for (client and bench), or None."""
    if not (args.tls or args.tls_ca):
        return None
    try:
        return client_context(args.tls_ca)
    except OSError as exc:  # ssl.SSLError included
        parser.error(f"cannot load --tls-ca {args.tls_ca}: {exc}")
