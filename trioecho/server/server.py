"""A TCP message server on Trio with the handler model of ``socketserver``:
:class:`MessageServer`, its life from binding to a drained stop.

Each connection gets one task in the connections' nursery (accepted by
``trio.serve_listeners``) and a :class:`MessageStream`, and is served by
:func:`~trioecho.server.connection.serve_connection` (PROXY header, TLS,
the handler, the ending and its counts).  The handler is either a
:class:`BaseRequestHandler` subclass, as in the seed tutorial::

    class Echo(BaseRequestHandler):
        async def handle(self):
            async for message in self.request:
                await self.request.send_message(message)

or a plain ``async def handler(stream)`` that takes the message stream.  A
handler that raises closes only its connection; every closed connection is
counted by its :class:`~trioecho.reasons.CloseReason` (``closed_by_reason``;
a handler's own reason counts as ``other``).

Its settings, each with its meaning, default and check, are a
:class:`~trioecho.server.config.ServerConfig`: the limits
(``max_connections``: at the limit the server stops accepting until a slot
frees, and says so, see :class:`~trioecho.server.listeners.ConnectionSlots`;
``idle_timeout``; the send rule, ``send_timeout`` and ``min_send_rate``;
the framer's ``max_frame``), TCP keepalive (a peer that vanishes without a
FIN or a reset is found within 2 minutes of its last packet:
:mod:`trioecho.io.keepalive`), ``reuse_port`` (several processes,
``trioecho --workers N``, listen on one port and the kernel spreads the
connections over them), TLS and the PROXY protocol.

It stops (:mod:`trioecho.server.stopping`) by :meth:`MessageServer.shutdown`
(stop accepting, let every connection finish the messages it has already
received, wait up to ``grace`` seconds for the handlers to return, then
cancel the rest), :meth:`MessageServer.drain` (not ready, accepting for
``drain_delay`` more seconds, then the connections served on for up to
``grace`` seconds before that shutdown) or :meth:`MessageServer.retire`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import ssl
from typing import Any, cast

import trio

from trioecho.framing.config import FramingConfig
from trioecho.framing.starttls import StartTLS
from trioecho.io.budget import MemoryBudget, memory_budget_of, return_freed_memory
from trioecho.io.keepalive import KeepAlive, apply_keepalive
from trioecho.io.readiness import Readiness, resolve_readiness
from trioecho.logtext import format_address, format_listen_address
from trioecho.reasons import CLOSE_REASONS
from trioecho.server import config as _config
from trioecho.server.accept import ProxyProtocolConfig
from trioecho.server.config import ServerConfig
from trioecho.server.connection import LINGER_SECONDS, serve_connection
from trioecho.server.endings import totals
from trioecho.server.handler import Handler, check_handler
from trioecho.server.listeners import (
    ConnectionSlots,
    LimitedListener,
    open_reuse_port_listeners,
    open_unix_listener,
    remove_unix_socket,
)
from trioecho.server.stopping import Stopping
from trioecho.stream.message_stream import MessageStream

__all__ = ["LINGER_SECONDS", "MessageServer"]

logger = logging.getLogger("trioecho.server")


def __getattr__(name: str) -> Any:
    """The ``DEFAULT_*`` settings, which live in :mod:`trioecho.server.config`,
    for code that still imports them from here."""
    if name.startswith("DEFAULT_") and hasattr(_config, name):
        return getattr(_config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The keywords' defaults: ServerConfig's fields', as written (not as checked).
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(ServerConfig)}
_SETTINGS = frozenset(_DEFAULTS)


def _check_config_alone(config: object, settings: dict[str, Any]) -> None:
    """``config`` must be a :class:`ServerConfig`, and the keywords beside it
    left at their defaults: the settings come from one place."""
    if not isinstance(config, ServerConfig):
        raise TypeError(f"config must be a ServerConfig, not {type(config).__name__}")
    given = [
        name
        for name, value in settings.items()
        if value is not _DEFAULTS[name] and value != _DEFAULTS[name]
    ]
    if given:
        raise TypeError(
            f"MessageServer takes a ServerConfig or keyword settings, not both: {', '.join(given)} "
            "given with the config (use config.replace(...))"
        )


class MessageServer(Stopping):
    """Serves framed messages over TCP, one Trio task per connection.

    ``await nursery.start(server.serve)`` binds, starts serving and returns
    the bound ``trio.SocketListener`` list; :attr:`port` is then the port
    bound (use port 0 for a free one).  ``serve`` returns after
    :meth:`shutdown` has drained the connections.

    ``handler`` is a :class:`BaseRequestHandler` subclass (``async def
    handle()``, or ``def respond(message)``), or an ``async def
    handler(stream)``.  Every other keyword is the :class:`ServerConfig`
    field of the same name, with its default and meaning there: ``host``,
    ``port`` (default 127.0.0.1:9999), ``framing`` (default lines), the
    limits, ``keepalive``, ``grace``, the listening socket (``backlog``,
    ``reuse_port``, ``unix_path``, ``unix_mode``), ``proxy_protocol``,
    ``ssl_context``, ``handshake_timeout``, ``memory_budget`` and
    ``readiness``.  The keywords build a :class:`ServerConfig`; or give one
    as ``config`` (``MessageServer(handler, config)``) and no keyword
    beside it.  Every argument is checked then: a wrong one raises
    ``TypeError`` or ``ValueError`` naming it, never an error at the first
    connection.
    """

    def __init__(
        self,
        handler: Handler,
        config: ServerConfig | None = None,
        *,
        host: str | None = ServerConfig.host,
        port: int = ServerConfig.port,
        framing: FramingConfig | str | None = ServerConfig.framing,
        max_connections: int = ServerConfig.max_connections,
        idle_timeout: float | None = ServerConfig.idle_timeout,
        send_timeout: float | None = ServerConfig.send_timeout,
        min_send_rate: float | None = ServerConfig.min_send_rate,
        keepalive: KeepAlive | str | None = ServerConfig.keepalive,
        grace: float = ServerConfig.grace,
        drain_delay: float = ServerConfig.drain_delay,
        backlog: int | None = ServerConfig.backlog,
        reuse_port: bool = ServerConfig.reuse_port,
        proxy_protocol: ProxyProtocolConfig | None = ServerConfig.proxy_protocol,
        ssl_context: ssl.SSLContext | None = ServerConfig.ssl_context,
        handshake_timeout: float | None = ServerConfig.handshake_timeout,
        starttls: StartTLS | None = ServerConfig.starttls,
        memory_budget: MemoryBudget | int | None = ServerConfig.memory_budget,
        readiness: Readiness | None = ServerConfig.readiness,
        unix_path: str | None = ServerConfig.unix_path,
        unix_mode: int = ServerConfig.unix_mode,
    ) -> None:
        # The keywords, by name (read first: no other local is set yet).
        settings = {name: value for name, value in locals().items() if name in _SETTINGS}
        self.handler = check_handler(handler)
        if config is None:
            config = ServerConfig(**settings)
        else:
            _check_config_alone(config, settings)
        self._configure(config)

    @classmethod
    def from_config(cls, handler: Handler, config: ServerConfig) -> MessageServer:
        """``MessageServer(handler, config)``: a server for ``handler`` with
        the settings of ``config``."""
        return cls(handler, config)

    def _configure(self, config: ServerConfig) -> None:
        """Take the settings of ``config`` and set up the server's state."""
        self.config = config
        self.unix_path = config.unix_path
        self.unix_mode = config.unix_mode
        self.host = config.host
        self._port = config.port
        self.framing = config.framing_config
        self.max_connections = config.max_connections
        self.idle_timeout = config.idle_timeout
        self.send_timeout = config.send_timeout
        self.min_send_rate = config.min_send_rate
        self.keepalive = cast(KeepAlive | None, config.keepalive)
        self.handshake_timeout = config.handshake_timeout
        self.grace = config.grace  # lowered by shutdown(grace=)
        self.drain_delay = config.drain_delay
        self.backlog = config.backlog
        self.reuse_port = config.reuse_port
        self.proxy_protocol = config.proxy_protocol
        self.ssl_context = config.ssl_context  # replaced on a reload (SIGHUP)
        self.budget = memory_budget_of(config.memory_budget)
        self.readiness = resolve_readiness(config.readiness)
        self.listeners: list[trio.SocketListener] = []
        self._addresses: list[Any] = []  # the listeners', kept after they close
        # Its counts (endings.ServedCounts): the messages and bytes over all
        # closed connections, closes by CloseReason value.
        self.connections_served = 0
        self.messages_received = 0
        self.messages_sent = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.closed_by_reason: dict[str, int] = dict.fromkeys(CLOSE_REASONS, 0)
        self._limited: list[LimitedListener] = []
        self._slots = ConnectionSlots(self.max_connections)
        self._streams: set[MessageStream] = set()
        # Connections still reading a PROXY header or doing a TLS handshake:
        # shutdown cancels them at once (they have no message to finish).
        self._setting_up: set[trio.CancelScope] = set()
        self._init_stopping()

    def __repr__(self) -> str:
        if self.addresses:
            where = format_listen_address(self.addresses[0])
        elif self.unix_path is not None:
            where = f"unix:{self.unix_path}"
        else:
            where = f"port {self.port}"
        state = "stopped" if self._stopped.is_set() else "serving" if self.listeners else "new"
        if self.shutting_down and state == "serving":
            state = "shutting down"
        return (
            f"<MessageServer {state} on {where}, framing={self.framing.framing!r}, "
            f"{self.active_connections} connections>"
        )

    @property
    def port(self) -> int:
        """The port given, or once listening, the port bound (port 0 asks for a free one)."""
        if self._addresses and isinstance(self._addresses[0], tuple):
            return int(self._addresses[0][1])
        return self._port

    @property
    def addresses(self) -> list[Any]:
        """The addresses listened on (empty before :meth:`serve` binds)."""
        return list(self._addresses)

    @property
    def active_connections(self) -> int:
        return len(self._streams)

    # -- running -------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind ``host``:``port`` (or ``unix_path``) and serve until :meth:`shutdown`."""
        if self.unix_path is not None:
            listener = await open_unix_listener(
                self.unix_path, mode=self.unix_mode, backlog=self.backlog
            )
            inode = os.stat(self.unix_path).st_ino
            try:
                await self.serve_listeners([listener], task_status=task_status)
            finally:
                remove_unix_socket(self.unix_path, inode)
            return
        if self.reuse_port:
            listeners = await open_reuse_port_listeners(
                self._port, host=self.host, backlog=self.backlog
            )
        else:
            listeners = await trio.open_tcp_listeners(
                self._port, host=self.host, backlog=self.backlog
            )
        await self.serve_listeners(listeners, task_status=task_status)

    async def serve_listeners(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
        inherited: bool = False,
    ) -> None:
        """Serve on listeners the caller opened (they are closed on return).
        ``inherited``: the listening sockets outlive this process (systemd's
        socket activation, a descriptor passed in): a stop leaves them as
        they are, the connections queued then to the next process, rather
        than refuse new connections on them (:mod:`trioecho.io.refusing`)."""
        self.listeners = listeners
        self._listeners_inherited = inherited
        for listener in listeners:  # accepted sockets inherit the options
            apply_keepalive(listener.socket, self.keepalive, self.send_timeout)
        self._addresses = [listener.socket.getsockname() for listener in listeners]
        limited = self._limited = [LimitedListener(listener, self._slots) for listener in listeners]
        try:
            async with trio.open_nursery() as watchdog:
                if self.idle_timeout is not None:
                    watchdog.start_soon(self._expire_idle_connections, self.idle_timeout)
                watchdog.start_soon(return_freed_memory, self.budget)
                watchdog.start_soon(self._stop_accepting_after_drain_delay)
                await self._serve_until_drained(listeners, limited, task_status)
                watchdog.cancel_scope.cancel()
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            self._stopped.set()
        served = self.connections_served
        logger.info(
            "stopped after serving %d connection%s: %d messages received, %d sent",
            served,
            "" if served == 1 else "s",
            self.messages_received,
            self.messages_sent,
        )

    async def _serve_until_drained(
        self,
        listeners: list[trio.SocketListener],
        limited: list[LimitedListener],
        task_status: trio.TaskStatus[list[trio.SocketListener]],
    ) -> None:
        """Accept with ``trio.serve_listeners`` until shutdown() cancels it,
        one task per connection in the connections' nursery; then drain."""
        async with trio.open_nursery() as connections:
            self._connections_scope = connections.cancel_scope
            async with trio.open_nursery() as accepting:
                await accepting.start(
                    functools.partial(
                        trio.serve_listeners,
                        functools.partial(serve_connection, self),
                        limited,
                        handler_nursery=connections,
                    )
                )
                for listener in listeners:
                    logger.debug("listening on %s", format_address(listener.socket.getsockname()))
                task_status.started(listeners)
                await self._accepting_stopped.wait()
                if self._closing_for_good and self.grace > 0 and not self._listeners_inherited:
                    await self._take_queued_connections(listeners)
                accepting.cancel_scope.cancel()
            self._slots.stop()
            for listener in listeners:
                await listener.aclose()
            if not self.shutting_down:  # retired or drained: the connections run on
                await self._let_connections_finish()
            self._shutdown_requested.set()
            await self._drain()

    async def _expire_idle_connections(self, idle_timeout: float) -> None:
        """Enforce ``idle_timeout`` for every connection from this one task
        (see :meth:`MessageStream.hand_over_deadlines
        <trioecho.stream.message_stream.MessageStream.hand_over_deadlines>`):
        it fires within a tenth of the timeout (at most 1 s) after it is due."""
        period = min(1.0, max(idle_timeout / 10, 0.01))
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            for stream in self._streams:
                stream.expire_if_idle(now)

    def _stream_opened(self, stream: MessageStream) -> None:
        """A connection is set up: its stream is open (and told to stop
        receiving at once if the server is shutting down)."""
        self._streams.add(stream)
        self.connections_served += 1
        if self.shutting_down:
            stream.stop_receiving()

    def _stream_closed(self, stream: MessageStream) -> None:
        """A connection's stream is closed and counted; the last one ends a drain."""
        self._streams.discard(stream)
        self._streams_changed.set()
        if self.shutting_down and not self._streams:
            self._all_closed.set()

    def stats(self) -> dict[str, Any]:
        """The server's figures now, open connections included, as plain
        data (for metrics; ``closed``: by :data:`~trioecho.reasons.CLOSE_REASONS`).
        ``accepting_paused`` is 1 while all ``max_connections`` are open
        (or accepting waits for file descriptors), else 0."""
        return {
            **totals(self, list(self._streams)),
            "memory_budget_used": self.budget.used,
            "memory_budget_limit": self.budget.limit,
            "accept_pauses": sum(listener.pauses for listener in self._limited),
            "accepting_paused": int(
                self._slots.paused or any(listener.short_of_resource for listener in self._limited)
            ),
            "serving": int(
                bool(self.listeners) and not self._accepting_stopped.is_set() and not self._draining
            ),
        }
