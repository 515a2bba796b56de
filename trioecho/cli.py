"""Command line: ``trioecho [serve] [options]``, ``trioecho client``, ``trioecho demo``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import logging
import resource
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from functools import partial

import trio

from . import __version__
from ._backend import IMPLEMENTATION
from ._errors import FramingError
from ._pyframer import LENGTH_BYTES, MAX_ADJUSTMENT, MAX_OFFSET, MAX_VARINT
from .accept import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_PROXY_ALLOW_FROM,
    DEFAULT_PROXY_TIMEOUT,
    PROXY_MODES,
    ProxyProtocolConfig,
)
from .budget import DEFAULT_MEMORY_BUDGET, MemoryBudget
from .client import run_client
from .demo import run_demo
from .echo import (
    GREETING,
    REPLY_SUFFIX,
    EchoHandler,
    GenericEchoHandler,
    RespondEchoHandler,
    greeting_frame,
)
from .framing import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_LINE,
    FRAMINGS,
    MAX_DELIMITER,
    FramingConfig,
    presets,
)
from .relay import relay_server
from .server import (
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    DEFAULT_SEND_TIMEOUT,
    MessageServer,
    format_address,
)
from .session import reply_limit
from .tls import client_context, server_context
from .transport import READINESS_MODES, default_readiness
from .workers import (
    DEFAULT_WORKER_TIMEOUT,
    WorkerLink,
    cpu_count,
    start_orphan_watchdog,
    supervise,
)

__all__ = ["main"]

COMMANDS = ("serve", "client", "relay", "demo", "bench")
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

logger = logging.getLogger("trioecho")


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
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)
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


def _framing(args: argparse.Namespace) -> FramingConfig:
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


def _echo_framing_problem(framing: FramingConfig, command: str) -> str | None:
    """Why the echo service (serve) or its client cannot use ``framing``, or None."""
    if framing.framing == "fixed":
        return (
            "--framing fixed: the echo service cannot answer fixed-length messages "
            f"(each reply is {len(REPLY_SUFFIX)} bytes longer than its message)"
        )
    if framing.framing not in ("len", "varint"):
        return None
    if command == "client" and (framing.include_header or framing.length_offset):
        return "the client sends bare payloads: --include-header and --length-offset are for serve"
    if framing.length_offset and not framing.include_header:
        return (
            "--length-offset needs --include-header for the echo service: each reply "
            "carries its message's bytes before the length field"
        )
    return None


def _fit_replies(
    parser: argparse.ArgumentParser, args: argparse.Namespace, framing: FramingConfig
) -> FramingConfig:
    """Every message the server accepts gets a reply, and a reply must fit the
    length header: refuse a --max-frame it cannot honour, and keep the
    default within it."""
    limit = reply_limit(framing, REPLY_SUFFIX)
    if limit is None:
        return framing
    if args.max_frame is None:
        return dataclasses.replace(framing, max_frame=min(DEFAULT_MAX_FRAME, limit))
    if args.max_frame > limit:
        field = (
            f"--length-bytes {args.length_bytes}"
            if framing.framing == "len"
            else f"--varint-bytes {args.varint_bytes}"
        )
        if framing.length_adjustment:
            field += f" and --length-adjustment {framing.length_adjustment}"
        parser.error(
            f"--max-frame {args.max_frame} is too large for {field}: "
            f"the reply to a message ({len(REPLY_SUFFIX)} bytes longer) must fit the header, "
            f"so at most {limit}"
        )
    return framing


FD_MARGIN = 64  # descriptors besides connections: listeners, epoll, pipes, files


def _fit_fd_limit(max_connections: int) -> None:
    """Raise the soft RLIMIT_NOFILE to what --max-connections needs (up to the
    hard limit, as servers commonly do); warn if it still cannot fit."""
    needed = max_connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        logger.warning(
            "--max-connections %d needs about %d file descriptors, but RLIMIT_NOFILE "
            "allows %d: past about %d connections accepting will pause (raise it with "
            "ulimit -n, or lower --max-connections)",
            max_connections,
            needed,
            soft,
            max(soft - FD_MARGIN, 1),
        )


# The server process's cyclic garbage collector: each message allocates a few
# short-lived containers (freed by reference counting), and at the default
# threshold of 700 the collector ran every ~100 messages, ~5% of the server's
# CPU with 1000 connections; at 20,000 it all but never runs under that load
# (0.3 s -> 0.01 s of 4.7 s), while cyclic garbage is still collected.
GC_THRESHOLD = 20_000


def _tune_gc() -> None:
    """Collect less often in the server process (see ``GC_THRESHOLD``), and
    leave the objects of start-up out of every later collection."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)
    gc.freeze()


