"""Fixed-size frames, and no framing at all (the seed's wire format)."""

from __future__ import annotations

from collections.abc import Iterable

from trioecho._backend import Implementation
from trioecho.errors import (
    MalformedFrameError,
)
from trioecho.framing.base import _MAX_LIMIT, Buffer, _check_range, _StreamFramer
from trioecho.framing.contract import (
    FIELD_NONE,
)
from trioecho.framing.implementation import FRAMER

__all__ = ["FixedLengthFramer", "RawFramer"]


class FixedLengthFramer(_StreamFramer):
    """Every frame is exactly ``frame_size`` bytes (Netty's
    ``FixedLengthFrameDecoder``): no header, nothing a peer can make too long."""

    _repr_fields = ("frame_size",)

    __slots__ = ("frame_size",)

    def __init__(self, frame_size: int, *, implementation: Implementation | None = None) -> None:
        _check_range("frame_size", frame_size, 1, _MAX_LIMIT)
        backend = FRAMER.get(implementation)
        super().__init__(
            backend.LengthScanner(0, False, frame_size, field=FIELD_NONE),
            frame_size,
            drops_too_long=False,
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
                local=True,
            )
        return bytes(payload)


class RawFramer:
    """No framing: each chunk received is one message, payloads are sent as they are.

    This is the seed's wire format, kept to serve old clients and to show the
    sticky-packet problem; it cannot tell where messages begin and end.
    """

    __slots__ = ()
    drops_too_long = False  # no frame is too long

    implementation = "python"  # nothing to scan
    max_frame = 0  # unused: a message is whatever one read returns
    buffered = 0

    def __repr__(self) -> str:
        return "<RawFramer: each read is one message>"

    def feed(self, data: Buffer) -> list[bytes]:
        return [bytes(data)] if data else []

    def feed_eof(self) -> None:
        return None

    def encode(self, payload: Buffer) -> bytes:
        return bytes(payload)

    def encode_many(self, payloads: Iterable[Buffer]) -> bytes:
        return b"".join(payloads)
