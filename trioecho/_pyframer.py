"""Pure-Python frame scanners: the behaviour-identical twin of ``csrc/framer.c``.

Each scanner takes the caller's whole unconsumed buffer (``bytes`` or
``bytearray``) and returns ``(frames, consumed, too_long)``:

* ``frames``: the complete frames found, as ``bytes``, in order;
* ``consumed``: how many bytes the caller must drop from the buffer's front
  before the next scan;
* ``too_long``: ``-1``, or the length seen when a frame broke ``max_frame``
  (the frames before it are still returned).

The scanners keep their position between calls, so every byte is examined
once however the stream is chunked.  ``trioecho._cframer`` implements the
same contract in C; the test suite runs against both.
"""

from __future__ import annotations

import struct

IMPLEMENTATION = "python"

_CR = 0x0D
_HEADER_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


class LengthScanner:
    """Splits length-prefixed frames: a 1/2/4/8-byte unsigned length, then the payload."""

    __slots__ = ("_header_bytes", "_max_frame", "_unpack_from")

    def __init__(self, header_bytes: int, little_endian: bool, max_frame: int) -> None:
        order = "<" if little_endian else ">"
        self._header_bytes = header_bytes
        self._max_frame = max_frame
        self._unpack_from = struct.Struct(order + _HEADER_FORMATS[header_bytes]).unpack_from

    def scan(self, buf: bytes | bytearray) -> tuple[list[bytes], int, int]:
        header_bytes = self._header_bytes
        max_frame = self._max_frame
        unpack_from = self._unpack_from
        size = len(buf)
        frames: list[bytes] = []
        pos = 0
        while size - pos >= header_bytes:
            (length,) = unpack_from(buf, pos)
            if length > max_frame:
                return frames, pos, length
            start = pos + header_bytes
            if length > size - start:
                break
            pos = start + length
            frames.append(bytes(buf[start:pos]))
        return frames, pos, -1


class LineScanner:
    """Splits delimited lines, remembering where the last scan stopped."""

    __slots__ = (
        "_delimiter",
        "_discard",
        "_discarding",
        "_max_frame",
        "_search_from",
        "_strip_cr",
    )

    def __init__(self, delimiter: bytes, strip_cr: bool, discard: bool, max_frame: int) -> None:
        self._delimiter = delimiter
        self._strip_cr = strip_cr
        self._discard = discard
        self._max_frame = max_frame
        self._search_from = 0  # first position a delimiter may start at
        self._discarding = False  # dropping the rest of an over-long line

    def _payload_length(self, buf: bytes | bytearray, line_start: int, end: int) -> int:
        if self._strip_cr and end > line_start and buf[end - 1] == _CR:
            return end - line_start - 1
        return end - line_start

    def scan(self, buf: bytes | bytearray) -> tuple[list[bytes], int, int]:
        delimiter = self._delimiter
        dlen = len(delimiter)
        size = len(buf)
        frames: list[bytes] = []
        line_start = 0
        pos = min(self._search_from, size)
        if dlen == 1 and not self._discarding:
            # Everything up to the last delimiter within the limit: no line
            # in it can be over-long, so bytes.split may cut them all (with
            # strip_cr, if no line holds a '\r' to strip).
            last = buf.rfind(delimiter, pos)
            if 0 <= last <= self._max_frame:
                region = bytes(buf[: last + 1])
                if not self._strip_cr or b"\r" not in region:
                    frames = region.split(delimiter)
                    frames.pop()
                    line_start = pos = last + 1
        while True:
            d = buf.find(delimiter, pos)
            if d < 0:
                break
            if self._discarding:
                self._discarding = False
                line_start = pos = d + dlen
                continue
            payload = self._payload_length(buf, line_start, d)
            if payload > self._max_frame:
                self._search_from = 0
                return frames, (d + dlen if self._discard else line_start), payload
            frames.append(bytes(buf[line_start : line_start + payload]))
            line_start = pos = d + dlen

        # buf[line_start:] is an unfinished line; only its last dlen - 1 bytes
        # can begin a delimiter that is still to arrive.
        next_search = size - dlen + 1 if size - line_start >= dlen else line_start
        if self._discarding:
            self._search_from = 0
            return frames, next_search, -1
        end = size
        for q in range(next_search, size):
            if delimiter.startswith(buf[q:]):
                end = q
                break
        min_payload = self._payload_length(buf, line_start, end)
        if min_payload > self._max_frame:
            if self._discard:
                self._discarding = True
                self._search_from = 0
                return frames, next_search, min_payload
            return frames, line_start, min_payload
        self._search_from = next_search - line_start
        return frames, line_start, -1
