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

from trioecho._backend import Implementation, Unit
from trioecho.errors import FrameTooLongError, FramingError
from trioecho.framing.base import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_LINE,
    Buffer,
    Framer,
    FramingName,
)
from trioecho.framing.config import FramingConfig, framing_config
from trioecho.framing.fixed import RawFramer
from trioecho.framing.length import LengthPrefixedFramer
from trioecho.framing.lines import LineFramer
from trioecho.framing.problems import (
    delimiter_in_payload,
    incomplete_frame,
    too_long_message,
    trailing_cr,
)
from trioecho.services._pyecho import BAD_REPLY, NEED, REPLY_CR, STOP, TOO_LONG
from trioecho.stream.session import SessionOutput

__all__ = [
    "DEFAULT_ECHO_CAPACITY",
    "GREETING",
    "QUIT",
    "REPLY_SUFFIX",
    "EchoOutput",
    "EchoSession",
    "engine_answers",
    "reply_limit",
]

GREETING = "你好欢迎你".encode()
REPLY_SUFFIX = "好".encode()
QUIT = b"q"
# The echo session's C unit (the C engine) and its pure-Python twin; chosen
# when first used, so the framing core never loads it.
ECHO = Unit("echo", "trioecho.services._cecho", "trioecho.services._pyecho", "_echo_ffi")
# The C engine's output buffer: the replies to one 64 KiB read of small
# messages fit in one call.
DEFAULT_ECHO_CAPACITY = 256 * 1024


EchoOutput = SessionOutput  # the echo session's name for it

_NOTHING = SessionOutput(b"", 0, 0)
_NO_BYTES = b""
# The common output (replies and nothing else) built without SessionOutput's
# Python-level __new__, which costs a tenth of an exchange: every field, in
# order.
_new_output = tuple.__new__
if SessionOutput._fields != ("data", "replies", "received", "stopped", "error", "dropped"):
    raise ImportError("SessionOutput's fields changed: update EchoSession.feed")


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


def engine_answers(config: FramingConfig) -> bool:
    """Whether the echo session's engine answers ``config``'s framing: lines
    with one delimiter, a bare 1, 2, 4 or 8-byte length, or raw messages
    (the other framings are echoed by :class:`~trioecho.services.echo.EchoHandler`
    through ``respond()``)."""
    return (
        config.framing in ("line", "len", "raw")
        and isinstance(config.delimiter, bytes)
        and config.length_bytes != 3
        and not (config.length_offset or config.length_adjustment or config.include_header)
        and config.first_frame is None
    )


# What a framer the session answers keeps of the configuration it was made
# from: its framing and, for each FramingConfig field, the framer's attribute.
_FRAMER_SETTINGS: tuple[tuple[type[Framer], FramingName, dict[str, str]], ...] = (
    (
        LengthPrefixedFramer,
        "len",
        {
            name: name
            for name in (
                "length_bytes",
                "byteorder",
                "max_frame",
                "length_offset",
                "length_adjustment",
                "include_header",
                "implementation",
            )
        },
    ),
    (
        LineFramer,
        "line",
        {
            "delimiter": "delimiters",
            "strip_cr": "strip_cr",
            "max_frame": "max_frame",
            "on_too_long": "on_too_long",
            "implementation": "implementation",
        },
    ),
    (RawFramer, "raw", {}),
)


def _options(framing: FramingConfig | Framer | str | None) -> FramingConfig:
    """The configuration given (a name or None as :func:`framing_config`
    takes them), or a framer's, to answer what it would read."""
    if framing is None or isinstance(framing, FramingConfig | str):
        return framing_config(framing)
    for kind, name, fields in _FRAMER_SETTINGS:
        if isinstance(framing, kind):
            kept = {field: getattr(framing, attribute) for field, attribute in fields.items()}
            return FramingConfig(name, **kept)
    if hasattr(framing, "feed") and hasattr(framing, "encode"):  # another framer
        raise ValueError(
            f"the echo session does not answer {type(framing).__name__} frames "
            "(it answers lines, length fields and raw reads)"
        )
    raise TypeError(
        f"framing must be a FramingConfig, a framing name or a framer, not {type(framing).__name__}"
    )


class EchoSession:
    """The echo protocol for one connection; see the module docstring.

    ``framing`` is a :class:`FramingConfig`, a framing name or a framer to take the
    configuration from (default: lines).  ``implementation`` (``"c"``,
    ``"python"``) overrides the configuration's; ``capacity`` is the C
    engine's output buffer size in bytes.
    """

    __slots__ = ("_buffer", "_ending", "_engine", "_framing", "_max_frame", "_raw", "config")

    def __init__(
        self,
        framing: FramingConfig | Framer | str | None = None,
        *,
        suffix: bytes = REPLY_SUFFIX,
        stop: bytes = QUIT,
        capacity: int = DEFAULT_ECHO_CAPACITY,
        implementation: Implementation | None = None,
    ) -> None:
        config = _options(framing)
        if not engine_answers(config):
            raise ValueError(
                "the echo session answers lines with one delimiter, bare 1/2/4/8-byte "
                "lengths and raw messages; serve other framings with the generic path "
                "(EchoHandler does so by itself)"
            )
        self.config = config
        if implementation is None:
            implementation = config.implementation
        backend = ECHO.get(implementation)
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

    def pump_handle(self) -> tuple[int, object, bool] | None:
        """What the hub's C pump serves this session with: the address of
        the C engine's session, the object that keeps it alive, and whether
        the framing is raw; None where the pump does not serve it (the
        Python engine, discard mode, or a session that is over)."""
        address = getattr(self._engine, "address", None)
        if address is None or self._ending is not None or self.config.on_too_long == "discard":
            return None
        return address, self._engine, self._raw

    def take_input(self) -> bytes:
        """Hand the unconsumed bytes to the pump (they are its until
        :meth:`put_input` gives them back)."""
        buffer, self._buffer = self._buffer, _NO_BYTES
        return bytes(buffer)

    def put_input(self, data: bytes) -> None:
        """Take back the unconsumed bytes from the pump."""
        self._buffer = bytearray(data) if data else _NO_BYTES

    def end_pumped(self, status: int, length: int, replies: int) -> EchoOutput:
        """The pump saw the C engine end the session (``status``, ``length``
        as the engine gives them); its ``replies`` before the end are sent
        by the caller.  The output that ends the session, as :meth:`feed`
        gives it (without the bytes)."""
        if status not in (STOP, TOO_LONG, BAD_REPLY):
            raise RuntimeError(f"the C pump stopped the echo session with status {status}")
        received = replies + (1 if status == STOP else 0)
        return self._unusual(_NO_BYTES, replies, received, status, length, ())

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
        if status == NEED and not dropped:  # the common case
            return _new_output(SessionOutput, (wire, replies, received, False, None, ()))
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
