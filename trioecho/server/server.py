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

Graceful shutdown (:meth:`MessageServer.shutdown`): stop accepting, let every
connection finish the messages it has already received, wait up to ``grace``
seconds for the handlers to return, then cancel the rest and close every
connection.
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


class MessageServer:
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
        backlog: int | None = ServerConfig.backlog,
        reuse_port: bool = ServerConfig.reuse_port,
        proxy_protocol: ProxyProtocolConfig | None = ServerConfig.proxy_protocol,
        ssl_context: ssl.SSLContext | None = ServerConfig.ssl_context,
        handshake_timeout: float | None = ServerConfig.handshake_timeout,
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
        self._shutdown_requested = trio.Event()
        self._accepting_stopped = trio.Event()  # by shutdown() or retire()
        self._streams_changed = trio.Event()  # a connection closed, or shutdown()
        self._all_closed = trio.Event()
        self._stopped = trio.Event()
        self._connections_scope: trio.CancelScope | None = None

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

    @property
    def shutting_down(self) -> bool:
        return self._shutdown_requested.is_set()

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
    ) -> None:
        """Serve on listeners the caller opened (they are closed on return)."""
        self.listeners = listeners
        for listener in listeners:  # accepted sockets inherit the options
            apply_keepalive(listener.socket, self.keepalive, self.send_timeout)
        self._addresses = [listener.socket.getsockname() for listener in listeners]
        limited = self._limited = [LimitedListener(listener, self._slots) for listener in listeners]
        try:
            async with trio.open_nursery() as watchdog:
                if self.idle_timeout is not None:
                    watchdog.start_soon(self._expire_idle_connections, self.idle_timeout)
                watchdog.start_soon(return_freed_memory, self.budget)
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
                accepting.cancel_scope.cancel()
            self._slots.stop()
            for listener in listeners:
                await listener.aclose()
            if not self.shutting_down:  # retired: the connections run on for a while
                await self._let_connections_finish()
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

    def retire(self) -> None:
        """Stop accepting, and let the open connections run on as usual for
        up to ``grace`` seconds; those still open then are shut down as by
        :meth:`shutdown` (which may also be called at any time).  For a
        worker replaced by a rolling reload: the listening socket it shares
        with the other workers keeps its queued connections for them."""
        if not self._accepting_stopped.is_set():
            logger.info(
                "retiring: accepting stopped, %d connections may run on for %ss",
                len(self._streams),
                self.grace,
            )
        self._accepting_stopped.set()

    async def _let_connections_finish(self) -> None:
        with trio.move_on_after(self.grace):
            while self._streams and not self.shutting_down:
                self._streams_changed = trio.Event()
                await self._streams_changed.wait()

    def shutdown(self, *, grace: float | None = None) -> None:
        """Stop gracefully: see the module docstring.  Safe to call more than once;
        a later call with a shorter ``grace`` (0: now) cuts the wait short."""
        if grace is not None:
            self.grace = min(self.grace, grace)
            if self.grace == 0 and self._shutdown_requested.is_set():
                self._cancel_connections()
        self._shutdown_requested.set()
        self._accepting_stopped.set()
        self._streams_changed.set()

    async def wait_stopped(self) -> None:
        """Return once :meth:`serve` has shut down."""
        await self._stopped.wait()

    async def _drain(self) -> None:
        for setup in self._setting_up:
            setup.cancel()
        streams = list(self._streams)
        logger.info("shutting down: %d connections finishing", len(streams))
        for stream in streams:
            stream.stop_receiving()
        if not self._streams:
            return
        with trio.move_on_after(self.grace):
            await self._all_closed.wait()
            return
        self._cancel_connections()

    def _cancel_connections(self) -> None:
        if self._streams:
            logger.warning("grace period over: cancelling %d connections", len(self._streams))
        if self._connections_scope is not None:
            self._connections_scope.cancel()

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
            "serving": int(bool(self.listeners) and not self._accepting_stopped.is_set()),
        }
