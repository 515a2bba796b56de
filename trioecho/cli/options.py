"""The command line's options: argument types, the option groups the commands
share, the parser, and what the options build (a framing, a client's TLS
context).
"""

from __future__ import annotations

import argparse
import ssl
from collections.abc import Callable
from functools import partial

from trioecho._backend import IMPLEMENTATION
from trioecho._version import __version__
from trioecho.framing import presets
from trioecho.framing._pyframer import LENGTH_BYTES, MAX_ADJUSTMENT, MAX_OFFSET, MAX_VARINT
from trioecho.framing.base import DEFAULT_MAX_FRAME, DEFAULT_MAX_LINE, FRAMINGS, MAX_DELIMITER
from trioecho.framing.config import FramingConfig
from trioecho.io.budget import DEFAULT_MEMORY_BUDGET
from trioecho.io.readiness import READINESS_MODES
from trioecho.io.tls import client_context
from trioecho.server.accept import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_PROXY_ALLOW_FROM,
    DEFAULT_PROXY_TIMEOUT,
    PROXY_MODES,
)
from trioecho.server.server import (
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    DEFAULT_SEND_TIMEOUT,
)
from trioecho.services.echo import (
    EchoHandler,
    GenericEchoHandler,
    RespondEchoHandler,
)
from trioecho.workers.supervisor import DEFAULT_WORKER_TIMEOUT, cpu_count

__all__ = ["ECHO_HANDLERS", "PRESETS", "build_parser", "client_tls", "framing_from_args"]


