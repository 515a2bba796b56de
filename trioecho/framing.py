"""Sans-IO framers: split a byte stream into messages and encode messages.

TCP delivers a stream of bytes, not messages: two quick sends can arrive in one
read ("sticky packets") and one message can arrive over several reads.  A
framer fixes that.  One framer serves one connection:

* ``feed(data)`` takes the bytes of one read and returns every frame it
  completes, in order, as a list of ``bytes``.  Incomplete bytes are kept.
* ``feed_eof()`` is called when the peer closes its side; it raises
  :class:`IncompleteFrameError` if an unfinished frame is buffered.
* ``encode(payload)`` / ``encode_many(payloads)`` return the bytes to send.
  They refuse (never truncate) a payload that cannot be framed.  ``max_frame``
  limits what a framer *accepts*; what it sends is limited by the wire format
  alone (the header's width; a line must not hold its delimiter), as in
  Netty's and tokio's codecs.

Framings:

``LengthPrefixedFramer``
    an unsigned length of 1, 2, 4 or 8 bytes (default 4, big endian), then
    that many payload bytes.  The length counts the payload only; zero is
    valid.  A length over ``max_frame`` (default 1 MiB) fails as soon as the
    header is complete, before any of the body is awaited or buffered.
``LineFramer``
    payloads separated by a delimiter (default ``b"\\n"``; any 1 to 8 bytes).
    One ``\\r`` before the delimiter is removed too (``strip_cr=True``, the
    default, as in Netty's and tokio's line decoders: telnet and Windows
    clients send ``\\r\\n``); ``strip_cr=False`` keeps it.  A line
    over ``max_frame`` bytes (default 64 KiB, delimiter and stripped ``\\r``
    excluded) fails as soon as it can no longer end within the limit.
    ``on_too_long="discard"`` reports the over-long line once and then drops
    it through its delimiter and carries on (Netty's discard mode).
``RawFramer``
    no framing: each chunk received is one message (the seed's wire format).

Errors: input that breaks a rule raises :class:`FrameTooLongError`; its
``frames`` attribute holds the frames completed before the bad one.  After
that error the framer is broken and raises it again on every ``feed``, except
in discard mode, where it keeps the bytes after the bad line: call
``feed(b"")`` to get the frames they complete.  Bytes are never lost or
reordered, and memory stays bounded by ``max_frame`` plus one read.

Framers are not thread-safe: one framer, one task.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Callable, Iterable
from typing import Literal, Protocol

from . import _backend
from ._errors import DelimiterInPayloadError, FrameTooLongError, IncompleteFrameError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_LINE",
    "FRAMINGS",
    "Framer",
    "FramingConfig",
    "LengthPrefixedFramer",
    "LineFramer",
    "RawFramer",
    "make_framer",
]

DEFAULT_MAX_FRAME = 1 << 20  # length-prefixed frames: 1 MiB
DEFAULT_MAX_LINE = 64 << 10  # lines: 64 KiB, as asyncio and Go's bufio
MAX_DELIMITER = 8
FRAMINGS = ("line", "len", "raw")

_HEADER_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}
_MAX_LIMIT = (1 << 63) - 1

Buffer = bytes | bytearray | memoryview


class Framer(Protocol):
    """What every framer offers; see the module docstring for the contract."""

    @property
    def max_frame(self) -> int: ...

    @property
    def buffered(self) -> int: ...

    def feed(self, data: Buffer) -> list[bytes]: ...

    def feed_eof(self) -> None: ...

    def encode(self, payload: Buffer) -> bytes: ...

    def encode_many(self, payloads: Iterable[Buffer]) -> bytes: ...


class _Scanner(Protocol):
    """The scanner contract; see ``trioecho._pyframer``."""

    def scan(self, buf: bytes | bytearray) -> tuple[list[bytes], int, int]: ...


@functools.cache
def _header_packer(byteorder: str, length_bytes: int) -> Callable[[int], bytes]:
    """``pack`` of the header format, shared by every framer that uses it."""
    order = "<" if byteorder == "little" else ">"
    return struct.Struct(order + _HEADER_FORMATS[length_bytes]).pack


def _check_limit(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _MAX_LIMIT:
        raise ValueError(f"{name} must be between 0 and 2**63-1, not {value}")
    return value


class _StreamFramer:
    """Buffering, error state and the feed loop shared by the scanning framers."""

    __slots__ = (
        "_broken",
        "_buffer",
        "_max_frame",
        "_recoverable",
        "_scanner",
        "implementation",
    )

    _what = "frame"

    def __init__(
        self, scanner: _Scanner, max_frame: int, recoverable: bool, implementation: str
    ) -> None:
        self._scanner = scanner
        self.implementation = implementation  # "c" or "python": the scanner's
        self._buffer = bytearray()
        self._broken: FrameTooLongError | None = None
        self._recoverable = recoverable
        self._max_frame = max_frame

    @property
    def max_frame(self) -> int:
        """The largest payload accepted, in bytes."""
        return self._max_frame

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer)

    def feed(self, data: Buffer) -> list[bytes]:
        """Add the bytes of one read; return the frames they complete, in order."""
        if self._broken is not None:
            raise self._error(self._broken.length, [], again=True)
        # The buffered bytes plus ``data`` are scanned and what the scanner
        # consumed is dropped; an empty buffer is not copied into (the read
        # itself is scanned).  Inline: this runs for every read.
        buffer = self._buffer
        if buffer:
            buffer += data
            frames, consumed, too_long = self._scanner.scan(buffer)
            if consumed < len(buffer):
                del buffer[:consumed]
            else:  # a new one: an emptied bytearray keeps its capacity
                self._buffer = bytearray()
        else:
            if type(data) is not bytes:
                data = bytes(data)
            frames, consumed, too_long = self._scanner.scan(data)
            if consumed < len(data):
                buffer += memoryview(data)[consumed:]
        if too_long >= 0:
            error = self._error(too_long, frames, again=False)
            if not self._recoverable:
                self._broken = error
                self._buffer.clear()
            raise error
        return frames

    def feed_eof(self) -> None:
        """The peer closed its side: raise IncompleteFrameError if a frame is unfinished."""
        if self._buffer and self._broken is None:
            raise incomplete_frame(self._what, len(self._buffer))

    def _error(self, length: int, frames: list[bytes], *, again: bool) -> FrameTooLongError:
        prefix = "framer stopped after an earlier error: " if again else ""
        return FrameTooLongError(
            prefix + self._too_long_message(length),
            limit=self._max_frame,
            length=length,
            frames=frames,
        )

    def _too_long_message(self, length: int) -> str:
        raise NotImplementedError


class LengthPrefixedFramer(_StreamFramer):
    """Frames are an unsigned length header followed by that many payload bytes."""

    __slots__ = ("_encode_limit", "_pack", "byteorder", "length_bytes")

    def __init__(
        self,
        *,
        length_bytes: int = 4,
        byteorder: Literal["big", "little"] = "big",
        max_frame: int = DEFAULT_MAX_FRAME,
        implementation: str | None = None,
    ) -> None:
        if length_bytes not in _HEADER_FORMATS:
            raise ValueError(f"length_bytes must be 1, 2, 4 or 8, not {length_bytes!r}")
        if byteorder not in ("big", "little"):
            raise ValueError(f"byteorder must be 'big' or 'little', not {byteorder!r}")
        _check_limit("max_frame", max_frame)
        backend = _backend.get(implementation)
        super().__init__(
            backend.LengthScanner(length_bytes, byteorder == "little", max_frame),
            max_frame,
            recoverable=False,
            implementation=backend.IMPLEMENTATION,
        )
        self.length_bytes = length_bytes
        self.byteorder = byteorder
        self._pack = _header_packer(byteorder, length_bytes)
        # Sending is limited by the header's width only: max_frame is what
        # this side accepts (as Netty's and tokio's length codecs do).
        self._encode_limit = (1 << (8 * length_bytes)) - 1

    def _too_long_message(self, length: int) -> str:
        return too_long_message("len", length, self._max_frame)

    def _refuse(self, payload: Buffer) -> FrameTooLongError:
        length = len(payload)
        header_max = self._encode_limit
        return FrameTooLongError(
            f"cannot encode a payload of {length} bytes: it exceeds "
            f"the {self.length_bytes}-byte header's maximum {header_max}",
            limit=header_max,
            length=length,
        )

    def encode(self, payload: Buffer) -> bytes:
        """Return the header and payload as one bytes object."""
        if len(payload) > self._encode_limit:
            raise self._refuse(payload)
        return self._pack(len(payload)) + payload

    def encode_many(self, payloads: Iterable[Buffer]) -> bytes:
        """Return the frames of all payloads, concatenated, for one write."""
        pack = self._pack
        limit = self._encode_limit
        if type(payloads) is list and len(payloads) == 1 and len(payloads[0]) <= limit:
            payload: Buffer = payloads[0]  # one reply: no join
            header: bytes = pack(len(payload))
            return header + payload
        parts: list[Buffer] = []
        append = parts.append
        for payload in payloads:
            if len(payload) > limit:
                raise self._refuse(payload)
            append(pack(len(payload)))
            append(payload)
        return b"".join(parts)


class LineFramer(_StreamFramer):
    """Frames are lines ended by a delimiter."""

    __slots__ = ("_cr_delimiter", "_single_byte", "delimiter", "on_too_long", "strip_cr")

    _what = "line"

    def __init__(
        self,
        *,
        delimiter: bytes = b"\n",
        strip_cr: bool = True,
        max_frame: int = DEFAULT_MAX_LINE,
        on_too_long: Literal["error", "discard"] = "error",
        implementation: str | None = None,
    ) -> None:
        if not isinstance(delimiter, bytes):
            raise TypeError(f"delimiter must be bytes, not {type(delimiter).__name__}")
        if not 1 <= len(delimiter) <= MAX_DELIMITER:
            raise ValueError(f"delimiter must be 1 to {MAX_DELIMITER} bytes, not {len(delimiter)}")
        if on_too_long not in ("error", "discard"):
            raise ValueError(f"on_too_long must be 'error' or 'discard', not {on_too_long!r}")
        _check_limit("max_frame", max_frame)
        backend = _backend.get(implementation)
        discard = on_too_long == "discard"
        super().__init__(
            backend.LineScanner(delimiter, bool(strip_cr), discard, max_frame),
            max_frame,
            recoverable=discard,
            implementation=backend.IMPLEMENTATION,
        )
        self.delimiter = delimiter
        self.strip_cr = bool(strip_cr)
        self.on_too_long = on_too_long
        self._single_byte = len(delimiter) == 1
        self._cr_delimiter = b"\r" + delimiter  # with strip_cr: a line the peer shortens

    def _too_long_message(self, length: int) -> str:
        return too_long_message("line", length, self._max_frame)

    def _check(self, payload: Buffer) -> None:
        length = len(payload)
        data = bytes(payload) + self.delimiter
        if data.find(self.delimiter) != length:
            raise delimiter_in_payload(self.delimiter)
        if self.strip_cr and data[length - 1 : length] == b"\r":
            raise trailing_cr()

    def encode(self, payload: Buffer) -> bytes:
        """Return the payload followed by the delimiter."""
        self._check(payload)
        return bytes(payload) + self.delimiter

    def encode_many(self, payloads: Iterable[Buffer]) -> bytes:
        """Return all payloads as lines, concatenated, for one write."""
        items = payloads if isinstance(payloads, list) else list(payloads)
        if not items:
            return b""
        delimiter = self.delimiter
        joined = delimiter.join(items)
        # Fast path: a one-byte delimiter is absent from every payload exactly
        # when the joined text holds len(items) - 1 of them; with strip_cr, no
        # payload ends in "\r" exactly when "\r" + delimiter is absent too.
        if (
            self._single_byte
            and joined.count(delimiter) == len(items) - 1
            and not (self.strip_cr and (joined.endswith(b"\r") or self._cr_delimiter in joined))
        ):
            return joined + delimiter
        for payload in items:
            self._check(payload)
        return joined + delimiter


def too_long_message(framing: str, length: int, max_frame: int) -> str:
    """What a :class:`FrameTooLongError` says of an incoming frame or line."""
    if framing == "len":
        return f"frame header announces {length} bytes, over max_frame={max_frame}"
    return f"line longer than max_frame={max_frame}: {length} bytes seen"


def incomplete_frame(what: str, buffered: int) -> IncompleteFrameError:
    """The error for a stream that ended inside a ``what`` ("frame", "line")."""
    return IncompleteFrameError(
        f"connection closed inside a {what}: {buffered} bytes of it received", buffered=buffered
    )


def delimiter_in_payload(delimiter: bytes) -> DelimiterInPayloadError:
    """The error for a line that holds its delimiter before its end."""
    return DelimiterInPayloadError(
        f"cannot encode a line that contains the delimiter {delimiter!r}"
    )


def trailing_cr() -> DelimiterInPayloadError:
    """The error for a line the receiver would shorten (``strip_cr=True``)."""
    return DelimiterInPayloadError(
        "cannot encode a line ending with b'\\r': the receiver strips it (strip_cr=True)"
    )


class RawFramer:
    """No framing: each chunk received is one message, payloads are sent as they are.

    This is the seed's wire format, kept to serve old clients and to show the
    sticky-packet problem; it cannot tell where messages begin and end.
    """

    __slots__ = ()

    implementation = "python"  # nothing to scan
    max_frame = 0  # unused: a message is whatever one read returns
    buffered = 0

    def feed(self, data: Buffer) -> list[bytes]:
        return [bytes(data)] if data else []

    def feed_eof(self) -> None:
        return None

    def encode(self, payload: Buffer) -> bytes:
        return bytes(payload)

    def encode_many(self, payloads: Iterable[Buffer]) -> bytes:
        return b"".join(payloads)


def make_framer(
    framing: str,
    *,
    length_bytes: int = 4,
    byteorder: Literal["big", "little"] = "big",
    max_frame: int | None = None,
    delimiter: bytes = b"\n",
    strip_cr: bool = True,
    on_too_long: Literal["error", "discard"] = "error",
    implementation: str | None = None,
) -> Framer:
    """Return a new framer for ``framing`` ``"line"``, ``"len"`` or ``"raw"``.

    ``max_frame=None`` means the framing's default (64 KiB lines, 1 MiB frames).
    Options that do not apply to the framing are ignored.
    """
    if framing == "len":
        return LengthPrefixedFramer(
            length_bytes=length_bytes,
            byteorder=byteorder,
            max_frame=DEFAULT_MAX_FRAME if max_frame is None else max_frame,
            implementation=implementation,
        )
    if framing == "line":
        return LineFramer(
            delimiter=delimiter,
            strip_cr=strip_cr,
            max_frame=DEFAULT_MAX_LINE if max_frame is None else max_frame,
            on_too_long=on_too_long,
            implementation=implementation,
        )
    if framing == "raw":
        return RawFramer()
    raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")


@dataclasses.dataclass(frozen=True)
class FramingConfig:
    """How each connection frames its messages: the arguments of :func:`make_framer`.

    ``new_framer()`` returns a fresh framer (one per connection).  The
    configuration is checked when it is created.
    """

    framing: str = "line"
    length_bytes: int = 4
    byteorder: Literal["big", "little"] = "big"
    max_frame: int | None = None
    delimiter: bytes = b"\n"
    strip_cr: bool = True
    on_too_long: Literal["error", "discard"] = "error"
    implementation: str | None = None

    def __post_init__(self) -> None:
        self.new_framer()

    def new_framer(self) -> Framer:
        return make_framer(**dataclasses.asdict(self))
