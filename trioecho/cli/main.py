"""Command line: ``trioecho [serve] [options]``, ``trioecho client``, ``trioecho demo``."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import pickle
import socket
import sys
from collections.abc import Sequence
from functools import partial

import trio

from trioecho.arguments import is_loopback_host
from trioecho.cli.client import run_client
from trioecho.cli.configs import (
    LogOptions,
    ServeOptions,
    ServeSpec,
    client_tls,
    drain_delay_of,
    server_config_from_args,
)
from trioecho.cli.demo import run_demo
from trioecho.cli.echo_policy import echo_framing_problem
from trioecho.cli.framing_args import framing_from_args, resolve_framing_options
from trioecho.cli.listening import inherited_listening_sockets, open_shared_unix_socket
from trioecho.cli.logging_setup import configure_logging
from trioecho.cli.options import build_parser
from trioecho.cli.serve import print_listening, relay_from_args, run_relay, serve_echo
from trioecho.cli.serve_checks import (
    check_serve_options,
    server_tls_from_args,
    upstream_tls_from_args,
)
from trioecho.logtext import format_address
from trioecho.server.listeners import remove_unix_socket
from trioecho.workers.ports import open_worker_sockets
from trioecho.workers.supervisor import supervise
from trioecho.workers.systemd import Notifier

__all__ = ["main", "with_default_command"]

COMMANDS = ("serve", "client", "relay", "demo", "bench")
logger = logging.getLogger("trioecho")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    arguments = with_default_command(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if arguments[:1] in (["-h"], ["--help"]):
        # Without a command trioecho serves: show serve's options too.
        print(parser.format_help())
        print("Options of 'serve', the default command:\n")
        arguments = ["serve", "--help"]
    args = parser.parse_args(arguments)
    # The command's own parser reports its mistakes ("trioecho serve: error: ...").
    parser = vars(args).pop("command_parser")
    if getattr(args, "log_config", None) is not None:
        given = [
            flag
            for flag, value in (
                ("--log-level", args.log_level),
                ("--log-format json", args.log_format == "json"),
                ("-q", args.quiet),
                ("-v", args.verbose),
            )
            if value
        ]
        if given:
            parser.error(f"--log-config decides the logging: not with {', '.join(given)}")
    try:
        configure_logging(LogOptions.from_args(args))
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "demo":
        return trio.run(run_demo)
    if args.command == "bench":
        try:
            from trioecho.cli.bench import run_bench
        except ImportError as exc:  # installed without a C compiler
            print(
                f"trioecho bench needs its C load generator, which this install lacks ({exc}): "
                "reinstall trioecho where a C compiler is available",
                file=sys.stderr,
            )
            return 1
        try:
            return run_bench(args, ssl_context=client_tls(parser, args))
        except KeyboardInterrupt:
            return 130
    resolve_framing_options(parser, args, getattr(args, "preset", None))
    try:
        framing = framing_from_args(args)
    except ValueError as exc:  # a framing option out of range
        parser.error(str(exc))
    if args.command == "relay":
        server_tls = server_tls_from_args(parser, args)
        upstream_tls = upstream_tls_from_args(parser, args)
        try:
            relay = relay_from_args(args, framing, server_tls, upstream_tls)
        except ValueError as exc:  # an upstream that is the relay itself
            parser.error(f"--upstream: {exc}")
        check_metrics_address(parser, args)
        sockets = inherited_listening_sockets(parser, args)
        return run_relay(args, relay, sockets, Notifier())
    problem = echo_framing_problem(framing, args.command)
    if problem is not None:
        parser.error(problem)
    if args.command == "client":
        tls = client_tls(parser, args)
        try:
            return trio.run(
                partial(
                    run_client,
                    args.host,
                    args.port,
                    framing,
                    ssl_context=tls,
                    server_name=args.tls_server_name,
                )
            )
        except KeyboardInterrupt:
            return 130
    framing, proxy, server_tls = check_serve_options(parser, args, framing)
    check_metrics_address(parser, args)
    sockets = inherited_listening_sockets(parser, args)
    notifier = Notifier()  # before any worker starts: NOTIFY_SOCKET is the supervisor's
    if args.workers > 1:
        spec = ServeSpec(
            server_config_from_args(args, framing, proxy, None),
            ServeOptions.from_args(args, inherited_listeners=sockets is not None),
        )
        return run_workers(args, spec, sockets, notifier)
    return trio.run(serve_echo, args, framing, proxy, server_tls, sockets, notifier)


def with_default_command(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``serve`` in front when it names no command (``trioecho
    --port 9999`` serves); ``-h``, ``--help`` and ``--version`` stay alone."""
    arguments = list(argv)
    if not arguments or (
        arguments[0] not in COMMANDS and arguments[0] not in ("-h", "--help", "--version")
    ):
        arguments.insert(0, "serve")
    return arguments


def check_metrics_address(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--metrics`` must not be the service's own port; one that is not on
    loopback is served as named, with a warning."""
    if args.metrics is None:
        return
    host, port = args.metrics
    if port != 0 and port == args.port and args.uds is None and not args.fd:
        parser.error(f"--metrics {format_address(args.metrics)}: that is the service's own port")
    if not is_loopback_host(host):
        logger.warning(
            "--metrics %s: the metrics are served beyond this machine", format_address(args.metrics)
        )


def run_workers(
    args: argparse.Namespace,
    spec: ServeSpec,
    sockets: list[socket.socket] | None,
    notifier: Notifier,
) -> int:
    """``serve --workers N``: the supervisor, on the inherited ``sockets``,
    on ``--uds`` (opened here and removed at stop), or on ``--host``/``--port``."""
    unix_inode = None
    if sockets is None and args.uds is not None:
        try:
            shared, unix_inode = open_shared_unix_socket(args.uds, args.uds_mode, args.backlog)
        except OSError as exc:
            print(
                f"trioecho: cannot listen on unix:{args.uds}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 1
        sockets = [shared]
    try:
        try:
            opened = open_worker_sockets(
                args.host, args.port, sockets, reuse_port=args.reuse_port, backlog=args.backlog
            )
        except OSError as exc:
            reason = exc.strerror or os.strerror(exc.errno or errno.EADDRINUSE)
            where = format_address((args.host, args.port))
            print(f"trioecho: cannot listen on {where}: {reason}", file=sys.stderr)
            return 1
        return trio.run(
            partial(
                supervise,
                pickle.dumps(spec),
                args.workers,
                opened,
                worker_module="trioecho.cli.worker",
                grace=args.grace,
                drain_delay=drain_delay_of(args),
                worker_timeout=args.worker_timeout,
                notifier=notifier,
                metrics=args.metrics,
                announce=print_listening,
            )
        )
    finally:
        if unix_inode is not None:
            remove_unix_socket(args.uds, unix_inode)
        for sock in sockets or []:
            sock.close()
