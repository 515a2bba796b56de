"""``trioecho serve`` and ``trioecho relay``: build the server from the parsed
options and run it until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable

import trio

from trioecho.cli.configs import relay_config_from_args, server_config_from_args
from trioecho.cli.options import ECHO_HANDLERS
from trioecho.cli.tuning import fit_fd_limit, tune_gc
from trioecho.framing.config import FramingConfig
from trioecho.io.tls import server_context
from trioecho.logtext import format_address, format_listen_address
from trioecho.server.accept import (
    ProxyProtocolConfig,
)
from trioecho.server.listeners import adopt_listening_socket, socket_listeners
from trioecho.server.server import MessageServer
from trioecho.services.relay import relay_server_from_config
from trioecho.workers.link import HEARTBEAT_INTERVAL, WorkerLink, start_orphan_watchdog
from trioecho.workers.systemd import Notifier

logger = logging.getLogger("trioecho")

__all__ = [
    "ServeSpec",
    "relay_from_args",
    "reload_on_sighup",
    "run_relay",
    "run_server",
    "serve_echo",
]


@dataclasses.dataclass(frozen=True)
class ServeSpec:
    """What one worker of ``serve --workers N`` serves: the parsed options and
    what was built from them, checked once by the supervisor's command line
    and sent to each worker (pickled, over its private socket pair).  The TLS
    context is not in it: each worker loads it from ``args.tls_cert``."""

    args: argparse.Namespace
    framing: FramingConfig
    proxy: ProxyProtocolConfig | None


async def serve_echo(
    args: argparse.Namespace,
    framing: FramingConfig,
    proxy: ProxyProtocolConfig | None,
    ssl_context: ssl.SSLContext | None,
    sockets: list[socket.socket] | None = None,
    notifier: Notifier | None = None,
) -> int:
    """``trioecho serve`` in this process (one worker, or the whole
    service): on ``sockets`` if given (inherited; a worker's come as
    ``args.listen_fds``), else where the options say."""
    fit_fd_limit(args.max_connections)
    tune_gc()
    listen_fds = getattr(args, "listen_fds", None)
    reuse_port = args.worker_index is not None and not listen_fds
    config = server_config_from_args(args, framing, proxy, ssl_context, reuse_port=reuse_port)
    server = MessageServer.from_config(ECHO_HANDLERS[args.handler], config)
    if sockets is None and getattr(args, "listen_fds", None):
        sockets = [adopt_listening_socket(fd) for fd in args.listen_fds]
    return await run_server(args, server, sockets, notifier)


def relay_from_args(args: argparse.Namespace, framing: FramingConfig) -> MessageServer:
    """``trioecho relay``'s server (:func:`relay_config_from_args`);
    ``ValueError`` for an upstream it refuses (its own address)."""
    return relay_server_from_config(relay_config_from_args(args, framing))


def run_relay(
    args: argparse.Namespace,
    server: MessageServer,
    sockets: list[socket.socket] | None = None,
    notifier: Notifier | None = None,
) -> int:
    """``trioecho relay``: the frame relay until SIGINT/SIGTERM."""
    args.supervisor_fd = None
    fit_fd_limit(2 * args.max_connections)
    return trio.run(run_server, args, server, sockets, notifier)


def reload_on_sighup(args: argparse.Namespace, server: MessageServer) -> None:
    """SIGHUP in one process: re-read the TLS certificate and key (new
    handshakes use them; connections already open keep theirs), log what was
    done, and go on serving.  It never stops the server; a certificate that
    cannot be loaded is logged and the old one kept."""
    cert = getattr(args, "tls_cert", None)
    if cert is None:
        logger.info("SIGHUP: nothing to reload (no TLS certificate); still serving")
        return
    try:
        server.ssl_context = server_context(cert, args.tls_key)
    except (OSError, ValueError) as exc:
        logger.error(
            "SIGHUP: cannot reload the TLS certificate %s: %s; keeping the old one", cert, exc
        )
        return
    logger.info("SIGHUP: reloaded the TLS certificate %s; still serving", cert)


async def run_server(
    args: argparse.Namespace,
    server: MessageServer,
    sockets: list[socket.socket] | None = None,
    notifier: Notifier | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM (drain, then exit 0); a second signal
    closes every connection at once.  SIGHUP: :func:`reload_on_sighup`.  On
    the listening ``sockets`` given (inherited), else where ``server`` says;
    ``notifier`` (systemd) hears READY, RELOADING and STOPPING."""
    notifier = notifier or Notifier({})
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
    with trio.open_signal_receiver(*handled) as signals:
        async with trio.open_nursery() as nursery:
            serve: Callable[..., Awaitable[None]] = server.serve
            if sockets:
                serve = functools.partial(server.serve_listeners, socket_listeners(sockets))
            try:
                listeners = await nursery.start(serve)
            except OSError as exc:
                where = f"unix:{args.uds}" if args.uds else format_address((args.host, args.port))
                print(f"trioecho: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
                return 1
            if args.supervisor_fd is not None:  # a worker: the supervisor announces
                for listener in listeners:
                    where = format_address(listener.socket.getsockname())
                    logger.info("listening on %s", where)
                link = WorkerLink(args.supervisor_fd)
                await link.ready()
                # With --metrics, each heartbeat carries the worker's figures.
                figures = server.stats if getattr(args, "metrics", None) is not None else None
                nursery.start_soon(link.heartbeat, HEARTBEAT_INTERVAL, figures)
                start_orphan_watchdog(args.grace)

                async def stop_when_orphaned() -> None:
                    await link.wait_orphaned(on_retire=server.retire)
                    if not server.shutting_down:
                        logger.warning("the supervisor is gone: shutting down")
                        server.shutdown()

                nursery.start_soon(stop_when_orphaned)
            else:
                if getattr(args, "metrics", None) is not None:
                    # prometheus_client and h11 are loaded only for --metrics.
                    from trioecho.workers.metrics import metrics_registry, open_metrics

                    registry = metrics_registry(server.stats)
                    try:
                        await open_metrics(
                            nursery, args.metrics, registry, lambda: bool(server.stats()["serving"])
                        )
                    except OSError as exc:
                        where = format_address(args.metrics)
                        print(
                            f"trioecho: cannot serve --metrics on {where}: {exc.strerror or exc}",
                            file=sys.stderr,
                        )
                        server.shutdown(grace=0)
                        await server.wait_stopped()
                        return 1
                for listener in listeners:
                    where = format_listen_address(listener.socket.getsockname())
                    print(f"listening on {where}", flush=True)
                notifier.ready("serving")
                nursery.start_soon(notifier.keep_watchdog_fed)

            async def stop_on_signals() -> None:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGHUP:
                        notifier.reloading()
                        reload_on_sighup(args, server)
                        notifier.ready("serving")
                    elif signum in (signal.SIGTTIN, signal.SIGTTOU):
                        logger.warning("%s: one process serves (no --workers): ignored", name)
                    elif not server.shutting_down:
                        logger.info("%s: shutting down (grace %ss)", name, server.grace)
                        notifier.stopping()
                        server.shutdown()
                    else:
                        logger.warning("%s again: closing every connection now", name)
                        server.shutdown(grace=0)

            nursery.start_soon(stop_on_signals)
            await server.wait_stopped()
            if args.supervisor_fd is not None and getattr(args, "metrics", None) is not None:
                await link.send_heartbeat(server.stats())  # the last figures, for the totals
            nursery.cancel_scope.cancel()
    return 0
