"""Pure-Python echo engine: the behaviour-identical twin of ``csrc/echo.c``.

An engine answers the complete messages of the caller's unconsumed buffer
(``bytes`` or ``bytearray``; the buffer contract of ``csrc/echo.h``) and
``feed(buf)`` returns an :class:`EngineResult`: the framed replies, the bytes
consumed, the messages answered and received, the status it ended on, and
the over-long lines dropped in discard mode.

The C engine writes into an output buffer of ``capacity`` bytes and
produces larger replies in pieces; this one builds its output with no fixed
capacity and only checks the argument.  ``trioecho.services._cecho`` implements the
same contract; the test suite and the fuzzer run both.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from trioecho.framing.contract import HEADER_FORMATS, header_struct

IMPLEMENTATION = "python"


class Status(IntEnum):
    """What one engine call ended on: the values of csrc/echo.h's ``TE_ECHO_*``."""

    NEED = 0  # all input consumed: more is needed
    MORE = 1  # the output buffer is full: call again on the rest
    STOP = 2  # the stop message
    TOO_LONG = 3  # a message over max_frame ends the session
    DROPPED = 4  # an over-long line dropped (discard mode): call again on the rest
    BAD_REPLY = 5  # a reply cannot be framed (see ReplyProblem)
    BROKEN = 6  # called again after an ending


class ReplyProblem(IntEnum):
    """Why a reply cannot be framed (``length`` of a BAD_REPLY result)."""

    DELIMITER = 1  # a line's reply holds its delimiter before its end
    CR = 2  # a line's reply ends in a \r the peer strips


NEED, MORE, STOP, TOO_LONG, DROPPED, BAD_REPLY, BROKEN = Status
REPLY_DELIMITER, REPLY_CR = ReplyProblem
MAX_AFFIX = 64
FRAMINGS = {"len": 0, "line": 1, "raw": 2}

_CR = 0x0D
_NO_DROPS: tuple[int, ...] = ()


class EngineResult(NamedTuple):
    """What one ``feed`` of an engine (either twin) returns."""

    wire: bytes
    """The framed replies, in order."""
    consumed: int
    """Bytes the caller must drop from the front of its buffer."""
    replies: int
    """Messages answered."""
    received: int
    """Messages consumed: the answered ones and the stop message."""
    status: int
    """A :class:`Status` value: ``NEED``, ``STOP``, ``TOO_LONG``, ``BAD_REPLY``
    or ``BROKEN`` (``MORE`` and ``DROPPED`` never leave the engine)."""
    length: int
    """The length seen with ``TOO_LONG``; the :class:`ReplyProblem` with
    ``BAD_REPLY``; otherwise 0."""
    dropped: tuple[int, ...] | list[int]
    """Discard mode: the lengths of the over-long lines dropped, in order."""


