"""The echo service as a sans-IO session: bytes in, reply bytes out.

``EchoSession`` is the seed's echo protocol without any I/O, in the style
of h11: feed it what a peer sent, send what it returns.  Every complete
message is answered with the message followed by ``suffix`` (``好``), framed
the way the message was; a message equal to ``stop`` (``q``) ends the
session, unanswered.  One session serves one connection::

    session = EchoSession(FramingConfig("len"))
    while True:
        data = await receive_some()
        output = session.feed(data) if data else session.feed_eof()
        await send_all(output.data)
        if output.stopped or output.error or not data:
            break

Contract:

* ``feed(data)`` returns an :class:`EchoOutput`: the replies to every
  message ``data`` completes, as bytes ready to send, in order; how many
  messages were answered and received; whether the stop message came; and
  the error that ended the session, if one did (replies to the messages
  before it are in ``data``, so none owed is lost).  A line over
  ``max_frame`` in discard mode does not end the session: it is listed in
  ``dropped``.  Bytes after the stop message are ignored.
* ``feed_eof()``: the peer closed its side.  Its output carries an
  :class:`IncompleteFrameError` if the stream ended inside a message.
* Once the session is over (stop or error), ``feed`` returns the same
  ending again with no data.
* A reply is limited by the wire format, not by ``max_frame``: a message of
  exactly ``max_frame`` bytes gets its reply.  So a length-prefixed
  configuration whose largest reply does not fit the header is refused
  (``ValueError``): with a 1-byte header, ``max_frame`` is at most 252.  A
  line whose reply would hold the delimiter before its end (a multi-byte
  delimiter completed by the suffix) or end in a ``\\r`` that the peer strips
  ends the session with :class:`DelimiterInPayloadError`.

Memory: the session keeps the unconsumed bytes, at most one unfinished
message (``max_frame``) plus one read.  The replies to one ``feed`` are
built in one C call with the C engine, in an output buffer of ``capacity``
bytes; replies that do not fit come out over several calls, in pieces if
one reply alone is larger, so every size the wire format allows is
answered.  ``TRIOECHO_PUREPYTHON=1`` (or ``implementation="python"``)
selects the pure-Python twin, which gives the same results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from . import _backend
from ._errors import FrameTooLongError, FramingError
from ._pyecho import BAD_REPLY, REPLY_CR, STOP, TOO_LONG
from .framing import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_LINE,
    Buffer,
    Framer,
    FramingConfig,
    LengthPrefixedFramer,
    LineFramer,
    RawFramer,
    delimiter_in_payload,
    incomplete_frame,
    too_long_message,
    trailing_cr,
)

__all__ = [
    "DEFAULT_ECHO_CAPACITY",
    "GREETING",
    "QUIT",
    "REPLY_SUFFIX",
    "EchoOutput",
    "EchoSession",
    "RespondSession",
    "SessionOutput",
    "reply_limit",
]

GREETING = "你好欢迎你".encode()
REPLY_SUFFIX = "好".encode()
QUIT = b"q"
# The C engine's output buffer: the replies to one 64 KiB read of small
# messages fit in one call.
DEFAULT_ECHO_CAPACITY = 256 * 1024


class SessionOutput(NamedTuple):
    """What one ``feed`` (or ``feed_eof``) of a session produced
    (:class:`EchoSession`, :class:`RespondSession`)."""

    data: bytes
    """The framed replies, in order, to send as they are."""
    replies: int
    """Messages answered (the replies in ``data``)."""
    received: int
    """Messages consumed: the ones answered, and the stop message."""
    stopped: bool = False
    """The stop message arrived: the session is over."""
    error: FramingError | None = None
    """The error that ended the session, after the replies in ``data``."""
    dropped: tuple[FrameTooLongError, ...] = ()
    """Discard mode: the over-long lines dropped (the session goes on)."""


EchoOutput = SessionOutput  # the echo session's name for it

_NOTHING = SessionOutput(b"", 0, 0)
_NO_BYTES = b""


def reply_limit(config: FramingConfig, suffix: bytes = REPLY_SUFFIX) -> int | None:
    """The largest ``max_frame`` whose reply still fits the wire format, or
    None if there is no such limit (lines, raw).  The reply's body is the
    message's plus ``suffix``; its length field holds that minus the length
    adjustment."""
    if config.framing == "len":
        field_max = (1 << (8 * config.length_bytes)) - 1
        return field_max + config.length_adjustment - len(suffix)
    if config.framing == "varint":
        return min(1 << (7 * config.max_length_bytes), 1 << 64) - 1 - len(suffix)
    return None


def _options(framing: FramingConfig | Framer) -> FramingConfig:
    """The configuration of a framer, to answer what it would read."""
    if isinstance(framing, FramingConfig):
        return framing
    if isinstance(framing, LengthPrefixedFramer):
        return FramingConfig(
            "len",
            length_bytes=framing.length_bytes,
            byteorder=framing.byteorder,
            max_frame=framing.max_frame,
            length_offset=framing.length_offset,
            length_adjustment=framing.length_adjustment,
            include_header=framing.include_header,
            implementation=framing.implementation,
        )
    if isinstance(framing, LineFramer):
        return FramingConfig(
            "line",
            delimiter=framing.delimiters,
            strip_cr=framing.strip_cr,
            max_frame=framing.max_frame,
            on_too_long=framing.on_too_long,
            implementation=framing.implementation,
        )
    if isinstance(framing, RawFramer):
        return FramingConfig("raw")
    raise ValueError(f"the echo session does not answer {type(framing).__name__} frames")


class EchoSession:
    """The echo protocol for one connection; see the module docstring.

    ``framing`` is a :class:`FramingConfig` or a framer to take the
    configuration from (default: lines).  ``implementation`` (``"c"``,
    ``"python"``) overrides the configuration's; ``capacity`` is the C
    engine's output buffer size in bytes.
    """

    __slots__ = ("_buffer", "_ending", "_engine", "_framing", "_max_frame", "_raw", "config")

    def __init__(
        self,
        framing: FramingConfig | Framer | None = None,
        *,
        suffix: bytes = REPLY_SUFFIX,
        stop: bytes = QUIT,
        capacity: int = DEFAULT_ECHO_CAPACITY,
        implementation: str | None = None,
    ) -> None:
        config = _options(framing if framing is not None else FramingConfig())
        if not config.plain:
            raise ValueError(
                "the echo session answers lines with one delimiter, bare 1/2/4/8-byte "
                "lengths and raw messages; serve other framings with the generic path "
                "(EchoHandler does so by itself)"
            )
        self.config = config
        if implementation is None:
            implementation = config.implementation
        backend = _backend.get(implementation, "echo")
        max_frame = config.max_frame
        if max_frame is None:
            max_frame = DEFAULT_MAX_FRAME if config.framing == "len" else DEFAULT_MAX_LINE
        self._framing = config.framing
        self._max_frame = max_frame
        self._raw = config.framing == "raw"
        self._engine = backend.EchoEngine(
            config.framing,
            config.length_bytes,
            config.byteorder == "little",
            config.delimiter,
            config.strip_cr,
            config.on_too_long == "discard",
            max_frame,
            bytes(suffix),
            bytes(stop),
            capacity,
        )
        # The unconsumed bytes: a bytearray while there are any (an idle
        # session holds none).
        self._buffer: bytearray | bytes = _NO_BYTES
        self._ending: EchoOutput | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed (an unfinished message)."""
        return len(self._buffer)

    @property
    def over(self) -> bool:
        """Whether the session has ended (stop message or error)."""
        return self._ending is not None

    def feed(self, data: Buffer) -> EchoOutput:
        """Take the bytes of one read; return the replies they complete."""
        if self._ending is not None:
            return self._ending
        buffer = self._buffer
        if buffer:
            assert type(buffer) is bytearray  # only the empty one is bytes
            buffer += data
            wire, consumed, replies, received, status, length, dropped = self._engine.feed(buffer)
            if consumed < len(buffer):
                del buffer[:consumed]
            else:  # drop it: an emptied bytearray keeps its capacity
                self._buffer = _NO_BYTES
        else:
            if type(data) is not bytes:
                data = bytes(data)
            wire, consumed, replies, received, status, length, dropped = self._engine.feed(data)
            if consumed < len(data) and not self._raw:
                self._buffer = bytearray(memoryview(data)[consumed:])
        if status == 0 and not dropped:  # NEED: the common case
            return SessionOutput(wire, replies, received)
        return self._unusual(wire, replies, received, status, length, dropped)

    def _unusual(
        self,
        wire: bytes,
        replies: int,
        received: int,
        status: int,
        length: int,
        dropped: tuple[int, ...] | list[int],
    ) -> EchoOutput:
        """An output with a stop, an error or dropped lines."""
        drops = tuple(self._too_long(n) for n in dropped)
        if status == STOP:
            self._end(EchoOutput(b"", 0, 0, stopped=True))
            return EchoOutput(wire, replies, received, stopped=True, dropped=drops)
        error: FramingError | None = None
        if status == TOO_LONG:
            error = self._too_long(length)
        elif status == BAD_REPLY:
            error = (
                trailing_cr() if length == REPLY_CR else delimiter_in_payload(self.config.delimiter)
            )
        if error is not None:
            self._end(EchoOutput(b"", 0, 0, error=error))
        return EchoOutput(wire, replies, received, error=error, dropped=drops)

    def _too_long(self, length: int) -> FrameTooLongError:
        return FrameTooLongError(
            too_long_message(self._framing, length, self._max_frame),
            limit=self._max_frame,
            length=length,
        )

    def _end(self, ending: EchoOutput) -> None:
        self._ending = ending
        self._buffer = _NO_BYTES

    def feed_eof(self) -> EchoOutput:
        """The peer closed its side; ``error`` is an :class:`IncompleteFrameError`
        if the stream ended inside a message."""
        if self._ending is not None:
            return self._ending
        if self._buffer:
            error = incomplete_frame("frame" if self._framing == "len" else "line", self.buffered)
            self._end(EchoOutput(b"", 0, 0, error=error))
            return self._ending  # type: ignore[return-value]
        return _NOTHING