async def _serve(
    args: argparse.Namespace,
    framing: FramingConfig,
    proxy: ProxyProtocolConfig | None,
    ssl_context: ssl.SSLContext | None,
) -> int:
    _fit_fd_limit(args.max_connections)
    _tune_gc()
    server = MessageServer(
        ECHO_HANDLERS[args.handler],
        host=args.host,
        port=args.port,
        framing=framing,
        max_connections=args.max_connections,
        idle_timeout=args.idle_timeout,
        send_timeout=args.send_timeout,
        grace=args.grace,
        proxy_protocol=proxy,
        ssl_context=ssl_context,
        handshake_timeout=args.tls_handshake_timeout,
        reuse_port=args.worker_index is not None,
        memory_budget=MemoryBudget(args.memory_budget << 20),
        readiness=args.readiness,
    )
    return await _run_server(args, server)


def _relay(args: argparse.Namespace, framing: FramingConfig) -> int:
    """``trioecho relay``: the frame relay until SIGINT/SIGTERM."""
    if args.preset is not None:
        client_preset, server_preset = PRESETS[args.preset]
        max_frame = args.max_frame if args.max_frame is not None else DEFAULT_MAX_FRAME
        client_framing = client_preset(max_frame=max_frame)
        server_framing = server_preset(max_frame=max_frame)
    else:
        client_framing = server_framing = framing
    answer = presets.refuse_encryption if args.preset == "postgresql" else None
    server = relay_server(
        args.upstream,
        client_framing=client_framing,
        server_framing=server_framing,
        answer=answer,
        host=args.host,
        port=args.port,
        max_connections=args.max_connections,
        grace=args.grace,
    )
    args.supervisor_fd = None
    _fit_fd_limit(2 * args.max_connections)
    return trio.run(_run_server, args, server)


async def _run_server(args: argparse.Namespace, server: MessageServer) -> int:
    """Serve until SIGINT/SIGTERM (drain, then exit 0); a second signal
    closes every connection at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                listeners = await nursery.start(server.serve)
            except OSError as exc:
                where = format_address((args.host, args.port))
                print(f"trioecho: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
                return 1
            if args.supervisor_fd is not None:  # a worker: the supervisor announces
                for listener in listeners:
                    where = format_address(listener.socket.getsockname())
                    logger.info("listening on %s", where)
                link = WorkerLink(args.supervisor_fd)
                await link.ready()
                nursery.start_soon(link.heartbeat)
                start_orphan_watchdog(args.grace)

                async def stop_when_orphaned() -> None:
                    await link.wait_orphaned()
                    if not server.shutting_down:
                        logger.warning("the supervisor is gone: shutting down")
                        server.shutdown()

                nursery.start_soon(stop_when_orphaned)
            else:
                for listener in listeners:
                    where = format_address(listener.socket.getsockname())
                    print(f"listening on {where}", flush=True)

            async def stop_on_signals() -> None:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not server.shutting_down:
                        logger.info("%s: shutting down (grace %ss)", name, server.grace)
                        server.shutdown()
                    else:
                        logger.warning("%s again: closing every connection now", name)
                        server.shutdown(grace=0)

            nursery.start_soon(stop_on_signals)
            await server.wait_stopped()
            nursery.cancel_scope.cancel()
    return 0


def _client_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context ``--tls``/``--tls-ca`` ask for (client and bench), or None."""
    if not (args.tls or args.tls_ca):
        return None
    try:
        return client_context(args.tls_ca)
    except OSError as exc:  # ssl.SSLError included
        parser.error(f"cannot load --tls-ca {args.tls_ca}: {exc}")