# --preset NAME: (what clients send, what the server sends), given max_frame.
PRESETS: dict[str, tuple[Callable[..., FramingConfig], Callable[..., FramingConfig]]] = {
    "postgresql": (partial(presets.postgresql, "client"), partial(presets.postgresql, "server")),
    "mqtt": (presets.mqtt, presets.mqtt),
    "protobuf-delimited": (presets.protobuf_delimited, presets.protobuf_delimited),
}
# serve --handler: the echo service's three handlers, the same bytes on the wire.
ECHO_HANDLERS: dict[str, type[EchoHandler]] = {
    "session": EchoHandler,
    "respond": RespondEchoHandler,
    "handle": GenericEchoHandler,
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, not {value}")
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


# The load generator (bench) speaks the first release's framings.
BENCH_FRAMINGS = ("line", "len", "raw")


def _int_in(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
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


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help="address (default %(default)s)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help="default %(default)s")
    parser.add_argument(
        "--framing",
        choices=FRAMINGS,
        default="line",
        help="line: delimited lines (newline by default); len: a length field; varint: a "
        "LEB128 varint length; fixed: --frame-size bytes each (library and relay use: the "
        "echo service cannot answer it); raw: the seed's unframed format (default %(default)s)",
    )
    parser.add_argument(
        "--length-bytes", type=int, choices=LENGTH_BYTES, default=4, help="len: field size"
    )
    parser.add_argument("--byteorder", choices=("big", "little"), default="big")
    parser.add_argument(
        "--length-offset",
        type=_length_offset,
        default=0,
        metavar="N",
        help="len, varint: N bytes (a type byte, say) before the length field",
    )
    parser.add_argument(
        "--length-adjustment",
        type=_length_adjustment,
        default=0,
        metavar="N",
        help="len: added to the length field's value to get the body's size "
        "(-4 when the field counts itself)",
    )
    parser.add_argument(
        "--include-header",
        action="store_true",
        help="len, varint: messages keep the bytes before the body (offset bytes and length "
        "field); the echo service then answers each message with its header, length rewritten",
    )
    parser.add_argument(
        "--varint-bytes",
        type=_varint_bytes,
        default=MAX_VARINT,
        metavar="N",
        help="varint: most bytes a length may take (1-10, default %(default)s; MQTT: 4)",
    )
    parser.add_argument(
        "--frame-size", type=_positive_int, metavar="N", help="fixed: bytes per message"
    )
    parser.add_argument(
        "--delimiter",
        action="append",
        type=_delimiter,
        metavar="BYTES",
        help="line: the delimiter, with escapes (\\n, \\r\\n, \\0, \\x1e); repeat it for "
        "several: a line ends at the first to occur, replies end with the first given "
        "(default \\n)",
    )
    parser.add_argument(
        "--max-frame",
        type=_positive_int,
        default=None,
        help=f"largest message in bytes (default {DEFAULT_MAX_LINE} for line, "
        f"{DEFAULT_MAX_FRAME} for len and varint)",
    )
    cr = parser.add_mutually_exclusive_group()
    cr.add_argument(
        "--strip-cr",
        dest="strip_cr",
        action="store_true",
        default=True,
        help="line: strip a \\r before each \\n, as telnet sends it (the default)",
    )
    cr.add_argument(
        "--keep-cr",
        dest="strip_cr",
        action="store_false",
        help="line: keep a \\r before \\n as part of the message",
    )
    parser.add_argument(
        "--on-too-long",
        choices=("error", "discard"),
        default="error",
        help="line over --max-frame: close the connection (error), or drop the line "
        "and go on (discard); default %(default)s",
    )


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _workers(text: str) -> int:
    if text == "auto":
        return cpu_count()
    try:
        return _positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number or 'auto', not {text!r}") from None


def _add_tls_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="trust the CA certificates in this PEM file instead of the system's (implies --tls)",
    )
    parser.add_argument(
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
        help="close a connection whose handshake takes longer (default %(default)s)",
    )
    proxy = parser.add_argument_group("PROXY protocol (behind HAProxy and other load balancers)")
    proxy.add_argument(
        "--proxy-protocol",
        choices=tuple(PROXY_MODES),
        default="off",
        help="expect a PROXY protocol header of this version on every connection "
        "(auto: v1 or v2); the handler's client_address is then the real client "
        "(default %(default)s)",
    )
    proxy.add_argument(
        "--proxy-allow-from",
        metavar="CIDR[,CIDR...]",
        help="the proxies allowed to send headers; others are refused "
        f"(default {','.join(DEFAULT_PROXY_ALLOW_FROM)})",
    )
    proxy.add_argument(
        "--proxy-timeout",
        type=_positive_seconds,
        default=DEFAULT_PROXY_TIMEOUT,
        metavar="SECONDS",
        help="close a connection whose header is not complete in time (default %(default)s)",
    )


def _add_server_limits(parser: argparse.ArgumentParser) -> None:
    """What every server command takes: its connection limit and shutdown grace."""
    parser.add_argument(
        "--max-connections",
        type=_positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="at the limit, stop accepting until one closes (default %(default)s)",
    )
    parser.add_argument(
        "--grace",
        type=_seconds,
        default=DEFAULT_GRACE,
        help="on SIGINT/SIGTERM, seconds connections get to finish (default %(default)s)",
    )


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="log every connection")
    group.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


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
    serve = commands.add_parser("serve", help="run the echo service (the default)")
    _add_connection_options(serve)
    _add_server_limits(serve)
    serve.add_argument(
        "--idle-timeout",
        type=_seconds_or_off,
        default=DEFAULT_IDLE_TIMEOUT,
        help="close a connection with no complete message for this long, in seconds; "
        "0: never (default %(default)s)",
    )
    serve.add_argument(
        "--send-timeout",
        type=_seconds_or_off,
        default=DEFAULT_SEND_TIMEOUT,
        help="close a peer that leaves its replies unread this long, in seconds; "
        "0: never (default %(default)s)",
    )
    serve.add_argument(
        "--handler",
        choices=tuple(ECHO_HANDLERS),
        default="session",
        help="how the echo is answered (same bytes on the wire): session (the C echo "
        "session, served inline), respond (a Python respond() per message, inline) or "
        "handle (an async handle() loop in each connection's task); default %(default)s",
    )
    serve.add_argument(
        "--generic",
        dest="handler",
        action="store_const",
        const="handle",
        help="the same as --handler handle",
    )
    serve.add_argument(
        "--readiness",
        choices=READINESS_MODES,
        default=None,
        help="how plain TCP connections wait for their socket: hub (one shared edge-triggered "
        "epoll set) or trio (Trio's own waits, one re-arm per wait); default: "
        "$TRIOECHO_READINESS, else hub",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="run N server processes on the port (SO_REUSEPORT), restarted if they die; "
        "auto: one per CPU (default %(default)s)",
    )
    serve.add_argument(
        "--memory-budget",
        type=_positive_int,
        default=DEFAULT_MEMORY_BUDGET >> 20,
        metavar="MIB",
        help="MiB that unfinished messages and unsent replies may hold over all "
        "connections; past it, the largest stop being read (default %(default)s)",
    )
    serve.add_argument(
        "--worker-timeout",
        type=_positive_seconds,
        default=DEFAULT_WORKER_TIMEOUT,
        metavar="SECONDS",
        help="with --workers: kill and restart a worker whose event loop has not "
        "turned for this long (default %(default)s)",
    )
    # Set by the supervisor on the command line of each worker it starts.
    # Set by the worker entry point (trioecho.cli.worker), never on the command line.
    serve.set_defaults(worker_index=None, supervisor_fd=None)
    _add_server_tls_and_proxy_options(serve)
    _add_verbosity(serve)
    client = commands.add_parser("client", help="send stdin lines, print the replies")
    _add_connection_options(client)
    _add_tls_client_options(client)
    relay = commands.add_parser(
        "relay",
        help="pass every frame between clients and an upstream server, checked against the framing",
    )
    relay.add_argument(
        "--upstream", type=_host_port, required=True, metavar="HOST:PORT", help="the server"
    )
    relay.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        help="a real protocol's framing (PostgreSQL: a client's request for TLS is "
        "refused by the relay, which must see the messages); otherwise the framing "
        "options below, the same both ways",
    )
    _add_connection_options(relay)
    _add_server_limits(relay)
    _add_verbosity(relay)
    commands.add_parser("demo", help="show sticky packets: raw vs line vs len framing")
    bench = commands.add_parser(
        "bench",
        help="load a server with many pipelined messages, check every reply",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument("--host", default=DEFAULT_HOST, help="host name or address")
    bench.add_argument("--port", type=_port, default=DEFAULT_PORT, help="port")
    bench.add_argument(
        "--framing", choices=BENCH_FRAMINGS, default="line", help="the server's framing"
    )
    bench.add_argument(
        "-c", "--connections", type=_positive_int, default=100, help="connections at once"
    )
    bench.add_argument(
        "-d", "--depth", type=_positive_int, default=1, help="messages in flight per connection"
    )
    bench.add_argument("-s", "--size", type=_positive_int, default=64, help="message bytes")
    bench.add_argument("--duration", type=_positive_seconds, default=5.0, help="seconds measured")
    bench.add_argument("--warmup", type=_seconds, default=1.0, help="seconds before measuring")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--server-pid",
        type=_positive_int,
        default=None,
        metavar="PID",
        help="a server on this machine: also report its CPU time per message, from "
        "/proc/PID/stat (steadier than msgs/s on a shared machine)",
    )
    _add_tls_client_options(bench)
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
