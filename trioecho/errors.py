"""The exception hierarchy of trioecho.

Everything trioecho raises on purpose derives from :class:`TrioEchoError`.
Invalid arguments (a bad option value, a wrong type) raise the built-in
:class:`ValueError` / :class:`TypeError` instead: they are programming errors,
not events on the wire.
"""

from __future__ import annotations

__all__ = [
    "ConnectionClosedError",
    "DelimiterInPayloadError",
    "FrameTooLongError",
    "FramingError",
    "GreetingError",
    "IdleTimeoutError",
    "IncompleteFrameError",
    "LoadGeneratorError",
    "MalformedFrameError",
    "MemoryBudgetError",
    "ProtocolRefusedError",
    "ProxyProtocolError",
    "RelayError",
    "SinkError",
    "SlowReaderError",
    "TLSHandshakeError",
    "TrioEchoError",
]


class TrioEchoError(Exception):
    """Base class of every trioecho exception."""


class FramingError(TrioEchoError):
    """Bytes on the wire, or a payload to encode, break the framing rules.

    ``frames`` holds the complete frames that a ``feed()`` call decoded before
    it met the bad input, so that none is lost; it is empty for encoder errors.

    ``local`` says whose mistake it is, as h11 keeps its local and remote
    protocol errors apart: False for the peer's bytes (a frame too long, a
    bad header, the stream ending inside a frame), True for a payload of our
    own that cannot be framed (``encode``: too long for the header, a line
    holding its delimiter).  The server logs a local one as this side's bug.
    """

    local_by_default = False

    def __init__(
        self, message: str, *, frames: list[bytes] | None = None, local: bool | None = None
    ) -> None:
        super().__init__(message)
        self.frames: list[bytes] = frames if frames is not None else []
        self.local = self.local_by_default if local is None else local


class FrameTooLongError(FramingError):
    """A frame is longer than the limit, or than its header can express.

    ``limit`` is the largest length allowed and ``length`` the length seen: the
    length announced by a header, the length of a complete line, or, for a line
    still arriving, the least length it can still have.
    """

    def __init__(
        self,
        message: str,
        *,
        limit: int,
        length: int,
        frames: list[bytes] | None = None,
        local: bool | None = None,
    ) -> None:
        super().__init__(message, frames=frames, local=local)
        self.limit = limit
        self.length = length


class MalformedFrameError(FramingError):
    """A frame's header breaks its format: a length adjusted below zero, a
    varint that is too long or not minimally encoded; or a payload that
    cannot be encoded (a fixed-length frame of the wrong size, a header too
    short to rewrite).  ``value`` is the offending value (``None`` for an
    encoder error without one)."""

    def __init__(
        self,
        message: str,
        *,
        value: int | None = None,
        frames: list[bytes] | None = None,
        local: bool | None = None,
    ) -> None:
        super().__init__(message, frames=frames, local=local)
        self.value = value


class IncompleteFrameError(FramingError):
    """The stream ended inside a frame; ``buffered`` bytes of it had arrived."""

    def __init__(self, message: str, *, buffered: int) -> None:
        super().__init__(message)
        self.buffered = buffered


class DelimiterInPayloadError(FramingError):
    """A payload cannot be sent as one line: it contains the delimiter, or it
    ends with a ``\\r`` that the receiving side would strip.  Always ``local``."""

    local_by_default = True


class ConnectionClosedError(TrioEchoError):
    """The peer or the network broke the connection (reset, broken pipe, ...).

    The underlying exception is chained as ``__cause__``.
    """


class IdleTimeoutError(TrioEchoError, TimeoutError):
    """No complete message arrived within the idle timeout."""


class SlowReaderError(ConnectionClosedError, TimeoutError):
    """The peer did not read its replies fast enough, by the send rule
    (:mod:`trioecho.io.send_deadline`): a send waiting for it made no
    progress for ``send_timeout`` seconds ("the send stalled"), or, past
    them, it averaged under ``min_send_rate`` ("read its replies too
    slowly").  The message says which, in one line.

    The stream is closed when this is raised: a send cut short leaves it
    unusable.
    """


class ProxyProtocolError(TrioEchoError):
    """A connection's PROXY protocol header is missing, malformed or not allowed."""


class TLSHandshakeError(TrioEchoError):
    """A TLS handshake failed or did not finish in time; the cause is chained.

    ``reason`` is what went wrong without the surrounding words (the TLS
    error, ``"connection closed"``, ...); it defaults to the message.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else message


class MemoryBudgetError(TrioEchoError):
    """A message could not complete within the server's memory budget."""


class GreetingError(TrioEchoError):
    """The server's first bytes are not the greeting the client's framing
    expects.  ``options``: the command-line options of the framing the
    server seems to speak (``["--framing", "len"]``), or None if unknown."""

    def __init__(self, message: str, *, options: list[str] | None = None) -> None:
        super().__init__(message)
        self.options = options


class RelayError(TrioEchoError):
    """One side of a relayed connection failed, so the relay closes both.

    ``side`` is ``"client"`` or ``"upstream"``: whose stream raised ``error``
    (a framing error, a reset, a timeout), which is also the ``__cause__``.
    """

    def __init__(self, side: str, error: Exception, *, refusal: bytes | None = None) -> None:
        super().__init__(f"the {side} side: {type(error).__name__}: {error}")
        self.side = side
        self.error = error
        self.refusal = refusal  # what the relay still owes the client, saying why


class SinkError(TrioEchoError):
    """:meth:`MessageStream.forward_to <trioecho.MessageStream.forward_to>`:
    sending to the sink stream failed (its peer reset, or did not read
    within its ``send_timeout``); ``error`` is the sink's error, also the
    ``__cause__``.  The source's own errors are raised as they are."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"sending on: {type(error).__name__}: {error}")
        self.error = error


class ProtocolRefusedError(TrioEchoError):
    """A peer asked for something its protocol does not allow (a relay's
    PostgreSQL client sending a second SSLRequest); it was told so and its
    connection closes."""


class LoadGeneratorError(TrioEchoError, RuntimeError):
    """The load generator could not connect or was refused a greeting."""
