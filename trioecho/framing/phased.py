"""One framing for a stream's first frame, another after it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from trioecho.errors import (
    FramingError,
)
from trioecho.framing.base import Buffer, Framer, _StreamFramer, can_forward
from trioecho.framing.fixed import FixedLengthFramer
from trioecho.framing.length import LengthFieldFramer

__all__ = ["PhasedFramer"]


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

    def __repr__(self) -> str:
        phase = f"first frame by {self._first!r}, then" if self._first is not None else "now"
        return f"<PhasedFramer {phase} {self._then!r}>"

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

    @property
    def can_forward(self) -> bool:
        """Forwarding (:meth:`_StreamFramer.forward`) is for the frames after
        the first phase, which are always read as frames."""
        return self._first is None and can_forward(self._then)

    @property
    def in_frame(self) -> bool:
        framer = self._first if self._first is not None else self._then
        return bool(getattr(framer, "in_frame", framer.buffered > 0))

    def forward(self, data: Buffer) -> tuple[Buffer, int, FramingError | None]:
        if self._first is not None:
            raise RuntimeError("forward() before the first phase is over")
        return cast(_StreamFramer, self._then).forward(data)

    def forwarding_state(self) -> tuple[object, int, bytes] | None:
        if self._first is not None:
            return None
        return cast(_StreamFramer, self._then).forwarding_state()

    def restore_forwarding(self, due: int, held: bytes) -> None:
        cast(_StreamFramer, self._then).restore_forwarding(due, held)

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
