"""How a connection ended, in the counts and the logs: its
:class:`~trioecho.reasons.CloseReason` (:func:`close_reason_of`), the
server's counts of its connections (:func:`count_closed`, :func:`totals`), its
access record (:func:`log_access`), and the one log line (or the traceback,
for a handler's bug) of what ended its handler (:func:`log_handler_error`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, NamedTuple, Protocol, cast

import trio

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport there
    from exceptiongroup import BaseExceptionGroup

from trioecho.errors import (
    ConnectionClosedError,
    FramingError,
    IdleTimeoutError,
    MemoryBudgetError,
    ProtocolRefusedError,
    ProxyProtocolError,
    RelayError,
    SlowReaderError,
    TLSHandshakeError,
)
from trioecho.io.tls import certificate_subject, is_tls, peer_certificate, tls_version
from trioecho.logtext import escape_for_log, format_address
from trioecho.reasons import CloseReason, counted_as
from trioecho.stream.message_stream import MessageStream

__all__ = [
    "ACCESS_FIELDS",
    "ConnectionName",
    "ServedCounts",
    "TLSRecord",
    "close_reason_of",
    "count_closed",
    "count_unset_up",
    "log_access",
    "log_handler_error",
    "tls_record",
    "totals",
]

logger = logging.getLogger("trioecho.server")
access_logger = logging.getLogger("trioecho.access")


# Which reason each error that closes a connection counts as (first match):
# the peer's failures and the server's own limits.  Any other error is the
# handler's (HANDLER_ERROR): a transport turns a real peer break into
# ConnectionClosedError and ends the server's own closes (stop_receiving,
# shutdown, the idle timeout) with the end of input, IdleTimeoutError or a
# cancellation, so a bare Trio resource error comes from the handler's code.
_REASON_OF_ERROR: tuple[tuple[type[BaseException], CloseReason], ...] = (
    (FramingError, CloseReason.FRAMING_ERROR),
    (SlowReaderError, CloseReason.SLOW_READER),
    (MemoryBudgetError, CloseReason.MEMORY_BUDGET),
    (IdleTimeoutError, CloseReason.IDLE),
    (TLSHandshakeError, CloseReason.TLS),
    (ProxyProtocolError, CloseReason.PROXY),
    (ProtocolRefusedError, CloseReason.REFUSED),
    (ConnectionClosedError, CloseReason.RESET),
)


def close_reason_of(exc: BaseException, *, shutting_down: bool = False) -> CloseReason:
    """The :class:`CloseReason` of an error that closed a connection: a peer
    failure's or a limit's (``_REASON_OF_ERROR``), else ``handler_error``.

    A :class:`RelayError` counts as its side's error (the relay's own
    endings: a stream closed under a pump by the other's failure or by the
    server counts as ``shutdown`` or ``idle``, a broken one as ``reset``).
    An exception group (a handler's nursery) counts as its peer failure
    when that is all it holds, besides the ``ClosedResourceError`` of tasks
    whose stream a :class:`SlowReaderError` closed under them."""
    if isinstance(exc, RelayError):
        exc = exc.error
        if isinstance(exc, trio.ClosedResourceError):
            return CloseReason.SHUTDOWN if shutting_down else CloseReason.IDLE
        if isinstance(exc, trio.BrokenResourceError):
            return CloseReason.RESET
    return _reason_of(_ending_of(exc))


def _reason_of(exc: BaseException) -> CloseReason:
    for kind, reason in _REASON_OF_ERROR:
        if isinstance(exc, kind):
            return reason
    return CloseReason.HANDLER_ERROR


def _ending_of(exc: BaseException) -> BaseException:
    """``exc``, or for an exception group that holds only a connection's
    ending (see :func:`close_reason_of`), that ending."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = _leaves(exc)
    endings = [leaf for leaf in leaves if _reason_of(leaf) is not CloseReason.HANDLER_ERROR]
    closed_under = any(isinstance(leaf, SlowReaderError) for leaf in endings)
    for leaf in leaves:
        if leaf in endings or (closed_under and isinstance(leaf, trio.ClosedResourceError)):
            continue
        return exc  # a bug among them
    return endings[0] if endings else exc


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        found += _leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return found


# The fields of an access record (--access-log), as attributes of the record.
ACCESS_FIELDS = (
    "peer",  # the TCP peer, host:port (or unix:PATH)
    "client",  # the real client (from a PROXY header), else the peer
    "tls",  # the TLS version, or None
    "tls_client",  # the subject of the client's verified TLS certificate (escaped), or None
    "duration",  # seconds the connection was open (from its accept)
    "messages_received",
    "messages_sent",
    "bytes_received",
    "bytes_sent",
    "close_reason",  # a CLOSE_REASONS value, or a handler's own reason (escaped)
)


class TLSRecord(NamedTuple):
    """What the access record says of a TLS connection."""

    version: str | None
    client: str | None  # the subject of the client's verified certificate


def tls_record(connection: trio.abc.Stream) -> TLSRecord | None:
    """The TLS version of a set-up connection and its client certificate's
    subject, or None for plain TCP."""
    if is_tls(connection):
        subject = certificate_subject(peer_certificate(connection))
        return TLSRecord(tls_version(connection), subject)
    return None


def log_access(
    client: Any,
    peer: Any,
    tls: TLSRecord | None,
    began: float,
    stream: MessageStream | None,
    reason: CloseReason | str,
) -> None:
    """The access record of one closed connection (``trioecho.access``).
    ``reason``: a :class:`CloseReason`, or a handler's own (escaped here)."""
    text = reason.value if isinstance(reason, CloseReason) else escape_for_log(str(reason))
    fields: dict[str, Any] = {
        "peer": format_address(peer),
        "client": format_address(client),
        "tls": tls.version if tls is not None else None,
        "tls_client": escape_for_log(tls.client) if tls is not None and tls.client else None,
        "duration": round(trio.current_time() - began, 6),
        "messages_received": stream.messages_received if stream is not None else 0,
        "messages_sent": stream.messages_sent if stream is not None else 0,
        "bytes_received": stream.bytes_received if stream is not None else 0,
        "bytes_sent": stream.bytes_sent if stream is not None else 0,
        "close_reason": text,
    }
    access_logger.info(
        "%s: %s after %.3f s: %d messages in, %d out; %d bytes in, %d out",
        fields["client"],
        text,
        fields["duration"],
        fields["messages_received"],
        fields["messages_sent"],
        fields["bytes_received"],
        fields["bytes_sent"],
        extra=fields,
    )


class ServedCounts(Protocol):
    """What a server counts of its connections (a
    :class:`~trioecho.server.server.MessageServer` has these attributes):
    connections served, closes by reason (every
    :data:`~trioecho.reasons.CLOSE_REASONS` value; a handler's own reason
    counts as ``other``), and the messages and bytes of its closed
    connections (an open one counts on its stream until it closes)."""

    connections_served: int
    messages_received: int
    messages_sent: int
    bytes_received: int
    bytes_sent: int
    closed_by_reason: dict[str, int]


def count_unset_up(counts: ServedCounts, peer: Any, began: float, reason: CloseReason) -> None:
    """Count a connection closed before its handler ran (PROXY, TLS, reset,
    shutdown), and write its access record."""
    counts.closed_by_reason[reason.value] += 1
    if access_logger.isEnabledFor(logging.INFO):
        log_access(peer, peer, None, began, None, reason)


def count_closed(
    counts: ServedCounts,
    stream: MessageStream,
    reason: CloseReason | str,
    record: tuple[Any, Any, TLSRecord | None, float],
) -> None:
    """Count a connection whose handler ran, closed with ``reason``: add its
    stream's counts, and write the access record of ``(client, peer, tls,
    began)``.  Cannot raise, whatever ``reason`` a handler set."""
    counts.messages_received += stream.messages_received
    counts.messages_sent += stream.messages_sent
    counts.bytes_received += stream.bytes_received
    counts.bytes_sent += stream.bytes_sent
    counts.closed_by_reason[counted_as(reason).value] += 1
    if access_logger.isEnabledFor(logging.INFO):
        log_access(*record, stream, reason)


def totals(counts: ServedCounts, streams: list[MessageStream]) -> dict[str, Any]:
    """``counts`` now, the open ``streams``' own so far included (what
    their C pump counted synced first), as plain data."""
    for stream in streams:
        stream.sync_counters()
    return {
        "connections_open": len(streams),
        "connections_total": counts.connections_served,
        "closed": dict(counts.closed_by_reason),
        "messages_received": counts.messages_received
        + sum(stream.messages_received for stream in streams),
        "messages_sent": counts.messages_sent + sum(stream.messages_sent for stream in streams),
        "bytes_received": counts.bytes_received + sum(stream.bytes_received for stream in streams),
        "bytes_sent": counts.bytes_sent + sum(stream.bytes_sent for stream in streams),
    }


class ConnectionName:
    """A connection's address for a log line (``client (via proxy peer)``),
    formatted only when a line is written: an idle connection holds no string."""

    __slots__ = ("client", "peer")

    def __init__(self, client: Any, peer: Any) -> None:
        self.client = client
        self.peer = peer

    def __str__(self) -> str:
        where = format_address(self.client)
        if self.client is not self.peer:
            where += f" (via proxy {format_address(self.peer)})"
        return where


def log_handler_error(exc: Exception, where: ConnectionName) -> None:
    """Log what ended a connection's handler: one line for the expected
    endings (:func:`close_reason_of`), one ERROR with the traceback for
    anything else, a handler's own bug.  A relay's failure is logged as its
    side's error, naming the side."""
    side = ""
    relayed = isinstance(exc, RelayError)
    if isinstance(exc, RelayError):
        side = f"the {exc.side} side: " if exc.side != "client" else ""
        exc = exc.error
    if not relayed:
        ending = _ending_of(exc)
        if _reason_of(ending) is CloseReason.HANDLER_ERROR:
            logger.error("%s: handler raised; closing its connection", where, exc_info=exc)
            return
        exc = cast(Exception, ending)
    if isinstance(exc, FramingError) and exc.local:
        # Not the peer's fault: a payload of this side's could not be framed.
        logger.error(
            "%s: closing: our own message cannot be framed: %s: %s", where, type(exc).__name__, exc
        )
    elif isinstance(exc, FramingError):
        logger.warning("%s: closing: %s%s: %s", where, side, type(exc).__name__, exc)
    elif isinstance(exc, SlowReaderError | MemoryBudgetError | ProtocolRefusedError):
        logger.warning("%s: closing: %s%s", where, side, exc)
    elif isinstance(exc, IdleTimeoutError):
        logger.info("%s: closing: %s%s", where, side, exc)
    elif isinstance(exc, ConnectionClosedError | trio.BrokenResourceError):
        logger.info("%s: %s%s", where, side, exc)
    elif isinstance(exc, trio.ClosedResourceError):
        pass  # a relay's stream closed under a pump: the other way's ending says why
    else:
        logger.error("%s: handler raised; closing its connection", where, exc_info=exc)
