"""Echo engine backed by the C echo session in ``csrc/echo.c``.

This is the only module that imports the cffi extension ``_echo_ffi``.  It
implements the engine contract documented in ``trioecho.services._pyecho`` and turns
C results into Python values; nothing cffi-typed leaves it.

The C call writes replies into an output buffer of ``capacity`` bytes.  When
it fills up (``TE_ECHO_MORE``), the bytes are taken and the call is made
again on the rest of the input; a reply larger than the buffer comes out in
pieces.  Every call must consume input or produce output, or end the loop:
a call that does neither is a bug in the C code and raises RuntimeError
rather than spinning.
"""

from __future__ import annotations

import threading
from struct import Struct
from threading import get_ident
from typing import Any

from trioecho._echo_ffi import ffi, lib
from trioecho.services import _pyecho
from trioecho.services._pyecho import EngineResult

IMPLEMENTATION = "c"

_MORE = lib.TE_ECHO_MORE
_NEED = lib.TE_ECHO_NEED
_DROPPED = lib.TE_ECHO_DROPPED
_BAD_CONFIG = lib.TE_ECHO_BAD_CONFIG

# The two twins share their status values.
for _name in ("NEED", "MORE", "STOP", "TOO_LONG", "DROPPED", "BAD_REPLY", "BROKEN"):
    if getattr(lib, f"TE_ECHO_{_name}") != getattr(_pyecho, _name):
        raise ImportError(f"TE_ECHO_{_name} differs between csrc/echo.h and _pyecho")
if (lib.TE_ECHO_REPLY_DELIMITER, lib.TE_ECHO_REPLY_CR, lib.TE_ECHO_MAX_AFFIX) != (
    _pyecho.REPLY_DELIMITER,
    _pyecho.REPLY_CR,
    _pyecho.MAX_AFFIX,
):
    raise ImportError("reply reasons or TE_ECHO_MAX_AFFIX differ between csrc/echo.h and _pyecho")

# te_echo_result, read in one call: status, consumed, produced, replies,
# received, length.
_RESULT = Struct("@iNNNNQ")
if _RESULT.size != ffi.sizeof("te_echo_result"):
    raise ImportError("te_echo_result layout does not match its struct format")

_NO_DROPS: tuple[int, ...] = ()
_feed = lib.te_echo_feed  # every C call of the session goes through this name
_unpack = ffi.unpack
_unpack_result = _RESULT.unpack_from
# EngineResult built without its Python-level __new__ (a third of the cost):
# the fields are given in order, all of them.
_new_result = tuple.__new__
if len(EngineResult._fields) != 7:
    raise ImportError("EngineResult's fields changed: update EchoEngine.feed")
# Output buffers, one per capacity and thread (cffi releases the GIL during
# C calls, so threads must not share them).  The bytes are copied out after
# each call, so every session of a thread can use the same buffer.
_buffers = threading.local()


def _thread_id() -> int:
    """``threading.get_ident()``, one int object per thread (an int of that
    size is otherwise a new object, held by every engine)."""
    try:
        ident: int = _buffers.ident
    except AttributeError:
        ident = _buffers.ident = get_ident()
    return ident


def _output_buffer(capacity: int) -> tuple[Any, Any, Any, Any]:
    """This thread's output buffer of ``capacity`` bytes, a ``char *`` to it
    (``ffi.unpack`` of a ``char *`` is the quickest copy to bytes), and its
    result struct with a buffer view of it (read right after each call, like
    the output: no session needs its own)."""
    try:
        by_capacity: dict[int, tuple[Any, Any, Any, Any]] = _buffers.by_capacity
    except AttributeError:
        by_capacity = _buffers.by_capacity = {}
    buffers = by_capacity.get(capacity)
    if buffers is None:
        out = ffi.new("uint8_t[]", capacity)
        result = ffi.new("te_echo_result *")
        buffers = by_capacity[capacity] = (
            out,
            ffi.cast("char *", out),
            result,
            ffi.buffer(result),
        )
    return buffers