class RespondSession:
    """A function that answers message by message, as a sans-IO session.

    ``framer`` splits the input; ``respond(message)`` returns the reply to
    one message (framed by ``framer``), or None for no reply.  The replies
    to one read are framed together (``encode_many``), so they go out in
    one write.  After :meth:`stop` (called from ``respond``) the session
    ends once that message's reply is sent: the messages after it are not
    answered.  Errors, as :class:`EchoSession` reports them:

    * input that breaks the framing ends the session with that
      :class:`FramingError` as ``error``, after the replies to the messages
      before it; an over-long line in discard mode is ``dropped`` instead;
    * a reply the framer cannot encode (a line holding the delimiter) ends
      the session with that error, after the replies before it;
    * an exception ``respond`` raises is its own bug: it propagates.

    ``received`` counts the messages given to ``respond``.
    """

    __slots__ = ("_discard", "_ending", "_framer", "_respond", "_stopping")

    def __init__(self, framer: Framer, respond: Callable[[bytes], bytes | None]) -> None:
        self._framer = framer
        self._respond = respond
        self._discard = isinstance(framer, LineFramer) and framer.on_too_long == "discard"
        self._stopping = False
        self._ending: SessionOutput | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished message the framer holds."""
        return self._framer.buffered

    @property
    def over(self) -> bool:
        return self._ending is not None

    def stop(self) -> None:
        """End the session after the reply to the message being answered."""
        self._stopping = True

    def feed(self, data: Buffer) -> SessionOutput:
        """Take the bytes of one read; return the replies they complete."""
        if self._ending is not None:
            return self._ending
        frames, error, dropped = self._split(data)
        replies: list[bytes] = []
        received = 0
        respond = self._respond
        for message in frames:
            received += 1
            reply = respond(message)
            if reply is not None:
                replies.append(reply)
            if self._stopping:
                error = None  # the input after the stop message is not read
                break
        wire, answered, encode_error = self._encode(replies)
        error = encode_error or error
        if self._stopping or error is not None:
            self._ending = SessionOutput(b"", 0, 0, stopped=self._stopping, error=error)
            return SessionOutput(wire, answered, received, self._stopping, error, dropped)
        if dropped:
            return SessionOutput(wire, answered, received, dropped=dropped)
        return SessionOutput(wire, answered, received)

    def feed_eof(self) -> SessionOutput:
        """The peer closed its side; ``error`` is an :class:`IncompleteFrameError`
        if the stream ended inside a message."""
        if self._ending is not None:
            return self._ending
        try:
            self._framer.feed_eof()
        except FramingError as exc:
            self._ending = SessionOutput(b"", 0, 0, error=exc)
            return self._ending
        return _NOTHING

    def _split(
        self, data: Buffer
    ) -> tuple[list[bytes], FramingError | None, tuple[FrameTooLongError, ...]]:
        """The messages of one read, the error that ends the input, and
        the over-long lines dropped (discard mode)."""
        framer = self._framer
        try:
            return framer.feed(data), None, ()
        except FramingError as exc:
            frames, exc.frames = exc.frames, []
            if not (self._discard and isinstance(exc, FrameTooLongError)):
                return frames, exc, ()
            dropped = [exc]
        while True:  # discard mode: go on after each dropped line
            try:
                frames += framer.feed(b"")
                return frames, None, tuple(dropped)
            except FrameTooLongError as exc:
                frames += exc.frames
                exc.frames = []
                dropped.append(exc)

    def _encode(self, replies: list[bytes]) -> tuple[bytes, int, FramingError | None]:
        """The replies framed, how many, and the error of the first one
        that cannot be framed (the replies before it are kept)."""
        if not replies:
            return b"", 0, None
        framer = self._framer
        try:
            return framer.encode_many(replies), len(replies), None
        except FramingError:
            pass
        parts = []
        for reply in replies:
            try:
                parts.append(framer.encode(reply))
            except FramingError as exc:
                return b"".join(parts), len(parts), exc
        raise AssertionError("encode_many() refused replies that encode() frames one by one")
