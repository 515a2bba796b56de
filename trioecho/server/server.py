"""A TCP message server on Trio with the handler model of ``socketserver``.

Each connection gets one task in the connections' nursery (accepted by
``trio.serve_listeners``) and a :class:`MessageStream`.  The handler is
either a :class:`BaseRequestHandler` subclass, as in the seed tutorial::

    class Echo(BaseRequestHandler):
        async def handle(self):
            async for message in self.request:
                await self.request.send_message(message)

or a plain ``async def handler(stream)`` that takes the message stream.

A handler that raises is logged with the peer address and only its
connection closes: a peer's failure (:class:`ConnectionClosedError`, a framing
error, a timeout) as one line, anything else (a bug: Trio's resource errors
from the handler's own objects too) as one ERROR with its traceback, counted
as ``handler_error``.  Whatever a handler raises or sets as its
``close_reason``, the server goes on serving the others.

Every closed connection is counted by its :class:`~trioecho.reasons.CloseReason`
(``closed_by_reason``; a handler's own reason counts as ``other``).

Limits: ``max_connections`` (at the limit the server stops
accepting until a slot frees, and says so: see
:class:`~trioecho.server.listeners.ConnectionSlots`), ``idle_timeout`` (no complete message for that
many seconds closes the connection), ``send_timeout`` and ``min_send_rate``
(the send rule of :mod:`~trioecho.io.send_deadline`: a peer is closed when
a send to it makes no progress for ``send_timeout`` seconds, or when, past
them, it reads below ``min_send_rate`` bytes a second) and the framer's
``max_frame``.

A peer that vanishes without a FIN or a reset is found by TCP keepalive
(``keepalive``, default 60:10:6: within 2 minutes of its last packet, also
with no ``idle_timeout``) and, with bytes in flight to it, by
``TCP_USER_TIMEOUT`` (the keepalive bound, lifted while a send waits):
:mod:`trioecho.io.keepalive`.

Before the handler runs, :mod:`trioecho.server.accept` reads a PROXY protocol header
(``proxy_protocol``), which makes ``client_address`` the real client behind a
load balancer, and does the TLS handshake (``ssl_context``).  A connection
that fails either is logged and closed; the others never notice.

``reuse_port=True`` opens the listening sockets with ``SO_REUSEPORT``, so
that several processes (``trioecho --workers N``) can listen on one port and
the kernel spreads the connections over them.

Graceful shutdown (:meth:`MessageServer.shutdown`): stop accepting, let every
connection finish the messages it has already received, wait up to ``grace``
seconds for the handlers to return, then cancel the rest and close every
connection.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any, cast

import trio

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport there
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

from trioecho.errors import (
    ProxyProtocolError,
    TLSHandshakeError,
)
from trioecho.framing.config import FramingConfig
from trioecho.io.budget import MemoryBudget, memory_budget_of, return_freed_memory
from trioecho.io.keepalive import DEFAULT_KEEPALIVE, KeepAlive, apply_keepalive
from trioecho.io.readiness import Readiness, resolve_readiness
from trioecho.logtext import format_address, format_listen_address
from trioecho.reasons import CLOSE_REASONS, CloseReason, counted_as
from trioecho.server.accept import DEFAULT_HANDSHAKE_TIMEOUT, ProxyProtocolConfig, open_connection
from trioecho.server.config import (
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MIN_SEND_RATE,
    DEFAULT_PORT,
    DEFAULT_SEND_TIMEOUT,
    ServerConfig,
)
from trioecho.server.endings import (
    ConnectionName,
    close_reason_of,
    log_access,
    log_handler_error,
    tls_version,
)
from trioecho.server.handler import BaseRequestHandler, Handler, check_handler
from trioecho.server.listeners import (
    DEFAULT_UNIX_MODE,
    ConnectionSlots,
    LimitedListener,
    open_reuse_port_listeners,
    open_unix_listener,
    remove_unix_socket,
)
from trioecho.stream.message_stream import (
    MessageStream,
    receive_size_for,
)

__all__ = [
    "CLOSE_REASONS",
    "DEFAULT_GRACE",
    "DEFAULT_HOST",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MIN_SEND_RATE",
    "DEFAULT_PORT",
    "DEFAULT_SEND_TIMEOUT",
    "MessageServer",
]

logger = logging.getLogger("trioecho.server")
# One line per connection opened and closed, at INFO: `trioecho -v` shows them.
connection_logger = logging.getLogger("trioecho.connections")
access_logger = logging.getLogger("trioecho.access")

# Closing a socket with unread input makes the kernel send a reset, which can
# destroy replies still in flight.  So a connection is closed by sending FIN,
# then reading and discarding what the peer still sends until its end, while
# it takes its replies by the send rule, and this long more once it has them
# (see Transport.close_gracefully).
LINGER_SECONDS = 2.0


class MessageServer:
    """Serves framed messages over TCP, one Trio task per connection.

    ``await nursery.start(server.serve)`` binds, starts serving and returns
    the bound ``trio.SocketListener`` list; :attr:`port` is then the port
    bound (use port 0 for a free one).  ``serve`` returns after
    :meth:`shutdown` has drained the connections.

    Every argument is checked here: a wrong one raises ``TypeError`` or
    ``ValueError`` naming it, never an error at the first connection.

    Parameters:

    ``handler``
        a :class:`BaseRequestHandler` subclass (``async def handle()``, or
        ``def respond(message)``), or an ``async def handler(stream)``.
    ``host``, ``port``
        where to listen (default 127.0.0.1:9999); ``host=None`` or ``""``:
        every interface; ``port=0``: a free port.
    ``framing``
        a :class:`FramingConfig` or a framing name (``"len"``); default lines.
    ``max_connections``
        at the limit, stop accepting until a connection closes.
    ``idle_timeout``
        seconds without a complete message before the connection is closed
        (None: no limit).
    ``send_timeout``, ``min_send_rate``
        the send rule (:mod:`~trioecho.io.send_deadline`): a send waiting
        for its peer to read is cut, and the connection closed
        (:class:`SlowReaderError`, counted as ``slow_reader``), when the
        peer has taken none of it for ``send_timeout`` seconds (the deadline
        restarts each time it takes more: a slow but steady reader is never
        cut), or when, past ``send_timeout`` seconds, it has averaged less
        than ``min_send_rate`` bytes a second since the send blocked (a
        trickling reader cannot hold its slot for ever).  The lossless
        close at the end of a connection follows the same rule.  Defaults
        30 s and 1024 bytes a second; None: no limit, no floor (without a
        ``send_timeout`` there is neither).
    ``keepalive``
        TCP keepalive for accepted connections (set on the listening
        sockets, which they inherit): a :class:`KeepAlive`, its text
        ``"IDLE[:INTERVAL[:COUNT]]"``, or None (or ``"off"``) for none;
        default 60:10:6, a dead idle peer freed within 2 minutes of its last
        packet.  ``TCP_USER_TIMEOUT`` comes with it: the keepalive bound, or
        ``send_timeout`` without keepalive (:mod:`trioecho.io.keepalive`).
    ``grace``
        seconds connections get to finish on :meth:`shutdown`.
    ``backlog``
        the listening sockets' accept queue (default: Trio's, the
        system's maximum).
    ``reuse_port``
        open the listening sockets with ``SO_REUSEPORT`` (several processes
        on one port).
    ``proxy_protocol``
        a :class:`ProxyProtocolConfig`: read a PROXY header first.
    ``ssl_context``, ``handshake_timeout``
        a server-side ``ssl.SSLContext`` to speak TLS, and the seconds a
        handshake may take.
    ``memory_budget``
        bytes (an int) or a :class:`MemoryBudget` that unfinished messages
        and unsent replies may hold over all connections.
    ``readiness``
        ``"hub"`` or ``"trio"``: how plain TCP connections wait (default:
        ``$TRIOECHO_READINESS``, else the hub).
    ``unix_path``, ``unix_mode``
        listen on this unix socket instead of ``host``:``port``, its file
        created with ``unix_mode`` (default 0o660) and removed at stop; a
        stale socket file is replaced, one a live server uses refused.  A
        unix peer's ``client_address`` (and log name) is ``"unix:PATH"``;
        PROXY headers are taken from every unix peer (the file's mode
        decides who may connect).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str | None = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        framing: FramingConfig | str | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
        min_send_rate: float | None = DEFAULT_MIN_SEND_RATE,
        keepalive: KeepAlive | str | None = DEFAULT_KEEPALIVE,
        grace: float = DEFAULT_GRACE,
        backlog: int | None = None,
        reuse_port: bool = False,
        proxy_protocol: ProxyProtocolConfig | None = None,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        memory_budget: MemoryBudget | int | None = None,
        readiness: Readiness | None = None,
        unix_path: str | None = None,
        unix_mode: int = DEFAULT_UNIX_MODE,
    ) -> None:
        self.handler = check_handler(handler)
        self._configure(
            ServerConfig(
                host=host,
                port=port,
                framing=framing,
                max_connections=max_connections,
                idle_timeout=idle_timeout,
                send_timeout=send_timeout,
                min_send_rate=min_send_rate,
                keepalive=keepalive,
                grace=grace,
                backlog=backlog,
                reuse_port=reuse_port,
                proxy_protocol=proxy_protocol,
                ssl_context=ssl_context,
                handshake_timeout=handshake_timeout,
                memory_budget=memory_budget,
                readiness=readiness,
                unix_path=unix_path,
                unix_mode=unix_mode,
            )
        )

    @classmethod
    def from_config(cls, handler: Handler, config: ServerConfig) -> MessageServer:
        """A server for ``handler`` with the settings of ``config``."""
        if not isinstance(config, ServerConfig):
            raise TypeError(f"config must be a ServerConfig, not {type(config).__name__}")
        self = cls.__new__(cls)
        self.handler = check_handler(handler)
        self._configure(config)
        return self

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
        self.connections_served = 0
        self.messages_received = 0  # over all closed connections
        self.messages_sent = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        # Closes by CloseReason value (a handler's own reason counts as "other").
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
                        self._serve_connection,
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
        (see :func:`~trioecho.stream.message_stream.hand_over_deadlines`): it fires within a tenth
        of the timeout (at most 1 s) after it is due."""
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

    # -- one connection ----------------------------------------------------

    async def _serve_connection(self, socket_stream: trio.SocketStream) -> None:
        began = trio.current_time()
        try:
            try:
                peer = socket_stream.socket.getpeername()
            except OSError:  # reset before we got here
                return
            if isinstance(peer, str | bytes) and not peer:  # an unnamed unix peer
                peer = f"unix:{self.unix_path or socket_stream.socket.getsockname()}"
            set_up = await self._set_up(socket_stream, peer, began)
            if set_up is None:
                return
            connection, client = set_up
            stream = self._open_stream(connection)
            self._streams.add(stream)
            self.connections_served += 1
            if self.shutting_down:
                stream.stop_receiving()
            connection_logger.info("%s: connected", ConnectionName(client, peer))
            tls = tls_version(connection)  # while it is open: a closed one has none
            try:
                # The handler's life, in this frame (an idle connection keeps
                # one coroutine less, and this frame as few slots as it can:
                # the close reason lives on the stream): setup, handle,
                # finish, or the call.
                if isinstance(self.handler, type) and issubclass(self.handler, BaseRequestHandler):
                    request_handler = self.handler(stream, client, self)
                    await request_handler.setup()
                    try:
                        await request_handler.handle()
                    finally:
                        await request_handler.finish()
                else:
                    await cast("Callable[[MessageStream], Awaitable[None]]", self.handler)(stream)
            except Exception as exc:
                self._handler_failed(stream, exc, ConnectionName(client, peer))
            except BaseExceptionGroup as group:
                # A handler's nursery cancelled by the grace period's end,
                # with errors besides: those are the handler's; the
                # cancellation goes on (an error would stop serve()).
                cancelled, errors = group.split(trio.Cancelled)
                if cancelled is None or not isinstance(errors, ExceptionGroup):
                    raise
                self._handler_failed(stream, errors, ConnectionName(client, peer))
                raise cancelled from None
            finally:
                await self._close(stream, (client, peer, tls, began))
            connection_logger.info("%s: closed", ConnectionName(client, peer))
        finally:
            await trio.aclose_forcefully(socket_stream)  # idempotent: closed already but on errors
            self._slots.release()

    def _count_unset_up(self, peer: Any, began: float, reason: CloseReason) -> None:
        """A connection closed before its handler ran (PROXY, TLS, reset)."""
        self.closed_by_reason[reason.value] += 1
        if access_logger.isEnabledFor(logging.INFO):
            log_access(peer, peer, None, began, None, reason)

    def _handler_failed(self, stream: MessageStream, exc: Exception, where: ConnectionName) -> None:
        """A handler raised: its stream's close reason, and the log line
        (see :func:`close_reason_of`)."""
        stream.close_reason = close_reason_of(exc, shutting_down=self.shutting_down)
        log_handler_error(exc, where)

    async def _close(
        self, stream: MessageStream, record: tuple[Any, Any, str | None, float]
    ) -> None:
        """Close the stream of a connection whose handler ran, and account
        for it: the server's counters, its close reason (the stream's, or
        what ended it here), the access record of ``(client, peer, tls,
        began)``, and the end of a drain."""
        try:
            await _linger_close(stream)
        finally:
            self._count_closed(stream, record)

    def _count_closed(
        self, stream: MessageStream, record: tuple[Any, Any, str | None, float]
    ) -> None:
        """Account for a closed connection.  Cannot raise, whatever the
        handler left on the stream: a reason of its own counts as ``other``."""
        reason = stream.close_reason
        if reason is None:
            reason = CloseReason.SHUTDOWN if self.shutting_down else CloseReason.HANDLER_RETURNED
            stream.close_reason = reason
        self._streams.discard(stream)
        self._streams_changed.set()
        self.messages_received += stream.messages_received
        self.messages_sent += stream.messages_sent
        self.bytes_received += stream.bytes_received
        self.bytes_sent += stream.bytes_sent
        self.closed_by_reason[counted_as(reason).value] += 1
        if access_logger.isEnabledFor(logging.INFO):
            log_access(*record, stream, reason)
        if self.shutting_down and not self._streams:
            self._all_closed.set()

    def stats(self) -> dict[str, Any]:
        """The server's figures now, open connections included, as plain
        data (for metrics; ``closed``: by :data:`CLOSE_REASONS`).
        ``accepting_paused`` is 1 while all ``max_connections`` are open
        (or accepting waits for file descriptors), else 0."""
        streams = list(self._streams)
        for stream in streams:
            stream.sync_counters()  # what the C pump counted so far
        return {
            "connections_open": len(streams),
            "connections_total": self.connections_served,
            "closed": dict(self.closed_by_reason),
            "messages_received": self.messages_received
            + sum(stream.messages_received for stream in streams),
            "messages_sent": self.messages_sent + sum(stream.messages_sent for stream in streams),
            "bytes_received": self.bytes_received
            + sum(stream.bytes_received for stream in streams),
            "bytes_sent": self.bytes_sent + sum(stream.bytes_sent for stream in streams),
            "memory_budget_used": self.budget.used,
            "memory_budget_limit": self.budget.limit,
            "accept_pauses": sum(listener.pauses for listener in self._limited),
            "accepting_paused": int(
                self._slots.paused or any(listener.short_of_resource for listener in self._limited)
            ),
            "serving": int(bool(self.listeners) and not self._accepting_stopped.is_set()),
        }

    def _open_stream(self, connection: trio.abc.Stream) -> MessageStream:
        """The connection's message stream: its transport (deadlines handed
        over to the watchdog), the server's framing, a memory account."""
        stream = MessageStream(
            connection,
            self.framing,
            receive_size=receive_size_for(self.framing.framing),
            idle_timeout=self.idle_timeout,
            send_timeout=self.send_timeout,
            min_send_rate=self.min_send_rate,
            readiness=self.readiness,
            account=self.budget.open_account(),
        )
        stream.hand_over_deadlines()
        return stream

    async def _set_up(
        self, socket_stream: trio.SocketStream, peer: Any, began: float
    ) -> tuple[trio.abc.Stream, Any] | None:
        """PROXY header and TLS handshake (:mod:`trioecho.server.accept`): the stream
        to serve and the client address, or None (logged) to close."""
        where = format_address(peer)
        setup = trio.CancelScope()
        self._setting_up.add(setup)
        try:
            with setup:
                if self.shutting_down:
                    setup.cancel()
                return await open_connection(
                    socket_stream,
                    peer,
                    proxy=self.proxy_protocol,
                    ssl_context=self.ssl_context,
                    handshake_timeout=self.handshake_timeout,
                )
            logger.info("%s: closed before it was set up: shutting down", where)
            self._count_unset_up(peer, began, CloseReason.SHUTDOWN)
        except (ProxyProtocolError, TLSHandshakeError) as exc:
            logger.warning("%s: closing: %s", where, exc)
            self._count_unset_up(peer, began, close_reason_of(exc))
        except (OSError, trio.BrokenResourceError) as exc:
            logger.info("%s: connection lost before it was set up: %s", where, exc)
            self._count_unset_up(peer, began, CloseReason.RESET)
        finally:
            self._setting_up.discard(setup)
        return None


async def _linger_close(stream: MessageStream) -> None:
    """Close without losing replies in flight (see ``Transport.close_gracefully``):
    a peer that keeps reading gets them all, by the stream's send rule
    (``send_timeout``, ``min_send_rate``) as a send would, within the grace
    period on shutdown; then ``LINGER_SECONDS`` for its end."""
    await stream.close_gracefully(LINGER_SECONDS)
