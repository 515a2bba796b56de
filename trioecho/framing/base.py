"""The framer contract, limits, and the buffering and feed loop the scanning
framers share.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NoReturn, Protocol, cast

from trioecho._backend import Implementation
from trioecho.errors import (
    FrameTooLongError,
    FramingError,
    MalformedFrameError,
)
from trioecho.framing.contract import (
    TOO_LONG,
    Problem,
)
from trioecho.framing.problems import incomplete_frame, unfinished_forward

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_LINE",
    "FRAMINGS",
    "MAX_DELIMITER",
    "MAX_DELIMITERS",
    "Buffer",
    "ForwardingFramer",
    "Framer",
    "can_forward",
    "drops_too_long",
]

DEFAULT_MAX_FRAME = 1 << 20  # length-prefixed frames: 1 MiB
DEFAULT_MAX_LINE = 64 << 10  # lines: 64 KiB, as asyncio and Go's bufio
MAX_DELIMITER = 8
MAX_DELIMITERS = 8
FramingName = Literal["line", "len", "raw", "varint", "fixed"]
FRAMINGS: tuple[FramingName, ...] = ("line", "len", "raw", "varint", "fixed")

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


class ForwardingFramer(Framer, Protocol):
    """A framer that can also check bytes a relay passes on as they arrive."""

    @property
    def can_forward(self) -> bool: ...

    def forward(self, data: Buffer) -> tuple[Buffer, int, FramingError | None]: ...

    def forwarding_state(self) -> tuple[object, int, bytes] | None: ...

    def restore_forwarding(self, due: int, held: bytes) -> None: ...


def can_forward(framer: Framer) -> bool:
    """Whether ``framer`` can check bytes for a relay that passes them on as
    they arrive (:meth:`_StreamFramer.forward`): a length-field or
    fixed-size framer, now (a phased one once past its first phase), at a
    frame boundary."""
    return getattr(framer, "can_forward", False) is True


def drops_too_long(framer: Framer) -> bool:
    """Whether ``framer`` goes on after an over-long frame (its
    ``drops_too_long``; a framer without that attribute does not)."""
    return getattr(framer, "drops_too_long", False) is True


class _Scanner(Protocol):
    """The scanner contract; see ``trioecho.framing._pyframer``."""

    def scan(self, buf: bytes | bytearray) -> tuple[list[bytes], int, Problem | None]: ...


class _FirstFrameScanner(_Scanner, Protocol):
    """A length-family scanner: it can also stop after the first frame, and
    scan for forwarding."""

    def scan_first(self, buf: bytes | bytearray) -> tuple[list[bytes], int, Problem | None]: ...

    def forward(self, buf: bytes, due: int) -> tuple[int, int, int, Problem | None]: ...


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
        "_drops_too_long",
        "_due",
        "_max_frame",
        "_scanner",
        "implementation",
    )

    _what = "frame"
    _forwards = True  # the length family; not lines
    _repr_fields: tuple[str, ...] = ()  # the options a repr shows, besides max_frame

    def __init__(
        self,
        scanner: _Scanner,
        max_frame: int,
        drops_too_long: bool,
        implementation: Implementation,
    ) -> None:
        self._scanner = scanner
        self.implementation = implementation  # "c" or "python": the scanner's
        self._buffer = bytearray()
        self._broken: FramingError | None = None
        self._drops_too_long = drops_too_long
        self._max_frame = max_frame
        self._due = 0  # forwarding: bytes the frame passed on in part still owes

    def __repr__(self) -> str:
        options = [f"{name}={getattr(self, name)!r}" for name in self._repr_fields]
        options.append(f"max_frame={self._max_frame}")
        state = f", broken by {type(self._broken).__name__}" if self._broken is not None else ""
        return (
            f"<{type(self).__name__} {', '.join(options)} ({self.implementation}), "
            f"{len(self._buffer)} bytes buffered{state}>"
        )

    @property
    def drops_too_long(self) -> bool:
        """Whether an over-long frame is reported once and dropped, the stream
        going on after it (a line framer's discard mode), rather than ending it."""
        return self._drops_too_long

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
        if not self._drops_too_long or problem.code != TOO_LONG:
            self._broken = error
            self._buffer.clear()
        raise error

    def feed_eof(self) -> None:
        """The peer closed its side: raise IncompleteFrameError if a frame is unfinished."""
        if self._broken is not None:
            return
        if self._due:
            raise unfinished_forward(self._what, self._due)
        if self._buffer:
            raise incomplete_frame(self._what, len(self._buffer))

    @property
    def can_forward(self) -> bool:
        """Whether :meth:`forward` may be called now: a length-family framer
        whose fed bytes were all returned as frames (a frame boundary)."""
        return self._forwards and not self.in_frame and self._broken is None

    @property
    def in_frame(self) -> bool:
        """Whether the bytes fed or forwarded so far end inside a frame."""
        return bool(self._buffer or self._due)

    def forwarding_state(self) -> tuple[object, int, bytes] | None:
        """Hand the forwarding state to the C pump (:mod:`trioecho.io.pump`):
        the C scanner (its ``address`` is the ``te_length_framer``), what
        the frame in progress still owes, and the incomplete header held,
        which are the pump's until :meth:`restore_forwarding`; None where
        the pump cannot forward for this framer (a Python scanner, or not
        forwarding now)."""
        scanner = self._pump_scanner()
        if scanner is None:
            return None
        return scanner, self._due, self._take_held()

    def splitting_state(self) -> tuple[object, bytes] | None:
        """Hand the splitting to the C pump (:mod:`trioecho.io.pump`), which
        then splits this framer's input into frames with its C scanner (its
        ``address`` is the ``te_length_framer``) exactly as :meth:`feed`
        does: the scanner, and the unfinished frame held, which is the
        pump's until :meth:`restore_splitting`.  None where the pump cannot
        split for this framer (a Python scanner, a line framer, a framer
        broken or forwarding)."""
        scanner = self._pump_scanner()
        if scanner is None or self._due:
            return None
        return scanner, self._take_held()

    def restore_splitting(self, held: bytes) -> None:
        """Take back the unfinished frame from the C pump."""
        self.restore_forwarding(0, held)

    def _pump_scanner(self) -> object | None:
        """The C length scanner the pump may use for this framer now (one
        that can forward, not broken), or None."""
        scanner = self._scanner
        if getattr(scanner, "address", None) is None or not self._forwards or self._broken:
            return None
        return scanner

    def _take_held(self) -> bytes:
        """The bytes held (an unfinished frame or header), handed over."""
        held, self._buffer = bytes(self._buffer), bytearray()
        return held

    def restore_forwarding(self, due: int, held: bytes) -> None:
        """Take back the forwarding state from the C pump."""
        self._due = due
        self._buffer = bytearray(held)

    def forward(self, data: Buffer) -> tuple[Buffer, int, FramingError | None]:
        """Forwarding mode, for a relay passing bytes on as they arrive
        rather than as frames: check the bytes of one read.

        Every frame header is validated as :meth:`feed` validates it; a
        frame's body is passed on as it arrives, so a frame of any size up
        to ``max_frame`` costs no more than the read.  Returns ``(bytes to
        pass on now, frames completed, error)``: the bytes are exactly those
        received (an incomplete header is held until the read that completes
        it, and passed on then); ``error`` is the :class:`FramingError` of a
        bad header, the bytes before it still to be passed on, after which
        the framer is broken.  Start at a frame boundary (:attr:`can_forward`)
        and do not :meth:`feed` afterwards; :meth:`feed_eof` raises
        :class:`IncompleteFrameError` at an end inside a frame."""
        if self._broken is not None:
            raise self._again()
        buffer = self._buffer
        if buffer:
            buffer += data
            data = bytes(buffer)
            self._buffer = bytearray()
        elif type(data) is not bytes:
            data = bytes(data)
        scanner = cast(_FirstFrameScanner, self._scanner)
        consumed, frames, self._due, problem = scanner.forward(data, self._due)
        error = None
        if problem is not None:
            error = self._error(problem, [])
            self._broken = error
        elif consumed < len(data):
            self._buffer += memoryview(data)[consumed:]
        return (data if consumed == len(data) else memoryview(data)[:consumed]), frames, error

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
