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
    an unsigned length of 1, 2, 3, 4 or 8 bytes (default 4, big endian), then
    that many payload bytes.  The length counts the payload only; zero is
    valid.  Netty's options: ``length_offset`` bytes before the length field,
    ``length_adjustment`` added to its value (-4 when it counts itself), and
    ``include_header`` to keep the bytes before the payload in each frame.  A
    length over ``max_frame`` (default 1 MiB) fails as soon as the header is
    complete, before any of the body is awaited or buffered.
``VarintFramer``
    the length as an unsigned LEB128 varint (protobuf's delimited format,
    MQTT's remaining length) of at most ``max_length_bytes``; the same
    offset and header options.  Over-long and non-minimal varints fail.
``FixedLengthFramer``
    every frame ``frame_size`` bytes.
``LineFramer``
    payloads separated by a delimiter (default ``b"\\n"``; any 1 to 8 bytes),
    or by the first to occur of up to 8 delimiters.
    One ``\\r`` before the delimiter is removed too (``strip_cr=True``, the
    default, as in Netty's and tokio's line decoders: telnet and Windows
    clients send ``\\r\\n``); ``strip_cr=False`` keeps it.  A line
    over ``max_frame`` bytes (default 64 KiB, delimiter and stripped ``\\r``
    excluded) fails as soon as it can no longer end within the limit.
    ``on_too_long="discard"`` reports the over-long line once and then drops
    it through its delimiter and carries on (Netty's discard mode).
``PhasedFramer``
    one framing for a stream's first frame, another after it (PostgreSQL's
    startup packet); see ``trioecho.presets``.
``RawFramer``
    no framing: each chunk received is one message (the seed's wire format).

Errors: a frame over ``max_frame`` raises :class:`FrameTooLongError`, a
malformed header (a negative adjusted length, a bad varint)
:class:`MalformedFrameError`; their ``frames`` attribute holds the frames
completed before the bad one.  After that error the framer is broken and
raises it again on every ``feed``, except for an over-long line in discard
mode, where it keeps the bytes after the bad line: call ``feed(b"")`` to get
the frames they complete.  Bytes are never lost or reordered, and memory
stays bounded by ``max_frame`` plus the header plus one read.

Framers are not thread-safe: one framer, one task.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, NoReturn, Protocol, cast

from . import _backend, _pyframer
from ._errors import (
    DelimiterInPayloadError,
    FrameTooLongError,
    FramingError,
    IncompleteFrameError,
    MalformedFrameError,
)
from ._pyframer import (
    FIELD_NONE,
    FIELD_UINT,
    FIELD_VARINT,
    HEADER_FORMATS,
    LENGTH_BYTES,
    MAX_ADJUSTMENT,
    MAX_OFFSET,
    MAX_VARINT,
    TOO_LONG,
    VARINT_NOT_MINIMAL,
    Problem,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_LINE",
    "FRAMINGS",
    "FixedLengthFramer",
    "Framer",
    "FramingConfig",
    "LengthPrefixedFramer",
    "LineFramer",
    "PhasedFramer",
    "RawFramer",
    "VarintFramer",
    "make_framer",
    "presets",
]

DEFAULT_MAX_FRAME = 1 << 20  # length-prefixed frames: 1 MiB
DEFAULT_MAX_LINE = 64 << 10  # lines: 64 KiB, as asyncio and Go's bufio
MAX_DELIMITER = 8
MAX_DELIMITERS = 8
FRAMINGS = ("line", "len", "raw", "varint", "fixed")

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

    def scan(self, buf: bytes | bytearray) -> tuple[list[bytes], int, Problem | None]: ...


class _FirstFrameScanner(_Scanner, Protocol):
    """A length-family scanner: it can also stop after the first frame."""

    def scan_first(self, buf: bytes | bytearray) -> tuple[list[bytes], int, Problem | None]: ...


@functools.cache
def _header_packer(
    byteorder: Literal["big", "little"], length_bytes: int
) -> Callable[[int], bytes]:
    """``pack`` of the header format, shared by every framer that uses it."""
    if length_bytes == 3:
        return functools.partial(int.to_bytes, length=3, byteorder=byteorder)
    order = "<" if byteorder == "little" else ">"
    return struct.Struct(order + HEADER_FORMATS[length_bytes]).pack


def _check_range(name: str, value: int, low: int, high: int, shown: str | None = None) -> int:
    """``value`` if it is an int in [low, high] (``shown``: how to write high)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {shown or high}, not {value}")
    return value


def _check_limit(name: str, value: int) -> int:
    return _check_range(name, value, 0, _MAX_LIMIT, "2**63-1")


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
        self._broken: FramingError | None = None
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
            raise self._again()
        # The buffered bytes plus ``data`` are scanned and what the scanner
        # consumed is dropped; an empty buffer is not copied into (the read
        # itself is scanned).  Inline: this runs for every read.
        buffer = self._buffer
        if buffer:
            buffer += data
            frames, consumed, problem = self._scanner.scan(buffer)
            if consumed < len(buffer):
                del buffer[:consumed]
            else:  # a new one: an emptied bytearray keeps its capacity
                self._buffer = bytearray()
        else:
            if type(data) is not bytes:
                data = bytes(data)
            frames, consumed, problem = self._scanner.scan(data)
            if consumed < len(data):
                buffer += memoryview(data)[consumed:]
        if problem is not None:
            self._fail(problem, frames)
        return frames

    def _fail(self, problem: Problem, frames: list[bytes]) -> NoReturn:
        """Raise the error for ``problem``; the framer is broken after it,
        unless it is an over-long line in discard mode."""
        error = self._error(problem, frames)
        if not self._recoverable or problem[0] != TOO_LONG:
            self._broken = error
            self._buffer.clear()
        raise error

    def feed_eof(self) -> None:
        """The peer closed its side: raise IncompleteFrameError if a frame is unfinished."""
        if self._buffer and self._broken is None:
            raise incomplete_frame(self._what, len(self._buffer))

    def _again(self) -> FramingError:
        """The error of a broken framer, raised again (without frames)."""
        broken = self._broken
        assert broken is not None
        message = "framer stopped after an earlier error: " + str(broken)
        if isinstance(broken, FrameTooLongError):
            return FrameTooLongError(message, limit=broken.limit, length=broken.length)
        assert isinstance(broken, MalformedFrameError)
        return MalformedFrameError(message, value=broken.value)

    def _error(self, problem: Problem, frames: list[bytes]) -> FramingError:
        code, value, field_len = problem
        if code == TOO_LONG:
            return FrameTooLongError(
                self._too_long_message(value), limit=self._max_frame, length=value, frames=frames
            )
        return MalformedFrameError(
            self._malformed_message(code, value, field_len), value=value, frames=frames
        )

    def _too_long_message(self, length: int) -> str:
        raise NotImplementedError

    def _malformed_message(self, code: int, value: int, field_len: int) -> str:
        raise NotImplementedError  # only the length family reports these

    def encode(self, payload: Buffer) -> bytes:
        raise NotImplementedError

    def encode_many(self, payloads: Iterable[Buffer]) -> bytes:
        """Return the frames of all payloads, concatenated, for one write."""
        return b"".join([self.encode(payload) for payload in payloads])

    def _feed_first(self, data: Buffer) -> list[bytes]:
        """:meth:`feed`, stopping after the first frame (the rest stays
        buffered); for :class:`PhasedFramer`."""
        if self._broken is not None:
            raise self._again()
        self._buffer += data
        scanner = cast(_FirstFrameScanner, self._scanner)
        frames, consumed, problem = scanner.scan_first(self._buffer)
        del self._buffer[:consumed]
        if problem is not None:
            self._fail(problem, frames)
        return frames

    def _take_buffered(self) -> bytes:
        """Hand over the unconsumed bytes (and forget them)."""
        data = bytes(self._buffer)
        self._buffer = bytearray()
        return data


class LengthFieldFramer(_StreamFramer):
    """What the length-field framers share: the header's layout
    (``length_offset`` bytes, then the field), ``include_header``, the error
    messages, and encoding a frame that includes its header."""

    __slots__ = ("include_header", "length_offset")

    def __init__(
        self,
        *,
        field: int,
        header_bytes: int,
        little_endian: bool,
        max_frame: int,
        length_offset: int,
        length_adjustment: int,
        include_header: bool,
        implementation: str | None,
    ) -> None:
        _check_limit("max_frame", max_frame)
        _check_range("length_offset", length_offset, 0, MAX_OFFSET)
        backend = _backend.get(implementation)
        super().__init__(
            backend.LengthScanner(
                header_bytes,
                little_endian,
                max_frame,
                field=field,
                length_offset=length_offset,
                length_adjustment=length_adjustment,
                include_header=bool(include_header),
            ),
            max_frame,
            recoverable=False,
            implementation=backend.IMPLEMENTATION,
        )
        self.length_offset = length_offset
        self.include_header = bool(include_header)

    def _header_size(self, frame: Buffer) -> int:
        raise NotImplementedError

    def _field_bytes(self, body_length: int) -> bytes:
        raise NotImplementedError

    def _too_long_message(self, length: int) -> str:
        return too_long_message("len", length, self._max_frame)

    @property
    def can_encode(self) -> bool:
        """Whether :meth:`encode` can rebuild a frame: not when the bytes
        before the length field are dropped from the frames (``length_offset``
        without ``include_header``)."""
        return self.include_header or self.length_offset == 0

    def encode(self, payload: Buffer) -> bytes:
        """Return the frame to send for ``payload``.

        Without ``include_header``: the length field, then the payload.  With
        it, ``payload`` is a whole frame as :meth:`feed` returns them (the
        bytes before the length field, a length field, the body): the same
        frame comes back with its length field rewritten to fit the body.
        """
        if not self.include_header:
            if self.length_offset:
                raise MalformedFrameError(
                    f"cannot encode without include_header=True: the {self.length_offset} "
                    "bytes before the length field are not in the payload (see encode_parts)"
                )
            return self._field_bytes(len(payload)) + payload
        header = self._header_size(payload)
        offset = self.length_offset
        return bytes(payload[:offset]) + self._field_bytes(len(payload) - header) + payload[header:]

    def encode_parts(self, before: Buffer, body: Buffer) -> bytes:
        """Return the frame of ``body`` with ``before`` (exactly
        ``length_offset`` bytes: a type byte, say) ahead of its length field."""
        if len(before) != self.length_offset:
            raise ValueError(
                f"before must be length_offset={self.length_offset} bytes, not {len(before)}"
            )
        return bytes(before) + self._field_bytes(len(body)) + body


class LengthPrefixedFramer(LengthFieldFramer):
    """Frames are an unsigned length field followed by the payload, optionally
    after ``length_offset`` other bytes; see the module docstring."""

    __slots__ = (
        "_encode_limit",
        "_pack",
        "_plain",
        "byteorder",
        "length_adjustment",
        "length_bytes",
    )

    def __init__(
        self,
        *,
        length_bytes: int = 4,
        byteorder: Literal["big", "little"] = "big",
        max_frame: int = DEFAULT_MAX_FRAME,
        length_offset: int = 0,
        length_adjustment: int = 0,
        include_header: bool = False,
        implementation: str | None = None,
    ) -> None:
        if length_bytes not in LENGTH_BYTES:
            raise ValueError(f"length_bytes must be 1, 2, 3, 4 or 8, not {length_bytes!r}")
        if byteorder not in ("big", "little"):
            raise ValueError(f"byteorder must be 'big' or 'little', not {byteorder!r}")
        _check_range("length_adjustment", length_adjustment, -MAX_ADJUSTMENT, MAX_ADJUSTMENT)
        super().__init__(
            field=FIELD_UINT,
            header_bytes=length_bytes,
            little_endian=byteorder == "little",
            max_frame=max_frame,
            length_offset=length_offset,
            length_adjustment=length_adjustment,
            include_header=include_header,
            implementation=implementation,
        )
        self.length_bytes = length_bytes
        self.byteorder = byteorder
        self.length_adjustment = length_adjustment
        self._plain = not (length_offset or length_adjustment or include_header)
        self._pack = _header_packer(byteorder, length_bytes)
        # Sending is limited by the header's width only: max_frame is what
        # this side accepts (as Netty's and tokio's length codecs do).
        self._encode_limit = (1 << (8 * length_bytes)) - 1

    def _malformed_message(self, code: int, value: int, field_len: int) -> str:
        # NEGATIVE_LENGTH: the only malformed header a fixed-width field has
        return (
            f"length field {value} with length_adjustment {self.length_adjustment} "
            f"gives a negative length {value + self.length_adjustment}"
        )

    def _header_size(self, frame: Buffer) -> int:
        size = self.length_offset + self.length_bytes
        if len(frame) < size:
            raise MalformedFrameError(
                f"cannot encode a frame of {len(frame)} bytes: its header alone is {size} bytes"
            )
        return size

    def _field_bytes(self, body_length: int) -> bytes:
        adjustment = self.length_adjustment
        field = body_length - adjustment
        if not 0 <= field <= self._encode_limit:
            raise FrameTooLongError(
                f"cannot encode a payload of {body_length} bytes: its length field "
                f"({body_length} - length_adjustment {adjustment} = {field}) does not "
                f"fit the {self.length_bytes}-byte field (0 to {self._encode_limit})",
                limit=self._encode_limit + adjustment,
                length=body_length,
            )
        return self._pack(field)

    def encode(self, payload: Buffer) -> bytes:
        """Return the frame for ``payload``: see :meth:`LengthFieldFramer.encode`."""
        if self._plain:
            if len(payload) > self._encode_limit:
                raise self._refuse(payload)
            return self._pack(len(payload)) + payload
        return super().encode(payload)

    def _refuse(self, payload: Buffer) -> FrameTooLongError:
        length = len(payload)
        header_max = self._encode_limit
        return FrameTooLongError(
            f"cannot encode a payload of {length} bytes: it exceeds "
            f"the {self.length_bytes}-byte header's maximum {header_max}",
            limit=header_max,
            length=length,
        )

    def encode_many(self, payloads: Iterable[Buffer]) -> bytes:
        """Return the frames of all payloads, concatenated, for one write."""
        if not self._plain:
            return super().encode_many(payloads)
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


def encode_varint(value: int) -> bytes:
    """``value`` (>= 0) as an unsigned LEB128 varint, in the fewest bytes."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class VarintFramer(LengthFieldFramer):
    """Frames are a varint length (unsigned LEB128, as protobuf's delimited
    format and MQTT's remaining length) followed by the payload, optionally
    after ``length_offset`` other bytes; see the module docstring."""

    __slots__ = ("_encode_limit", "max_length_bytes")

    def __init__(
        self,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_length_bytes: int = MAX_VARINT,
        length_offset: int = 0,
        include_header: bool = False,
        implementation: str | None = None,
    ) -> None:
        _check_range("max_length_bytes", max_length_bytes, 1, MAX_VARINT)
        super().__init__(
            field=FIELD_VARINT,
            header_bytes=max_length_bytes,
            little_endian=False,
            max_frame=max_frame,
            length_offset=length_offset,
            length_adjustment=0,
            include_header=include_header,
            implementation=implementation,
        )
        self.max_length_bytes = max_length_bytes
        self._encode_limit = min((1 << (7 * max_length_bytes)) - 1, (1 << 64) - 1)

    def _malformed_message(self, code: int, value: int, field_len: int) -> str:
        if code == VARINT_NOT_MINIMAL:
            return (
                f"varint length {value} is not minimally encoded: {field_len} bytes "
                f"where {len(encode_varint(value))} suffice"
            )
        return (  # BAD_VARINT
            f"varint length field longer than max_length_bytes={self.max_length_bytes} "
            f"or over 64 bits: value {value} in its first {field_len} bytes"
        )

    def _header_size(self, frame: Buffer) -> int:
        offset = self.length_offset
        data = bytes(frame[offset : offset + self.max_length_bytes])
        for i, byte in enumerate(data):
            if not byte & 0x80:
                return offset + i + 1
        raise MalformedFrameError(
            f"cannot encode a frame of {len(frame)} bytes: no varint length field "
            f"of at most {self.max_length_bytes} bytes after its first {offset} bytes"
        )

    def _field_bytes(self, body_length: int) -> bytes:
        if body_length > self._encode_limit:
            raise FrameTooLongError(
                f"cannot encode a payload of {body_length} bytes: its length needs more "
                f"than max_length_bytes={self.max_length_bytes} varint bytes "
                f"(at most {self._encode_limit})",
                limit=self._encode_limit,
                length=body_length,
            )
        return encode_varint(body_length)


class FixedLengthFramer(_StreamFramer):
    """Every frame is exactly ``frame_size`` bytes (Netty's
    ``FixedLengthFrameDecoder``): no header, nothing a peer can make too long."""

    __slots__ = ("frame_size",)

    def __init__(self, frame_size: int, *, implementation: str | None = None) -> None:
        _check_range("frame_size", frame_size, 1, _MAX_LIMIT)
        backend = _backend.get(implementation)
        super().__init__(
            backend.LengthScanner(0, False, frame_size, field=FIELD_NONE),
            frame_size,
            recoverable=False,
            implementation=backend.IMPLEMENTATION,
        )
        self.frame_size = frame_size

    def encode(self, payload: Buffer) -> bytes:
        """Return ``payload``, which must be exactly ``frame_size`` bytes."""
        if len(payload) != self.frame_size:
            raise MalformedFrameError(
                f"cannot encode a payload of {len(payload)} bytes: "
                f"every frame is frame_size={self.frame_size} bytes",
                value=len(payload),
            )
        return bytes(payload)


class LineFramer(_StreamFramer):
    """Frames are lines ended by a delimiter, or by the first of several."""

    __slots__ = (
        "_check_scanner",
        "_cr_delimiter",
        "_single_byte",
        "delimiter",
        "delimiters",
        "on_too_long",
        "strip_cr",
    )

    _what = "line"

    def __init__(
        self,
        *,
        delimiter: bytes | Sequence[bytes] = b"\n",
        strip_cr: bool = True,
        max_frame: int = DEFAULT_MAX_LINE,
        on_too_long: Literal["error", "discard"] = "error",
        implementation: str | None = None,
    ) -> None:
        delimiters = check_delimiters(delimiter)
        if on_too_long not in ("error", "discard"):
            raise ValueError(f"on_too_long must be 'error' or 'discard', not {on_too_long!r}")
        _check_limit("max_frame", max_frame)
        backend = _backend.get(implementation)
        discard = on_too_long == "discard"
        super().__init__(
            backend.LineScanner(delimiters, bool(strip_cr), discard, max_frame),
            max_frame,
            recoverable=discard,
            implementation=backend.IMPLEMENTATION,
        )
        self.delimiters = delimiters
        self.delimiter = delimiters[0]  # what encode() ends a line with
        self.strip_cr = bool(strip_cr)
        self.on_too_long = on_too_long
        self._single_byte = len(delimiters) == 1 and len(self.delimiter) == 1
        self._cr_delimiter = b"\r" + self.delimiter  # with strip_cr: a line the peer shortens
        self._check_scanner: Callable[[], _Scanner] | None = None
        if len(delimiters) > 1:
            self._check_scanner = functools.partial(
                _pyframer.LineScanner, delimiters, self.strip_cr, False, _MAX_LIMIT
            )

    def _too_long_message(self, length: int) -> str:
        return too_long_message("line", length, self._max_frame)

    def _check(self, payload: Buffer) -> None:
        length = len(payload)
        data = bytes(payload) + self.delimiter
        if self._check_scanner is not None:
            # Several delimiters: the line must read back as exactly itself.
            if self.strip_cr and data[length - 1 : length] == b"\r":
                raise trailing_cr()
            frames, consumed, _ = self._check_scanner().scan(data)
            if frames != [data[:length]] or consumed != len(data):
                raise delimiter_in_payload(self.delimiters)
            return
        if data.find(self.delimiter) != length:
            raise delimiter_in_payload(self.delimiter)
        if self.strip_cr and data[length - 1 : length] == b"\r":
            raise trailing_cr()

    def encode(self, payload: Buffer) -> bytes:
        """Return the payload followed by the (first) delimiter."""
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


def check_delimiters(delimiter: bytes | Sequence[bytes]) -> tuple[bytes, ...]:
    """``delimiter`` (one, or a sequence of them) as a checked tuple."""
    delimiters = (delimiter,) if isinstance(delimiter, bytes) else tuple(delimiter)
    if not 1 <= len(delimiters) <= MAX_DELIMITERS:
        raise ValueError(f"give 1 to {MAX_DELIMITERS} delimiters, not {len(delimiters)}")
    for one in delimiters:
        if not isinstance(one, bytes):
            raise TypeError(f"delimiter must be bytes, not {type(one).__name__}")
        if not 1 <= len(one) <= MAX_DELIMITER:
            raise ValueError(f"delimiter must be 1 to {MAX_DELIMITER} bytes, not {len(one)}")
    return delimiters


class PhasedFramer:
    """The first frame of a stream framed by ``first``, every later one by
    ``then`` (PostgreSQL's startup packet has no type byte; the messages after
    it do).  ``first`` is a length-field framer (:class:`LengthPrefixedFramer`,
    :class:`VarintFramer`, :class:`FixedLengthFramer`).  ``repeat(frame)``, if
    given, keeps ``first`` for the next frame too while it returns true of a
    frame it framed (PostgreSQL: a request for encryption is followed by
    another startup packet).  Encoding follows the same phases."""

    __slots__ = ("_first", "_first_encoder", "_repeat", "_then", "implementation")

    def __init__(
        self, first: Framer, then: Framer, *, repeat: Callable[[bytes], bool] | None = None
    ) -> None:
        if not isinstance(first, (LengthFieldFramer, FixedLengthFramer)):
            raise TypeError(f"first must be a length-field framer, not {type(first).__name__}")
        self._first: _StreamFramer | None = first
        self._first_encoder: Framer | None = first
        self._then = then
        self._repeat = repeat
        self.implementation = first.implementation

    @property
    def max_frame(self) -> int:
        return self._first.max_frame if self._first is not None else self._then.max_frame

    @property
    def buffered(self) -> int:
        return self._first.buffered if self._first is not None else self._then.buffered

    def _again(self, frame: Buffer) -> bool:
        return self._repeat is not None and bool(self._repeat(bytes(frame)))

    def feed(self, data: Buffer) -> list[bytes]:
        first = self._first
        if first is None:
            return self._then.feed(data)
        frames: list[bytes] = []
        try:
            while True:
                found = first._feed_first(data)  # one frame at most; the rest stays
                data = b""
                if not found:
                    return frames
                frames += found
                if not self._again(found[0]):
                    break
            self._first = None
            return frames + self._then.feed(first._take_buffered())
        except FramingError as exc:
            exc.frames[:0] = frames
            raise

    def feed_eof(self) -> None:
        if self._first is not None:
            self._first.feed_eof()
        else:
            self._then.feed_eof()

    def encode(self, payload: Buffer) -> bytes:
        encoder = self._first_encoder
        if encoder is None:
            return self._then.encode(payload)
        data = encoder.encode(payload)
        if not self._again(payload):
            self._first_encoder = None
        return data

    def encode_many(self, payloads: Iterable[Buffer]) -> bytes:
        return b"".join([self.encode(payload) for payload in payloads])


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


def delimiter_in_payload(delimiter: bytes | tuple[bytes, ...]) -> DelimiterInPayloadError:
    """The error for a line that holds its delimiter before its end."""
    if isinstance(delimiter, tuple):
        return DelimiterInPayloadError(
            f"cannot encode a line that would not read back as one line with the "
            f"delimiters {delimiter!r}"
        )
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
    delimiter: bytes | Sequence[bytes] = b"\n",
    strip_cr: bool = True,
    on_too_long: Literal["error", "discard"] = "error",
    length_offset: int = 0,
    length_adjustment: int = 0,
    include_header: bool = False,
    max_length_bytes: int = MAX_VARINT,
    frame_size: int | None = None,
    implementation: str | None = None,
) -> Framer:
    """Return a new framer for ``framing``: ``"line"``, ``"len"``, ``"raw"``,
    ``"varint"`` or ``"fixed"`` (which needs ``frame_size``).

    ``max_frame=None`` means the framing's default (64 KiB lines, 1 MiB frames).
    Options that do not apply to the framing are ignored.
    """
    limit = DEFAULT_MAX_LINE if framing == "line" else DEFAULT_MAX_FRAME
    if max_frame is not None:
        limit = max_frame
    if framing == "len":
        return LengthPrefixedFramer(
            length_bytes=length_bytes,
            byteorder=byteorder,
            max_frame=limit,
            length_offset=length_offset,
            length_adjustment=length_adjustment,
            include_header=include_header,
            implementation=implementation,
        )
    if framing == "line":
        return LineFramer(
            delimiter=delimiter,
            strip_cr=strip_cr,
            max_frame=limit,
            on_too_long=on_too_long,
            implementation=implementation,
        )
    if framing == "varint":
        return VarintFramer(
            max_frame=limit,
            max_length_bytes=max_length_bytes,
            length_offset=length_offset,
            include_header=include_header,
            implementation=implementation,
        )
    if framing == "fixed":
        if frame_size is None:
            raise ValueError("framing 'fixed' needs frame_size")
        return FixedLengthFramer(frame_size, implementation=implementation)
    if framing == "raw":
        return RawFramer()
    raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")


@dataclasses.dataclass(frozen=True)
class FramingConfig:
    """How each connection frames its messages: the arguments of :func:`make_framer`,
    and ``first_frame``: another configuration for a stream's first frame
    only (a :class:`PhasedFramer`; see ``trioecho.presets.postgresql``), used
    again after each first frame ``repeat_first_frame`` returns true of.

    ``new_framer()`` returns a fresh framer (one per connection).  The
    configuration is checked when it is created.
    """

    framing: str = "line"
    length_bytes: int = 4
    byteorder: Literal["big", "little"] = "big"
    max_frame: int | None = None
    delimiter: bytes | tuple[bytes, ...] = b"\n"
    strip_cr: bool = True
    on_too_long: Literal["error", "discard"] = "error"
    length_offset: int = 0
    length_adjustment: int = 0
    include_header: bool = False
    max_length_bytes: int = MAX_VARINT
    frame_size: int | None = None
    implementation: str | None = None
    first_frame: FramingConfig | None = None
    repeat_first_frame: Callable[[bytes], bool] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.delimiter, bytes):
            # A tuple (a list would not be hashable), or the one delimiter itself.
            delimiters = check_delimiters(self.delimiter)
            object.__setattr__(
                self, "delimiter", delimiters[0] if len(delimiters) == 1 else delimiters
            )
        self.new_framer()

    @property
    def plain(self) -> bool:
        """Whether this is one of the first release's framings (lines with one
        delimiter, a bare 1/2/4/8-byte length, raw): the ones the echo
        session's engine answers."""
        return (
            self.framing in ("line", "len", "raw")
            and isinstance(self.delimiter, bytes)
            and self.length_bytes != 3
            and not (self.length_offset or self.length_adjustment or self.include_header)
            and self.first_frame is None
        )

    def new_framer(self) -> Framer:
        options = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name not in ("first_frame", "repeat_first_frame")
        }
        framer = make_framer(**options)
        first = self.first_frame
        if first is not None:
            if first.implementation is None and self.implementation is not None:
                first = dataclasses.replace(first, implementation=self.implementation)
            return PhasedFramer(first.new_framer(), framer, repeat=self.repeat_first_frame)
        return framer


from . import presets as presets  # noqa: E402  (presets build FramingConfig objects)
