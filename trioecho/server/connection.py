"""One connection's life on a :class:`~trioecho.server.server.MessageServer`,
from its accept to its end: :func:`serve_connection`, the task
``trio.serve_listeners`` starts for each accepted connection, takes it
through these stages.

1. The peer's address.  A connection reset before it is read is dropped
   uncounted; an unnamed unix peer is named ``unix:PATH``.
2. The PROXY header and the TLS handshake (:mod:`trioecho.server.accept`).
   A connection that fails either is logged, counted (``proxy``, ``tls``,
   ``reset``; ``shutdown`` when the server stops meanwhile) and closed; the
   others never notice.
3. The message stream (:func:`open_stream`): the server's framing, send
   rule, readiness and memory budget, its idle deadline handed over to the
   server's watchdog.
4. The handler, run as :func:`~trioecho.server.handler.run_handler` runs
   it (setup, handle, finish; or the call).  What it
   raises is logged with the peer's address and closes only its connection:
   a peer's failure (:class:`~trioecho.errors.ConnectionClosedError`, a
   framing error, a timeout) as one line, anything else (a bug: Trio's
   resource errors from the handler's own objects too) as one ERROR with
   its traceback, counted as ``handler_error``.  Whatever a handler raises
   or sets as its ``close_reason``, the server goes on serving the others.
5. The ending: a close that loses no reply in flight, then the server's
   counts and the access record
   (:func:`~trioecho.server.endings.count_closed`).

These functions are the server's per-connection half: they keep its open
streams, the connections being set up and the connection slots as its own
methods do.  Nothing here runs per message.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import trio

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport there
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

from trioecho.errors import ProxyProtocolError, TLSHandshakeError
from trioecho.logtext import format_address
from trioecho.reasons import CloseReason
from trioecho.server.accept import open_connection
from trioecho.server.endings import (
    ConnectionName,
    TLSRecord,
    close_reason_of,
    count_closed,
    count_unset_up,
    log_handler_error,
    tls_record,
)
from trioecho.server.handler import BaseRequestHandler
from trioecho.stream.message_stream import MessageStream, receive_size_for

if TYPE_CHECKING:
    from trioecho.server.server import MessageServer

__all__ = ["LINGER_SECONDS", "open_stream", "serve_connection"]

logger = logging.getLogger("trioecho.server")
# One line per connection opened and closed, at INFO: `trioecho -v` shows them.
connection_logger = logging.getLogger("trioecho.connections")

# Closing a socket with unread input makes the kernel send a reset, which can
# destroy replies still in flight.  So a connection is closed by sending FIN,
# then reading and discarding what the peer still sends until its end, while
# it takes its replies by the send rule, and this long more once it has them
# (see Transport.close_gracefully).
LINGER_SECONDS = 2.0


async def serve_connection(server: MessageServer, socket_stream: trio.SocketStream) -> None:
    """Serve one accepted connection of ``server`` through every stage (see
    the module docstring).  Its socket is closed and its connection slot
    given back at the end, whatever happened."""
    began = trio.current_time()
    try:
        try:
            peer = socket_stream.socket.getpeername()
        except OSError:  # reset before we got here
            return
        if isinstance(peer, str | bytes) and not peer:  # an unnamed unix peer
            peer = f"unix:{server.unix_path or socket_stream.socket.getsockname()}"
        set_up = await _set_up(server, socket_stream, peer, began)
        if set_up is None:
            return
        connection, client = set_up
        stream = open_stream(server, connection)
        server._stream_opened(stream)
        connection_logger.info("%s: connected", ConnectionName(client, peer))
        tls = tls_record(connection)  # while it is open: a closed one has none
        try:
            # The handler's life, as run_handler() runs it, inlined: an idle
            # connection parks in this frame, and a call would keep one
            # coroutine more (measured: 275 bytes more RSS per idle
            # connection).  The frame keeps as few slots as it can: the
            # close reason lives on the stream.
            if isinstance(server.handler, type) and issubclass(server.handler, BaseRequestHandler):
                request_handler = server.handler(stream, client, server)
                await request_handler.setup()
                try:
                    await request_handler.handle()
                finally:
                    await request_handler.finish()
            else:
                await cast("Callable[[MessageStream], Awaitable[None]]", server.handler)(stream)
        except Exception as exc:
            _handler_failed(server, stream, exc, ConnectionName(client, peer))
        except BaseExceptionGroup as group:
            # A handler's nursery cancelled by the grace period's end,
            # with errors besides: those are the handler's; the
            # cancellation goes on (an error would stop serve()).
            cancelled, errors = group.split(trio.Cancelled)
            if cancelled is None or not isinstance(errors, ExceptionGroup):
                raise
            _handler_failed(server, stream, errors, ConnectionName(client, peer))
            raise cancelled from None
        finally:
            await _close(server, stream, (client, peer, tls, began))
        connection_logger.info("%s: closed", ConnectionName(client, peer))
    finally:
        await trio.aclose_forcefully(socket_stream)  # idempotent: closed already but on errors
        server._slots.release()


async def _set_up(
    server: MessageServer, socket_stream: trio.SocketStream, peer: Any, began: float
) -> tuple[trio.abc.Stream, Any] | None:
    """PROXY header and TLS handshake (:mod:`trioecho.server.accept`): the stream
    to serve and the client address, or None (logged and counted) to close.
    Shutdown cancels it at once (there is no message to finish yet)."""
    where = format_address(peer)
    setup = trio.CancelScope()
    server._setting_up.add(setup)
    try:
        with setup:
            if server.shutting_down:
                setup.cancel()
            return await open_connection(
                socket_stream,
                peer,
                proxy=server.proxy_protocol,
                ssl_context=server.ssl_context,
                handshake_timeout=server.handshake_timeout,
                starttls=server.config.starttls,
                readiness=server.readiness,
            )
        logger.info("%s: closed before it was set up: shutting down", where)
        count_unset_up(server, peer, began, CloseReason.SHUTDOWN)
    except TLSHandshakeError as exc:  # the peer's doing: no certificate, a bad one, not TLS
        logger.info("%s: closing: %s", where, exc)
        count_unset_up(server, peer, began, close_reason_of(exc))
    except ProxyProtocolError as exc:
        logger.warning("%s: closing: %s", where, exc)
        count_unset_up(server, peer, began, close_reason_of(exc))
    except (OSError, trio.BrokenResourceError) as exc:
        logger.info("%s: connection lost before it was set up: %s", where, exc)
        count_unset_up(server, peer, began, CloseReason.RESET)
    finally:
        server._setting_up.discard(setup)
    return None


def open_stream(server: MessageServer, connection: trio.abc.Stream) -> MessageStream:
    """The connection's message stream: its transport (deadlines handed
    over to the watchdog), the server's framing, a memory account."""
    stream = MessageStream(
        connection,
        server.framing,
        receive_size=receive_size_for(server.framing.framing),
        idle_timeout=server.idle_timeout,
        send_timeout=server.send_timeout,
        min_send_rate=server.min_send_rate,
        readiness=server.readiness,
        account=server.budget.open_account(),
    )
    stream.hand_over_deadlines()
    return stream


