"""Why a connection closed: :class:`CloseReason`, the closed set the server
counts closes by (``MessageServer.closed_by_reason``, the
``trioecho_connections_closed_total{reason}`` metric) and the access log
names.

A handler may set a reason of its own, any non-empty ``str``, on
``MessageStream.close_reason``: the access record carries its text (escaped)
and the counters count it as :attr:`CloseReason.OTHER`.  A string equal to
one of the values (``"stop_message"``) is that member.
"""

from __future__ import annotations

import enum

__all__ = ["CLOSE_REASONS", "CloseReason", "close_reason", "counted_as"]


class CloseReason(str, enum.Enum):
    """Why a connection closed.  A ``str``: a member equals its value
    (``CloseReason.IDLE == "idle"``) and formats as it, on every Python
    (``enum.StrEnum`` is 3.11's; this is the same on 3.10)."""

    PEER_CLOSED = "peer_closed"
    """The end of the peer's input."""
    STOP_MESSAGE = "stop_message"
    """The session's stop message (the echo's ``q``)."""
    HANDLER_RETURNED = "handler_returned"
    """The handler returned with the input still open."""
    IDLE = "idle"
    """``idle_timeout``: no complete message for that long."""
    SLOW_READER = "slow_reader"
    """``send_timeout``: the peer did not read its replies."""
    FRAMING_ERROR = "framing_error"
    """The peer's bytes could not be framed (or, rarely, ours)."""
    MEMORY_BUDGET = "memory_budget"
    """The memory budget refused the connection's messages."""
    TLS = "tls"
    """The TLS handshake failed."""
    PROXY = "proxy"
    """A missing or bad PROXY header."""
    RESET = "reset"
    """The connection broke (a reset, or lost before it was set up)."""
    SHUTDOWN = "shutdown"
    """Closed by ``MessageServer.shutdown()``."""
    REFUSED = "refused"
    """The peer asked what its protocol forbids (a second SSLRequest)."""
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    """A relay could not connect to its upstream."""
    HANDLER_ERROR = "handler_error"
    """The handler raised: a bug, logged with its traceback."""
    OTHER = "other"
    """A reason a handler set itself (its text is in the access record)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, format_spec: str) -> str:
        return format(self.value, format_spec)


# Every reason's value, in order: the counters' keys and the metric's labels.
CLOSE_REASONS: tuple[str, ...] = tuple(reason.value for reason in CloseReason)

_BY_VALUE: dict[str, CloseReason] = {reason.value: reason for reason in CloseReason}


def close_reason(value: object) -> CloseReason | str | None:
    """``value`` as ``MessageStream.close_reason`` keeps it: None, a
    :class:`CloseReason` (also for a ``str`` equal to a member's value), or
    a handler's own non-empty ``str``.  Anything else raises ``TypeError``
    (an empty string ``ValueError``), naming ``close_reason``."""
    if value is None or isinstance(value, CloseReason):
        return value
    if not isinstance(value, str):
        raise TypeError(
            "close_reason must be a str (a trioecho.CloseReason, or a reason of the "
            f"handler's own) or None, not {type(value).__name__}"
        )
    if not value:
        raise ValueError("close_reason must be a non-empty str (or None), not ''")
    return _BY_VALUE.get(value, value)


def counted_as(reason: object) -> CloseReason:
    """The counter a close with ``reason`` counts in: a :class:`CloseReason`
    itself (or a ``str`` equal to a member's value), anything else
    :attr:`CloseReason.OTHER`.  Never raises."""
    if isinstance(reason, CloseReason):
        return reason
    if isinstance(reason, str):
        return _BY_VALUE.get(reason, CloseReason.OTHER)
    return CloseReason.OTHER