def _configure_logging(args: argparse.Namespace) -> None:
    """INFO for the server (WARNING with -q), one line per connection with -v."""
    level = logging.INFO if args.command == "serve" else logging.WARNING
    if getattr(args, "quiet", False):
        level = logging.WARNING
    if not getattr(args, "verbose", False):
        logging.getLogger("trioecho.connections").setLevel(logging.WARNING)
    worker = getattr(args, "worker_index", None)
    who = f"worker {worker} [%(process)d] " if worker is not None else ""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (
        arguments[0] not in COMMANDS and arguments[0] not in ("-h", "--help", "--version")
    ):
        arguments.insert(0, "serve")
    parser = build_parser()
    if arguments[:1] in (["-h"], ["--help"]):
        # Without a command trioecho serves: show serve's options too.
        print(parser.format_help())
        print("Options of 'serve', the default command:\n")
        arguments = ["serve", "--help"]
    args = parser.parse_args(arguments)
    _configure_logging(args)
    if args.command == "demo":
        return trio.run(run_demo)
    if args.command == "bench":
        try:
            from .bench import run_bench
        except ImportError as exc:  # installed without a C compiler
            print(
                f"trioecho bench needs its C load generator, which this install lacks ({exc}): "
                "reinstall trioecho where a C compiler is available",
                file=sys.stderr,
            )
            return 1
        try:
            return run_bench(args, ssl_context=_client_tls(parser, args))
        except KeyboardInterrupt:
            return 130
    try:
        framing = _framing(args)
    except ValueError as exc:  # a framing option out of range
        parser.error(str(exc))
    if args.command == "relay":
        return _relay(args, framing)
    problem = _echo_framing_problem(framing, args.command)
    if problem is not None:
        parser.error(problem)
    if args.command == "client":
        client_tls = _client_tls(parser, args)
        try:
            return trio.run(
                partial(
                    run_client,
                    args.host,
                    args.port,
                    framing,
                    ssl_context=client_tls,
                    server_name=args.tls_server_name,
                )
            )
        except KeyboardInterrupt:
            return 130
    if args.max_frame is not None and args.max_frame < len(GREETING):
        parser.error(f"--max-frame must be at least {len(GREETING)}: the greeting must fit")
    framing = _fit_replies(parser, args, framing)
    try:
        greeting_frame(framing.new_framer())
    except FramingError as exc:
        parser.error(f"the greeting cannot be framed with these options: {exc}")
    try:
        proxy = ProxyProtocolConfig.from_options(
            args.proxy_protocol, args.proxy_allow_from, args.proxy_timeout
        )
    except ValueError as exc:
        parser.error(f"--proxy-allow-from: {exc}")
    if args.proxy_allow_from is not None and proxy is None:
        parser.error("--proxy-allow-from needs --proxy-protocol v1, v2 or auto")
    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key needs --tls-cert")
    if args.readiness is None:
        try:
            args.readiness = default_readiness()
        except ValueError as exc:  # a bad $TRIOECHO_READINESS
            parser.error(str(exc))
    try:
        server_tls = server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except OSError as exc:  # ssl.SSLError included
        key = f" / --tls-key {args.tls_key}" if args.tls_key else ""
        parser.error(f"cannot load --tls-cert {args.tls_cert}{key}: {exc}")
    if args.workers > 1 and args.worker_index is None:
        return trio.run(
            partial(
                supervise,
                arguments[1:],
                args.workers,
                args.host,
                args.port,
                grace=args.grace,
                worker_timeout=args.worker_timeout,
            )
        )
    return trio.run(_serve, args, framing, proxy, server_tls)
