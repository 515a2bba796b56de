"""Frame scanners backed by the C framer in ``csrc/``.

This is the only module that imports the cffi extension (``ffi`` and
``lib``).  It implements the scanner contract documented in
``trioecho.framing._pyframer`` and turns C results into Python objects: frames as
``bytes``, counts as ``int``.  Nothing cffi-typed leaves this module.

The C scan reports where the frames are, and this module builds all ``bytes``
objects of a scan in one C-level call: ``bytes.split`` for short lines, or
``struct.Struct(format).unpack_from`` with a format the C scan wrote
(``"<4x300s4x812s..."``, or ``"<16s16s..."`` over small payloads it packed
side by side).  Converting offsets to Python ints and slicing frame by frame
would cost more than finding the frames.  Per-call overhead matters too (one
frame per read is the common case), so the result struct is read in one
``unpack_from`` and the scratch buffers are fetched only when needed.
"""

from __future__ import annotations

import threading
from struct import Struct

from trioecho._framer_ffi import ffi, lib
from trioecho.framing import contract
from trioecho.framing.contract import FIELD_UINT, Problem, check_frame_config

IMPLEMENTATION = "c"

_TOO_LONG = lib.TE_TOO_LONG
_MORE = lib.TE_MORE
_OK = lib.TE_OK
_NONE = lib.TE_LAYOUT_NONE
_ONE = lib.TE_LAYOUT_ONE
_FORMAT = lib.TE_LAYOUT_FORMAT
_PACKED = lib.TE_LAYOUT_PACKED
_SPLIT = lib.TE_LAYOUT_SPLIT
_SPLIT_CR = lib.TE_LAYOUT_SPLIT_CR

# te_result, read in one call: status, layout, frames, offset, start, end,
# fmt_len, packed, consumed, length, field_len.
_RESULT = Struct("@iiNNNNNNNQN")
if _RESULT.size != ffi.sizeof("te_result") or ffi.offsetof("te_result", "field_len") != (
    _RESULT.size - 8
):
    raise ImportError("te_result layout does not match its struct format")

# The twin's numbers are the ones passed to and read from C.
for _name in (
    "TOO_LONG",
    "NEGATIVE_LENGTH",
    "BAD_VARINT",
    "VARINT_NOT_MINIMAL",
    "MAX_VARINT",
    "MAX_OFFSET",
    "MAX_ADJUSTMENT",
    "FIELD_UINT",
    "FIELD_VARINT",
    "FIELD_NONE",
):
    if getattr(lib, f"TE_{_name}") != getattr(contract, _name):
        raise ImportError(f"TE_{_name} differs between csrc/framer.h and framing/contract.py")

_CR = b"\r"
# Scratch space for struct formats and packed payloads: one pair per thread
# (cffi releases the GIL during C calls, so threads must not share them).
# A length scan that fills them returns TE_MORE and is resumed; a line scan
# falls back to bytes.split.
_SCRATCH_CAPACITY = 64 * 1024
_scratch = threading.local()
# Reads shorter than this hold a frame or two: no format is worth writing.
_SMALL_READ = 128


def _scratch_buffers() -> tuple[object, object]:
    try:
        return _scratch.buffers  # type: ignore[no-any-return]
    except AttributeError:
        _scratch.buffers = (
            ffi.new("char[]", _SCRATCH_CAPACITY),
            ffi.new("uint8_t[]", _SCRATCH_CAPACITY),
        )
        return _scratch.buffers  # type: ignore[no-any-return]


def _config_error(what: str) -> ValueError:
    return ValueError(f"the C framer rejected the configuration: {what}")


_length_scan = lib.te_length_scan
_length_forward = lib.te_length_forward
_unpack_result = _RESULT.unpack_from
_NULL = ffi.NULL


def _slice(buf: bytes | bytearray, start: int, end: int) -> bytes:
    if type(buf) is bytes:
        return buf[start:end]
    with memoryview(buf) as view:
        return bytes(view[start:end])