class EchoEngine:
    """C twin of ``trioecho.services._pyecho.EchoEngine``."""

    __slots__ = ("_buffers", "_capacity", "_session", "_thread")

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
        _pyecho.check_config(framing, header_bytes, delimiter, max_frame, suffix, stop, capacity)
        self._session = ffi.new("te_echo *")
        status = lib.te_echo_init(
            self._session,
            _pyecho.FRAMINGS[framing],
            header_bytes,
            little_endian,
            delimiter,
            len(delimiter),
            strip_cr,
            discard,
            max_frame,
            suffix,
            len(suffix),
            stop,
            len(stop),
        )
        if status == _BAD_CONFIG:
            raise ValueError("the C echo session rejected the configuration")
        self._capacity = capacity
        # The thread's buffers, looked up again if another thread feeds.
        self._thread = _thread_id()
        self._buffers = _output_buffer(capacity)

    @property
    def address(self) -> int:
        """The address of the C session (``te_echo``), for the C pump
        (:mod:`trioecho.io.pump`), which serves it while this engine lives."""
        return int(ffi.cast("uintptr_t", self._session))

    def feed(self, buf: bytes | bytearray) -> EngineResult:
        if self._thread == get_ident():
            out, chars, result, view = self._buffers
        else:
            out, chars, result, view = _output_buffer(self._capacity)
        size = len(buf)
        if type(buf) is bytes:  # bytes go to C as they are
            _feed(self._session, buf, size, out, self._capacity, result)
            status, pos, produced, replies, received, length = _unpack_result(view)
            if status == _NEED and pos == size:
                return _new_result(
                    EngineResult,
                    (_unpack(chars, produced), pos, replies, received, status, 0, _NO_DROPS),
                )
            return self._feed_on(buf, buf, status, pos, produced, replies, received, length)
        # Anything else through a buffer export, released before the caller
        # resizes its bytearray.
        ptr = ffi.from_buffer(buf)
        try:
            _feed(self._session, ptr, size, out, self._capacity, result)
            status, pos, produced, replies, received, length = _unpack_result(view)
            return self._feed_on(buf, ptr, status, pos, produced, replies, received, length)
        finally:
            ffi.release(ptr)

    def _feed_on(
        self,
        buf: bytes | bytearray,
        ptr: Any,
        status: int,
        pos: int,
        produced: int,
        replies: int,
        received: int,
        length: int,
    ) -> EngineResult:
        """Go on after the first call: take the output, call again while the
        output buffer fills up or an over-long line is dropped."""
        out, chars, result, view = _output_buffer(self._capacity)
        parts: list[bytes] = []
        dropped: list[int] | tuple[int, ...] = _NO_DROPS
        size = len(buf)
        # calls in a row that neither consumed nor produced
        stalled = 1 if pos == 0 and produced == 0 else 0
        base = ptr if type(buf) is not bytes else None
        try:
            while True:
                if produced:
                    parts.append(_unpack(chars, produced))
                if status == _DROPPED:
                    dropped = [*dropped, length]
                elif status != _MORE:
                    break
                if stalled > 1:
                    # A drop may consume nothing once (it starts discarding);
                    # anything more is a bug, and looping would hang the server.
                    raise RuntimeError("the C echo session made no progress (csrc/echo.c)")
                if base is None:
                    base = ffi.from_buffer(buf)  # pointer arithmetic needs a cdata pointer
                _feed(self._session, base + pos, size - pos, out, self._capacity, result)
                status, consumed, produced, more_replies, more_received, length = _unpack_result(
                    view
                )
                stalled = stalled + 1 if consumed == 0 and produced == 0 else 0
                pos += consumed
                replies += more_replies
                received += more_received
        finally:
            if base is not None and base is not ptr:
                ffi.release(base)
        if status == _BAD_CONFIG:
            raise RuntimeError("the C echo session was called against its contract (_cecho)")
        return EngineResult(b"".join(parts), pos, replies, received, status, length, dropped)
