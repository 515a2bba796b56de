"""Frame scanners backed by the C framer in ``csrc/``.

This is the only module that imports the cffi extension (``ffi`` and
``lib``).  It implements the scanner contract documented in
``trioecho._pyframer`` and turns C results into Python objects: frames as
``bytes``, counts as ``int``.  Nothing cffi-typed leaves this module.
"""

from __future__ import annotations

from ._framer_ffi import ffi, lib

IMPLEMENTATION = "c"

# Offsets arrays for length-prefixed frames start small (an idle connection
# stays cheap) and double whenever one scan fills them, up to this bound.
_INITIAL_CAPACITY = 16
_MAX_CAPACITY = 8192
_CR_BYTE = b"\r"


def _config_error(what: str) -> ValueError:
    return ValueError(f"the C framer rejected the configuration: {what}")


class LengthScanner:
    """C twin of ``trioecho._pyframer.LengthScanner``."""

    __slots__ = ("_framer", "_result", "_starts", "_ends", "_capacity")

    def __init__(self, header_bytes: int, little_endian: bool, max_frame: int) -> None:
        self._framer = ffi.new("te_length_framer *")
        if lib.te_length_init(self._framer, header_bytes, little_endian, max_frame) != lib.TE_OK:
            raise _config_error(f"header_bytes={header_bytes}")
        self._result = ffi.new("te_result *")
        self._capacity = _INITIAL_CAPACITY
        self._starts = ffi.new("size_t[]", _INITIAL_CAPACITY)
        self._ends = ffi.new("size_t[]", _INITIAL_CAPACITY)

    def _grow(self) -> None:
        if self._capacity < _MAX_CAPACITY:
            self._capacity *= 2
            self._starts = ffi.new("size_t[]", self._capacity)
            self._ends = ffi.new("size_t[]", self._capacity)

    def scan(self, buf: bytes | bytearray) -> tuple[list[bytes], int, int]:
        size = len(buf)
        result = self._result
        starts: list[int] = []
        ends: list[int] = []
        with ffi.from_buffer(buf) as ptr:
            while True:
                status = lib.te_length_scan(
                    self._framer,
                    ptr,
                    size,
                    result.consumed if starts else 0,
                    self._starts,
                    self._ends,
                    self._capacity,
                    result,
                )
                count = result.frames
                if count:
                    starts += ffi.unpack(self._starts, count)
                    ends += ffi.unpack(self._ends, count)
                if status != lib.TE_MORE:
                    break
                self._grow()
        consumed: int = result.consumed
        too_long: int = result.length if status == lib.TE_TOO_LONG else -1
        if not starts:
            return [], consumed, too_long
        blob = buf if type(buf) is bytes else bytes(memoryview(buf)[:consumed])
        return list(map(blob.__getitem__, map(slice, starts, ends))), consumed, too_long


class LineScanner:
    """C twin of ``trioecho._pyframer.LineScanner``."""

    __slots__ = ("_framer", "_result", "_delimiter", "_cr_delimiter")

    def __init__(self, delimiter: bytes, strip_cr: bool, discard: bool, max_frame: int) -> None:
        self._framer = ffi.new("te_line_framer *")
        status = lib.te_line_init(
            self._framer, delimiter, len(delimiter), strip_cr, discard, max_frame
        )
        if status != lib.TE_OK:
            raise _config_error(f"delimiter={delimiter!r}")
        self._result = ffi.new("te_result *")
        self._delimiter = delimiter
        # With a one-byte delimiter, "\r" + delimiter occurs only at line ends.
        self._cr_delimiter = _CR_BYTE + delimiter if len(delimiter) == 1 else None

    def scan(self, buf: bytes | bytearray) -> tuple[list[bytes], int, int]:
        result = self._result
        with ffi.from_buffer(buf) as ptr:
            status = lib.te_line_scan(self._framer, ptr, len(buf), result)
        too_long: int = result.length if status == lib.TE_TOO_LONG else -1
        count = result.frames
        if not count:
            return [], result.consumed, too_long
        start = result.start
        end = result.end
        if type(buf) is bytes and start == 0 and end == len(buf):
            region = buf
        else:
            region = bytes(memoryview(buf)[start:end])
        # The C scan found the boundaries and checked every length; bytes.split
        # builds the list in one C loop, finding the same leftmost delimiters.
        cr_lines = result.cr_lines
        if not cr_lines:
            lines = region.split(self._delimiter)
        elif cr_lines == count and self._cr_delimiter is not None:
            lines = region.split(self._cr_delimiter)
        else:
            lines = [
                line[:-1] if line.endswith(_CR_BYTE) else line
                for line in region.split(self._delimiter)
            ]
        lines.pop()  # the region ends with a delimiter: drop the empty tail
        return lines, result.consumed, too_long