class LengthScanner:
    """C twin of ``trioecho.framing._pyframer.LengthScanner``."""

    __slots__ = ("_adjustment", "_due", "_framer", "_result", "_result_view")

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
        self._framer = ffi.new("te_length_framer *")
        status = lib.te_frame_init(
            self._framer,
            field,
            header_bytes,
            little_endian,
            length_offset,
            length_adjustment,
            include_header,
            max_frame,
        )
        if status != _OK:
            raise _config_error(f"field={field} header_bytes={header_bytes}")
        self._adjustment = length_adjustment
        self._result = ffi.new("te_result *")
        self._result_view = ffi.buffer(self._result)
        self._due = ffi.new("uint64_t *")

    def _problem(self, status: int, length: int, field_len: int) -> Problem | None:
        if status >= 0:
            return None
        if status == _TOO_LONG:  # C reports the field; the length is after adjustment
            return Problem(status, length + self._adjustment, 0)
        return Problem(status, length, field_len)

    def scan(self, buf: bytes | bytearray) -> tuple[list[bytes], int, Problem | None]:
        size = len(buf)
        if type(buf) is bytes:
            # The request/reply case first: one call, at most one frame.
            _length_scan(self._framer, buf, size, 0, _NULL, 0, _NULL, 0, self._result)
            status, layout, _, _, start, end, _, _, pos, length, field_len = _unpack_result(
                self._result_view
            )
            if status != _MORE:
                frames = [buf[start:end]] if layout == _ONE else []
                if status >= 0:
                    return frames, pos, None
                return frames, pos, self._problem(status, length, field_len)
            if layout == _ONE:  # go on after the first frame
                return self._scan_all(buf, [buf[start:end]], pos)
        return self._scan_all(buf, [], 0)

    @property
    def address(self) -> int:
        """The address of the C ``te_length_framer``, for the C pump
        (:mod:`trioecho.io.pump`), which forwards with it while this lives."""
        return int(ffi.cast("uintptr_t", self._framer))

    def forward(self, buf: bytes, due: int) -> tuple[int, int, int, Problem | None]:
        self._due[0] = due
        _length_forward(self._framer, buf, len(buf), self._due, self._result)
        status, _, frames, _, _, _, _, _, consumed, length, field_len = _unpack_result(
            self._result_view
        )
        return consumed, frames, self._due[0], self._problem(status, length, field_len)

    def scan_first(self, buf: bytes | bytearray) -> tuple[list[bytes], int, Problem | None]:
        # Without scratch space the C scan reports one frame at most.
        with ffi.from_buffer(buf) as ptr:
            _length_scan(self._framer, ptr, len(buf), 0, _NULL, 0, _NULL, 0, self._result)
        status, layout, _, _, start, end, _, _, pos, length, field_len = _unpack_result(
            self._result_view
        )
        if layout == _ONE:  # what follows it is not looked at
            return [_slice(buf, start, end)], pos, None
        return [], pos, self._problem(status, length, field_len)

    def _scan_all(
        self, buf: bytes | bytearray, frames: list[bytes], pos: int
    ) -> tuple[list[bytes], int, Problem | None]:
        """Scan from ``pos`` on, ``frames`` already found before it (the
        length framer keeps no state between calls)."""
        fmt = pack = ffi.NULL
        capacity = 0
        ptr = buf if type(buf) is bytes else ffi.from_buffer(buf)
        try:
            while True:
                _length_scan(
                    self._framer, ptr, len(buf), pos, fmt, capacity, pack, capacity, self._result
                )
                status, layout, _, offset, start, end, fmt_len, packed, pos, length, field_len = (
                    _unpack_result(self._result_view)
                )
                if layout == _ONE:
                    frames.append(_slice(buf, start, end))
                elif layout == _PACKED:
                    frames += Struct(ffi.buffer(fmt, fmt_len)[:]).unpack_from(
                        ffi.buffer(pack, packed)
                    )
                elif layout == _FORMAT:
                    frames += Struct(ffi.buffer(fmt, fmt_len)[:]).unpack_from(buf, offset)
                if status != _MORE:
                    break
                if not capacity:  # more than one frame: describe them in bulk
                    fmt, pack = _scratch_buffers()
                    capacity = _SCRATCH_CAPACITY
        finally:
            if ptr is not buf:
                ffi.release(ptr)
        return frames, pos, self._problem(status, length, field_len)


