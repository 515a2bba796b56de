"""``trioecho serve`` and ``trioecho relay``: build the server from the parsed
options and run it until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import functools
import logging
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from trioecho.cli.configs import (
    ServeOptions,
    ServeSpec,
    WorkerContext,
    relay_config_from_args,
    server_config_from_args,
    server_tls,
)
from trioecho.cli.options import ECHO_HANDLERS
from trioecho.cli.tuning import fit_fd_limit, tune_gc
from trioecho.framing.config import FramingConfig
from trioecho.logtext import format_address, format_listen_address
from trioecho.server.accept import (
    ProxyProtocolConfig,
)
from trioecho.server.config import ServerConfig
from trioecho.server.listeners import adopt_listening_socket, socket_listeners
from trioecho.server.server import MessageServer
from trioecho.services.relay import relay_server_from_config
from trioecho.workers.link import HEARTBEAT_INTERVAL, WorkerLink, start_orphan_watchdog
from trioecho.workers.signals import SignalActions, act_on_signals, open_signal_receiver
from trioecho.workers.systemd import Notifier

logger = logging.getLogger("trioecho")

__all__ = [
    "ServeSpec",
    "print_listening",
    "relay_from_args",
    "reload_on_sighup",
    "run_relay",
    "run_server",
    "serve_echo",
]


async def serve_echo(
    args: argparse.Namespace,
    framing: FramingConfig,
    proxy: ProxyProtocolConfig | None,
    ssl_context: ssl.SSLContext | None,
    sockets: list[socket.socket] | None = None,
    notifier: Notifier | None = None,
) -> int:
    """``trioecho serve`` in this process (no workers): on ``sockets`` if
    given (inherited), else where the options say."""
    config = server_config_from_args(args, framing, proxy, ssl_context)
    options = ServeOptions.from_args(args, inherited_listeners=sockets is not None)
    return await serve_config(config, options, sockets, notifier)


async def serve_worker(spec: ServeSpec, worker: WorkerContext, tls: ssl.SSLContext | None) -> int:
    """One worker of ``serve --workers N``: the supervisor's configuration
    on the worker's port (its own ``SO_REUSEPORT`` socket) or on the
    listening sockets it inherited, with the TLS context it loaded."""
    config = spec.config.replace(
        port=worker.port, reuse_port=not worker.listen_fds, ssl_context=tls
    )
    sockets = [adopt_listening_socket(fd) for fd in worker.listen_fds] or None
    return await serve_config(config, spec.options, sockets, None, worker)


async def serve_config(
    config: ServerConfig,
    options: ServeOptions,
    sockets: list[socket.socket] | None,
    notifier: Notifier | None,
    worker: WorkerContext | None = None,
) -> int:
    """Serve the echo service with ``config`` and ``options``: see :func:`run_server`."""
    fit_fd_limit(config.max_connections)
    tune_gc()
    server = MessageServer(ECHO_HANDLERS[options.handler], config)
    return await run_server(options, server, sockets, notifier, worker)


def relay_from_args(
    args: argparse.Namespace,
    framing: FramingConfig,
    server_tls: ssl.SSLContext | None = None,
    upstream_tls: ssl.SSLContext | None = None,
) -> MessageServer:
    """``trioecho relay``'s server (:func:`relay_config_from_args`);
    ``ValueError`` for an upstream it refuses (its own address)."""
    config = relay_config_from_args(args, framing, server_tls, upstream_tls)
    return relay_server_from_config(config)


def run_relay(
    args: argparse.Namespace,
    server: MessageServer,
    sockets: list[socket.socket] | None = None,
    notifier: Notifier | None = None,
) -> int:
    """``trioecho relay``: the frame relay until SIGINT/SIGTERM."""
    fit_fd_limit(2 * server.max_connections)
    options = ServeOptions.from_args(args, inherited_listeners=sockets is not None)
    return trio.run(run_server, options, server, sockets, notifier)


def print_listening(addresses: Sequence[Any]) -> None:
    """``listening on ADDRESS`` on stdout, one line per listening address
    (``getsockname()``): the first lines a serving ``trioecho`` writes."""
    for address in addresses:
        print(f"listening on {format_listen_address(address)}", flush=True)


def single_process_signals(
    options: ServeOptions, server: MessageServer, notifier: Notifier
) -> SignalActions:
    """One process's answer to signals: SIGHUP :func:`reload_on_sighup`;
    SIGTTIN/SIGTTOU ignored (no workers); SIGINT/SIGTERM drain
    (:meth:`MessageServer.drain`), and again close every connection at once."""

    def reload(name: str) -> None:
        notifier.reloading()
        reload_on_sighup(options, server)
        notifier.ready("serving")

    def ignore(name: str) -> None:
        logger.warning("%s: one process serves (no --workers): ignored", name)

    def stop(name: str) -> None:
        logger.info("%s: draining", name)
        notifier.stopping()
        server.drain()

    def stop_now(name: str) -> None:
        logger.warning("%s again: closing every connection now", name)
        server.shutdown(grace=0)

    return SignalActions(
        reload=reload,
        add_worker=ignore,
        remove_worker=ignore,
        stop=stop,
        stop_now=stop_now,
        stopping=lambda: server.shutting_down or server.draining,
    )


def reload_on_sighup(options: ServeOptions, server: MessageServer) -> None:
    """SIGHUP in one process: re-read the TLS certificate, key and client CA (new
    handshakes use them; connections already open keep theirs), log what was
    done, and go on serving.  It never stops the server; a certificate that
    cannot be loaded is logged and the old one kept."""
    cert = options.tls_cert
    if cert is None:
        logger.info("SIGHUP: nothing to reload (no TLS certificate); still serving")
        return
    try:
        server.ssl_context = server_tls(options)
    except (OSError, ValueError) as exc:
        logger.error(
            "SIGHUP: cannot reload the TLS certificate %s: %s; keeping the old one", cert, exc
        )
        return
    logger.info("SIGHUP: reloaded the TLS certificate %s; still serving", cert)


async def run_server(
    options: ServeOptions,
    server: MessageServer,
    sockets: list[socket.socket] | None = None,
    notifier: Notifier | None = None,
    worker: WorkerContext | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM (drain, then exit 0); a second signal
    closes every connection at once.  SIGHUP: :func:`reload_on_sighup`.  On
    the listening ``sockets`` given (inherited), else where ``server`` says;
    ``notifier`` (systemd) hears READY, RELOADING and STOPPING."""
    notifier = notifier or Notifier({})
    with open_signal_receiver() as signals:
        async with trio.open_nursery() as nursery:
            serve: Callable[..., Awaitable[None]] = server.serve
            if sockets:
                serve = functools.partial(
                    server.serve_listeners,
                    socket_listeners(sockets),
                    inherited=options.inherited_listeners,
                )
            try:
                listeners = await nursery.start(serve)
            except OSError as exc:
                config = server.config
                where = (
                    f"unix:{config.unix_path}"
                    if config.unix_path
                    else format_address((config.host, config.port))
                )
                print(f"trioecho: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
                return 1
            if worker is not None:  # the supervisor announces
                for listener in listeners:
                    where = format_address(listener.socket.getsockname())
                    logger.info("listening on %s", where)
                link = WorkerLink(worker.supervisor_fd)
                await link.ready()
                # With --metrics, each heartbeat carries the worker's figures.
                figures = server.stats if options.metrics is not None else None
                nursery.start_soon(link.heartbeat, HEARTBEAT_INTERVAL, figures)
                start_orphan_watchdog(server.grace)

                async def stop_when_orphaned() -> None:
                    await link.wait_orphaned(on_retire=server.retire)
                    if not server.shutting_down:
                        logger.warning("the supervisor is gone: shutting down")
                        server.shutdown()

                nursery.start_soon(stop_when_orphaned)
            else:
                if options.metrics is not None:
                    # prometheus_client and h11 are loaded only for --metrics.
                    from trioecho.workers.metrics import metrics_registry, open_metrics

                    registry = metrics_registry(server.stats)
                    try:
                        await open_metrics(
                            nursery,
                            options.metrics,
                            registry,
                            lambda: bool(server.stats()["serving"]),
                        )
                    except OSError as exc:
                        where = format_address(options.metrics)
                        print(
                            f"trioecho: cannot serve --metrics on {where}: {exc.strerror or exc}",
                            file=sys.stderr,
                        )
                        server.shutdown(grace=0)
                        await server.wait_stopped()
                        return 1
                print_listening([listener.socket.getsockname() for listener in listeners])
                notifier.ready("serving")
                nursery.start_soon(notifier.keep_watchdog_fed)

            actions = single_process_signals(options, server, notifier)
            nursery.start_soon(act_on_signals, signals, actions)
            await server.wait_stopped()
            if worker is not None and options.metrics is not None:
                await link.send_heartbeat(server.stats())  # the last figures, for the totals
            nursery.cancel_scope.cancel()
    return 0