def check_config(
    framing: str,
    header_bytes: int,
    delimiter: bytes,
    max_frame: int,
    suffix: bytes,
    stop: bytes,
    capacity: int,
) -> None:
    """Raise ValueError where ``te_echo_init`` refuses the configuration."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {tuple(FRAMINGS)}, not {framing!r}")
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, not {capacity}")
    for name, value in (("suffix", suffix), ("stop", stop)):
        if len(value) > MAX_AFFIX:
            raise ValueError(f"{name} must be at most {MAX_AFFIX} bytes, not {len(value)}")
    if framing == "len":
        if header_bytes not in HEADER_FORMATS:
            raise ValueError(f"length_bytes must be 1, 2, 4 or 8, not {header_bytes!r}")
        largest = (1 << (8 * header_bytes)) - 1 - len(suffix)
        if max_frame > largest:
            raise ValueError(
                f"max_frame={max_frame} leaves no room for the reply: a {header_bytes}-byte "
                f"header carries at most {largest + len(suffix)} bytes and each reply adds "
                f"{len(suffix)}, so max_frame must be at most {largest}"
            )
    elif framing == "line" and not 1 <= len(delimiter) <= 8:
        raise ValueError(f"delimiter must be 1 to 8 bytes, not {len(delimiter)}")


class EchoEngine:
    """Answers each complete message with ``message + suffix``; see the module docstring."""

    __slots__ = (
        "_delimiter",
        "_discard",
        "_discarding",
        "_framing",
        "_header",
        "_max_frame",
        "_over",
        "_pack",
        "_search_from",
        "_stop",
        "_strip_cr",
        "_suffix",
        "_suffix_safe",
        "_unpack_from",
    )

    def __init__(
        self,
        framing: str,
        header_bytes: int,
        little_endian: bool,
        delimiter: bytes,
        strip_cr: bool,
        discard: bool,
        max_frame: int,
        suffix: bytes,
        stop: bytes,
        capacity: int,
    ) -> None:
        check_config(framing, header_bytes, delimiter, max_frame, suffix, stop, capacity)
        self._framing = framing
        self._max_frame = max_frame
        self._suffix = suffix
        self._stop = stop
        self._over = False
        self._header = header_bytes
        if framing == "len":
            header = header_struct(header_bytes, little_endian)
            self._unpack_from = header.unpack_from
            self._pack = header.pack
        self._delimiter = delimiter
        self._strip_cr = strip_cr
        self._discard = discard
        self._search_from = 0
        self._discarding = False
        self._suffix_safe = len(delimiter) == 1 and delimiter not in suffix

    def feed(self, buf: bytes | bytearray) -> EngineResult:
        if self._over:
            return EngineResult(b"", 0, 0, 0, BROKEN, 0, _NO_DROPS)
        if self._framing == "len":
            return self._feed_length(buf)
        if self._framing == "line":
            return self._feed_line(buf)
        return self._feed_raw(buf)

    # -- length prefixes ---------------------------------------------------

    def _feed_length(self, buf: bytes | bytearray) -> EngineResult:
        h = self._header
        unpack_from = self._unpack_from
        pack = self._pack
        suffix = self._suffix
        stop = self._stop
        extra = len(suffix)
        size = len(buf)
        parts: list[bytes | bytearray] = []
        pos = replies = 0
        while size - pos >= h:
            (length,) = unpack_from(buf, pos)
            if length > self._max_frame:
                self._over = True
                return EngineResult(
                    b"".join(parts), pos, replies, replies, TOO_LONG, length, _NO_DROPS
                )
            start = pos + h
            if length > size - start:
                break
            end = start + length
            payload = buf[start:end]
            pos = end
            if payload == stop:
                self._over = True
                return EngineResult(b"".join(parts), pos, replies, replies + 1, STOP, 0, _NO_DROPS)
            parts += (pack(length + extra), payload, suffix)
            replies += 1
        return EngineResult(b"".join(parts), pos, replies, replies, NEED, 0, _NO_DROPS)

    # -- raw ---------------------------------------------------------------

    def _feed_raw(self, buf: bytes | bytearray) -> EngineResult:
        size = len(buf)
        if size == 0:
            return EngineResult(b"", 0, 0, 0, NEED, 0, _NO_DROPS)
        if buf == self._stop:
            self._over = True
            return EngineResult(b"", size, 0, 1, STOP, 0, _NO_DROPS)
        return EngineResult(bytes(buf) + self._suffix, size, 1, 1, NEED, 0, _NO_DROPS)

    # -- lines -------------------------------------------------------------

    def _payload_length(self, buf: bytes | bytearray, line_start: int, end: int) -> int:
        if self._strip_cr and end > line_start and buf[end - 1] == _CR:
            return end - line_start - 1
        return end - line_start

    def _unfinished(self, buf: bytes | bytearray, line_start: int) -> tuple[int, int]:
        """``te_unfinished_line``: (least payload length, next search position)."""
        delimiter = self._delimiter
        size = len(buf)
        next_search = (
            size - len(delimiter) + 1 if size - line_start >= len(delimiter) else line_start
        )
        end = size
        for q in range(next_search, size):
            if delimiter.startswith(buf[q:]):
                end = q
                break
        return self._payload_length(buf, line_start, end), next_search

    def _reply_fault(self, payload: bytes | bytearray) -> int:
        """``line_reply_fault``: 0, or why payload + suffix is not one line."""
        suffix = self._suffix
        if self._strip_cr:
            last = suffix[-1:] if suffix else payload[-1:]
            if last == b"\r":
                return REPLY_CR
        if self._suffix_safe:
            return 0
        delimiter = self._delimiter
        tail = min(len(payload), len(delimiter) - 1)
        window = bytes(payload[len(payload) - tail :]) + suffix + delimiter
        if window.find(delimiter) != len(window) - len(delimiter):
            return REPLY_DELIMITER
        return 0

    def _feed_line(self, buf: bytes | bytearray) -> EngineResult:
        delimiter = self._delimiter
        dlen = len(delimiter)
        suffix = self._suffix
        stop = self._stop
        max_frame = self._max_frame
        size = len(buf)
        parts: list[bytes | bytearray] = []
        dropped: list[int] | tuple[int, ...] = _NO_DROPS
        pos = replies = received = 0
        # strip_cr: a region without '\r' has nothing to strip.
        fast = self._suffix_safe and not (self._strip_cr and suffix.endswith(b"\r"))
        while True:
            line_start = pos
            search = min(pos + self._search_from, size)
            self._search_from = 0
            if fast and not self._discarding:
                # Everything up to the last delimiter within the limit: no
                # line in it is over-long, so bytes.split may cut them all.
                # Tried once per call, so that the scan stays linear.
                fast = False
                last = buf.rfind(delimiter, search)
                region = bytes(buf[pos:last]) if last >= 0 and last - pos <= max_frame else None
                if region is not None and not (self._strip_cr and b"\r" in region):
                    lines = region.split(delimiter)
                    stopped = stop in lines
                    if stopped:
                        count = lines.index(stop)
                        del lines[count:]
                        end = pos + sum(map(len, lines)) + count + len(stop) + 1
                    else:
                        count = len(lines)
                        end = last + 1
                    if lines:
                        joiner = suffix + delimiter
                        parts += (joiner.join(lines), joiner)
                    replies += count
                    received += count
                    if stopped:
                        self._over = True
                        return EngineResult(
                            b"".join(parts), end, replies, received + 1, STOP, 0, dropped
                        )
                    line_start = pos = search = end
            while True:
                d = buf.find(delimiter, search)
                if not self._discarding:
                    break
                if d < 0:
                    # Still inside the line being dropped.
                    pos = self._unfinished(buf, line_start)[1]
                    return EngineResult(b"".join(parts), pos, replies, received, NEED, 0, dropped)
                self._discarding = False
                line_start = search = pos = d + dlen
            if d < 0:
                min_payload, next_search = self._unfinished(buf, line_start)
                if min_payload > max_frame:
                    if self._discard:
                        self._discarding = True
                        pos = next_search
                        dropped = [*dropped, min_payload]
                        continue
                    self._over = True
                    return EngineResult(
                        b"".join(parts), pos, replies, received, TOO_LONG, min_payload, dropped
                    )
                self._search_from = next_search - line_start
                return EngineResult(b"".join(parts), pos, replies, received, NEED, 0, dropped)
            payload_length = self._payload_length(buf, line_start, d)
            if payload_length > max_frame:
                if self._discard:
                    pos = d + dlen
                    dropped = [*dropped, payload_length]
                    continue
                self._over = True
                return EngineResult(
                    b"".join(parts), pos, replies, received, TOO_LONG, payload_length, dropped
                )
            payload = buf[line_start : line_start + payload_length]
            if payload == stop:
                self._over = True
                return EngineResult(
                    b"".join(parts), d + dlen, replies, received + 1, STOP, 0, dropped
                )
            fault = self._reply_fault(payload)
            if fault:
                self._over = True
                return EngineResult(
                    b"".join(parts), pos, replies, received, BAD_REPLY, fault, dropped
                )
            parts += (payload, suffix, delimiter)
            replies += 1
            received += 1
            pos = d + dlen