class LineScanner:
    """C twin of ``trioecho.framing._pyframer.LineScanner``."""

    __slots__ = (
        "_cr_delimiter",
        "_delimiter",
        "_framer",
        "_more",
        "_result",
        "_result_view",
        "_several",
    )

    def __init__(
        self, delimiters: tuple[bytes, ...], strip_cr: bool, discard: bool, max_frame: int
    ) -> None:
        first = delimiters[0]
        self._framer = ffi.new("te_line_framer *")
        status = lib.te_line_init(self._framer, first, len(first), strip_cr, discard, max_frame)
        # The further delimiters' storage lives as long as this scanner.
        self._more = ffi.new("te_more_delimiters *") if len(delimiters) > 1 else ffi.NULL
        for more in delimiters[1:]:
            if status == _OK:
                status = lib.te_line_add_delimiter(self._framer, self._more, more, len(more))
        if status != _OK:
            raise _config_error(f"delimiters={delimiters!r}")
        self._result = ffi.new("te_result *")
        self._result_view = ffi.buffer(self._result)
        self._delimiter = first
        self._several = len(delimiters) > 1
        # With a one-byte delimiter, "\r" + delimiter occurs only at line ends.
        self._cr_delimiter = _CR + first if len(first) == 1 else None

    def _scan_several(self, buf: bytes | bytearray) -> tuple[list[bytes], int, Problem | None]:
        """Several delimiters: the C scan lays the lines out by a format, and
        reports what fits its scratch space per call."""
        fmt = _scratch_buffers()[0]
        frames: list[bytes] = []
        base = 0
        size = len(buf)
        with ffi.from_buffer(buf) as ptr:
            while True:
                lib.te_line_scan(
                    self._framer, ptr + base, size - base, fmt, _SCRATCH_CAPACITY, self._result
                )
                status, layout, _, offset, start, end, fmt_len, _, consumed, length, _ = (
                    _unpack_result(self._result_view)
                )
                if layout == _ONE:
                    frames.append(_slice(buf, base + start, base + end))
                elif layout == _FORMAT:
                    frames += Struct(ffi.buffer(fmt, fmt_len)[:]).unpack_from(buf, base + offset)
                base += consumed
                if status != _MORE:
                    break
                if not consumed:  # TE_MORE reports at least one line: never spin
                    raise RuntimeError("the C line scan asked to go on without progress")
        problem = Problem(status, length, 0) if status == _TOO_LONG else None
        return frames, base, problem

    def scan(self, buf: bytes | bytearray) -> tuple[list[bytes], int, Problem | None]:
        if self._several:
            return self._scan_several(buf)
        size = len(buf)
        fmt, capacity = (
            (ffi.NULL, 0) if size < _SMALL_READ else (_scratch_buffers()[0], _SCRATCH_CAPACITY)
        )
        if type(buf) is bytes:
            lib.te_line_scan(self._framer, buf, size, fmt, capacity, self._result)
        else:
            with ffi.from_buffer(buf) as ptr:
                lib.te_line_scan(self._framer, ptr, size, fmt, capacity, self._result)
        status, layout, _, offset, start, end, fmt_len, _, consumed, length, _ = _unpack_result(
            self._result_view
        )
        too_long = Problem(status, length, 0) if status == _TOO_LONG else None
        if layout == _NONE:
            return [], consumed, too_long
        if layout == _ONE:
            return [_slice(buf, start, end)], consumed, too_long
        if layout == _FORMAT:
            lines = Struct(ffi.buffer(fmt, fmt_len)[:]).unpack_from(buf, offset)
            return list(lines), consumed, too_long
        if type(buf) is bytes and start == 0 and (end == size or status == _OK):
            # No copy: the bytes after `end` hold no delimiter, so they come
            # out of the split as one last piece, dropped below.
            region = buf
        else:
            region = _slice(buf, start, end)
        if layout == _SPLIT:
            pieces = region.split(self._delimiter)
        elif layout == _SPLIT_CR and self._cr_delimiter is not None:
            pieces = region.split(self._cr_delimiter)
        elif layout == _SPLIT_CR:
            pieces = [line[:-1] for line in region.split(self._delimiter)]
        else:  # TE_LAYOUT_SPLIT_MIXED
            pieces = [
                line[:-1] if line.endswith(_CR) else line for line in region.split(self._delimiter)
            ]
        pieces.pop()
        return pieces, consumed, too_long