def _handler_failed(
    server: MessageServer, stream: MessageStream, exc: Exception, where: ConnectionName
) -> None:
    """A handler raised: its stream's close reason, and the log line
    (see :func:`~trioecho.server.endings.close_reason_of`)."""
    stream.close_reason = close_reason_of(exc, shutting_down=server.shutting_down)
    log_handler_error(exc, where)


async def _close(
    server: MessageServer, stream: MessageStream, record: tuple[Any, Any, TLSRecord | None, float]
) -> None:
    """Close the stream of a connection whose handler ran, without losing
    replies in flight (see ``Transport.close_gracefully``: a peer that keeps
    reading gets them all, by the stream's send rule, within the grace
    period on shutdown; then ``LINGER_SECONDS`` for its end), and account
    for it: its close reason (the stream's, or what ended it here), the
    server's counts, the access record of ``(client, peer, tls, began)``,
    and the end of a drain."""
    try:
        await stream.close_gracefully(LINGER_SECONDS)
    finally:
        reason = stream.close_reason
        if reason is None:
            reason = CloseReason.SHUTDOWN if server.shutting_down else CloseReason.HANDLER_RETURNED
            stream.close_reason = reason
        try:
            count_closed(server, stream, reason, record)
        finally:
            server._stream_closed(stream)  # a drain must not wait on it, whatever happens
