"""Pure-Python frame scanners: the behaviour-identical twin of ``csrc/framer.c``.

Each scanner takes the caller's whole unconsumed buffer (``bytes`` or
``bytearray``) and returns ``(frames, consumed, problem)``:

* ``frames``: the complete frames found, as ``bytes``, in order;
* ``consumed``: how many bytes the caller must drop from the buffer's front
  before the next scan;
* ``problem``: ``None``, or a :class:`Problem` when the input broke
  a rule (the frames before it are still returned): ``TOO_LONG`` with the
  length seen (for a length field: its value plus the adjustment),
  ``NEGATIVE_LENGTH`` with the field's value, ``BAD_VARINT`` (more bytes than
  allowed, or over 64 bits) with the value of the bytes before it and their
  count, ``VARINT_NOT_MINIMAL`` with the value and its bytes.

``LengthScanner.scan_first(buf)`` is ``scan`` stopping after the first frame;
``LengthScanner.forward(buf, due)`` is the forwarding scan (bytes, not frames).

The scanners keep their position between calls, so every byte is examined
once however the stream is chunked.  ``trioecho.framing._cframer`` implements the
same contract in C; the test suite runs against both.
"""

from __future__ import annotations

from trioecho.framing.contract import (
    BAD_VARINT,
    FIELD_NONE,
    FIELD_UINT,
    MAX_VARINT,
    NEGATIVE_LENGTH,
    TOO_LONG,
    VARINT_NOT_MINIMAL,
    Problem,
    check_frame_config,
    header_struct,
)

IMPLEMENTATION = "python"


_CR = 0x0D


class LengthScanner:
    """Splits length-family frames (csrc/framer.h's te_length_framer): for each,
    ``length_offset`` bytes, a length field (``FIELD_UINT``: a 1/2/3/4/8-byte
    unsigned integer; ``FIELD_VARINT``: a LEB128 varint of at most
    ``header_bytes`` bytes; ``FIELD_NONE``: none, every frame is ``max_frame``
    bytes), then the payload: the field's value plus ``length_adjustment``
    bytes.  Frames keep the bytes before the payload if ``include_header``."""

    __slots__ = (
        "_adjustment",
        "_bare_lengths",
        "_field",
        "_header_bytes",
        "_include_header",
        "_little",
        "_max_frame",
        "_offset",
        "_unpack_from",
    )

    def __init__(
        self,
        header_bytes: int,
        little_endian: bool,
        max_frame: int,
        *,
        field: int = FIELD_UINT,
        length_offset: int = 0,
        length_adjustment: int = 0,
        include_header: bool = False,
    ) -> None:
        check_frame_config(field, header_bytes, length_offset, length_adjustment, max_frame)
        self._field = field
        self._header_bytes = header_bytes
        self._max_frame = max_frame
        self._offset = length_offset
        self._adjustment = length_adjustment
        self._include_header = include_header
        self._unpack_from = None
        if field == FIELD_UINT and header_bytes != 3:
            self._unpack_from = header_struct(header_bytes, little_endian).unpack_from
        self._little = little_endian
        # A bare field counting the payload: the common case, with a loop of its own.
        self._bare_lengths = (
            self._unpack_from is not None and not length_offset and not length_adjustment
        )

    def _header(self, buf: bytes | bytearray, pos: int) -> tuple[int, int] | Problem | None:
        """``(payload_start, payload_length)`` of the frame at ``pos``, a
        problem, or None while its header is incomplete."""
        field_at = pos + self._offset
        size = len(buf)
        if self._field == FIELD_NONE:
            return pos, self._max_frame
        if field_at > size:
            return None
        if self._field == FIELD_UINT:
            n = self._header_bytes
            if size - field_at < n:
                return None
            if self._unpack_from is not None:
                (value,) = self._unpack_from(buf, field_at)
            else:
                value = int.from_bytes(
                    buf[field_at : field_at + n], "little" if self._little else "big"
                )
            payload = value + self._adjustment
            if payload < 0:
                return Problem(NEGATIVE_LENGTH, value, 0)
            if payload > self._max_frame:
                return Problem(TOO_LONG, payload, 0)
            return field_at + n, payload
        value = 0
        n = 0
        byte = 0
        while True:
            if n == self._header_bytes:
                return Problem(BAD_VARINT, value, n)
            if field_at + n >= size:
                return None
            byte = buf[field_at + n]
            if n == MAX_VARINT - 1 and byte & 0x7F > 1:
                return Problem(BAD_VARINT, value, n + 1)
            value |= (byte & 0x7F) << (7 * n)
            n += 1
            if not byte & 0x80:
                break
        if n > 1 and byte == 0:
            return Problem(VARINT_NOT_MINIMAL, value, n)
        if value > self._max_frame:
            return Problem(TOO_LONG, value, 0)
        return field_at + n, value

    def scan(self, buf: bytes | bytearray) -> tuple[list[bytes], int, Problem | None]:
        if self._bare_lengths:
            return self._scan_bare_lengths(buf)
        return self._scan(buf, first_only=False)

    def scan_first(self, buf: bytes | bytearray) -> tuple[list[bytes], int, Problem | None]:
        return self._scan(buf, first_only=True)

    def _scan(
        self, buf: bytes | bytearray, *, first_only: bool
    ) -> tuple[list[bytes], int, Problem | None]:
        frames: list[bytes] = []
        pos = 0
        size = len(buf)
        while True:
            header = self._header(buf, pos)
            if header is None:
                break
            if isinstance(header, Problem):
                return frames, pos, header
            payload_start, payload = header
            end = payload_start + payload
            if end > size:
                break
            frames.append(bytes(buf[pos if self._include_header else payload_start : end]))
            pos = end
            if first_only:
                break
        return frames, pos, None

    def forward(self, buf: bytes, due: int) -> tuple[int, int, int, Problem | None]:
        """The forwarding scan (csrc/framer.h's te_length_forward): ``buf``
        follows bytes already passed on, of which the frame in progress
        still owes ``due``.  Returns ``(consumed, frames, due, problem)``:
        the bytes that may be passed on now (the rest is an incomplete
        header, scanned again first with what follows), the frames this
        scan completed, what the last frame still owes, and the problem of a
        bad header (``consumed`` then ends before it)."""
        size = len(buf)
        pos = 0
        frames = 0
        if due > 0:
            if due > size:
                return size, 0, due - size, None
            pos = due
            due = 0
            frames = 1
        while pos < size:
            header = self._header(buf, pos)
            if header is None:
                break
            if isinstance(header, Problem):
                return pos, frames, 0, header
            payload_start, payload = header
            if payload > size - payload_start:
                return size, frames, payload - (size - payload_start), None
            pos = payload_start + payload
            frames += 1
        return pos, frames, 0, None

    def _scan_bare_lengths(self, buf: bytes | bytearray) -> tuple[list[bytes], int, Problem | None]:
        """The common case: a bare length field counting the payload."""
        header_bytes = self._header_bytes
        max_frame = self._max_frame
        unpack_from = self._unpack_from
        assert unpack_from is not None
        include_header = self._include_header
        size = len(buf)
        frames: list[bytes] = []
        pos = 0
        while size - pos >= header_bytes:
            (length,) = unpack_from(buf, pos)
            if length > max_frame:
                return frames, pos, Problem(TOO_LONG, length, 0)
            start = pos + header_bytes
            if length > size - start:
                break
            frames.append(bytes(buf[pos if include_header else start : start + length]))
            pos = start + length
        return frames, pos, None


class LineScanner:
    """Splits delimited lines, remembering where the last scan stopped.

    ``delimiters`` is a tuple of one or more: with several, a line
    ends at the delimiter that starts first (the earlier listed if two start
    at the same byte), and a line whose end could still be decided by a
    delimiter not yet complete waits for more bytes.
    """

    __slots__ = (
        "_delimiter",
        "_delimiters",
        "_discard",
        "_discarding",
        "_longest",
        "_max_frame",
        "_search_from",
        "_strip_cr",
    )

    def __init__(
        self, delimiters: tuple[bytes, ...], strip_cr: bool, discard: bool, max_frame: int
    ) -> None:
        self._delimiters = delimiters
        self._delimiter = delimiters[0]
        self._longest = max(len(d) for d in delimiters)
        self._strip_cr = strip_cr
        self._discard = discard
        self._max_frame = max_frame
        self._search_from = 0  # first position a delimiter may start at
        self._discarding = False  # dropping the rest of an over-long line

    def _payload_length(self, buf: bytes | bytearray, line_start: int, end: int) -> int:
        if self._strip_cr and end > line_start and buf[end - 1] == _CR:
            return end - line_start - 1
        return end - line_start

    def _find_any(self, buf: bytes | bytearray, pos: int, hits: list[int]) -> tuple[int, int]:
        """Several delimiters: ``(start, length)`` of the one that ends the line
        at or after ``pos``, or ``(-1, 0)``.  ``hits`` caches each delimiter's
        next start (-1: none left), so every byte is searched once per delimiter."""
        best = best_i = -1
        for i, delimiter in enumerate(self._delimiters):
            hit = hits[i]
            if hit != -1 and hit < pos:
                hit = hits[i] = buf.find(delimiter, pos)
            if hit >= 0 and (best < 0 or hit < best):
                best, best_i = hit, i
        if best < 0:
            return -1, 0
        # A delimiter not yet complete that starts earlier (or at the same
        # byte and is listed first) may still end the line first: wait.
        size = len(buf)
        for q in range(max(pos, size - self._longest + 1), best + 1):
            for i, delimiter in enumerate(self._delimiters):
                if q == best and i == best_i:
                    break
                if size - q < len(delimiter) and delimiter.startswith(buf[q:]):
                    return -1, 0
        return best, len(self._delimiters[best_i])

    def scan(self, buf: bytes | bytearray) -> tuple[list[bytes], int, Problem | None]:
        delimiter = self._delimiter
        several = len(self._delimiters) > 1
        hits = [-2] * len(self._delimiters)
        dlen = len(delimiter)
        size = len(buf)
        frames: list[bytes] = []
        line_start = 0
        pos = min(self._search_from, size)
        if dlen == 1 and not several and not self._discarding:
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
            if several:
                d, dlen = self._find_any(buf, pos, hits)
            else:
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
                return (
                    frames,
                    (d + dlen if self._discard else line_start),
                    Problem(TOO_LONG, payload, 0),
                )
            frames.append(bytes(buf[line_start : line_start + payload]))
            line_start = pos = d + dlen

        # buf[line_start:] is an unfinished line; only its last longest - 1
        # bytes can begin a delimiter that is still to arrive.
        longest = self._longest
        next_search = size - longest + 1 if size - line_start >= longest else line_start
        if self._discarding:
            self._search_from = 0
            return frames, next_search, None
        end = size
        for q in range(next_search, size):
            if any(d.startswith(buf[q : q + len(d)]) for d in self._delimiters):
                end = q
                break
        min_payload = self._payload_length(buf, line_start, end)
        if min_payload > self._max_frame:
            if self._discard:
                self._discarding = True
                self._search_from = 0
                return frames, next_search, Problem(TOO_LONG, min_payload, 0)
            return frames, line_start, Problem(TOO_LONG, min_payload, 0)
        self._search_from = next_search - line_start
        return frames, line_start, None
