"""Length-field framers: a fixed-width length (Netty's options: offset,
adjustment, header kept) or a varint length.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Literal

from trioecho._backend import Implementation
from trioecho.errors import (
    FrameTooLongError,
    MalformedFrameError,
)
from trioecho.framing.base import (
    DEFAULT_MAX_FRAME,
    Buffer,
    _check_limit,
    _check_range,
    _StreamFramer,
)
from trioecho.framing.contract import (
    FIELD_UINT,
    FIELD_VARINT,
    LENGTH_BYTES,
    MAX_ADJUSTMENT,
    MAX_OFFSET,
    MAX_VARINT,
    VARINT_NOT_MINIMAL,
    header_struct,
)
from trioecho.framing.implementation import FRAMER
from trioecho.framing.problems import too_long_message

__all__ = ["LengthFieldFramer", "LengthPrefixedFramer", "VarintFramer", "encode_varint"]


@functools.cache
def _header_packer(
    byteorder: Literal["big", "little"], length_bytes: int
) -> Callable[[int], bytes]:
    """``pack`` of the header format, shared by every framer that uses it."""
    if length_bytes == 3:
        return functools.partial(int.to_bytes, length=3, byteorder=byteorder)
    return header_struct(length_bytes, byteorder == "little").pack


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
        implementation: Implementation | None,
    ) -> None:
        _check_limit("max_frame", max_frame)
        _check_range("length_offset", length_offset, 0, MAX_OFFSET)
        backend = FRAMER.get(implementation)
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
            drops_too_long=False,
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
                    "bytes before the length field are not in the payload (see encode_parts)",
                    local=True,
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

    _repr_fields = (
        "length_bytes",
        "byteorder",
        "length_offset",
        "length_adjustment",
        "include_header",
    )

    __slots__ = (
        "_encode_limit",
        "_length_only_header",
        "_pack",
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
        implementation: Implementation | None = None,
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
        self._length_only_header = not (length_offset or length_adjustment or include_header)
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
                f"cannot encode a frame of {len(frame)} bytes: its header alone is {size} bytes",
                local=True,
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
                local=True,
            )
        return self._pack(field)

    def encode(self, payload: Buffer) -> bytes:
        """Return the frame for ``payload``: see :meth:`LengthFieldFramer.encode`."""
        if self._length_only_header:
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
            local=True,
        )

    def encode_many(self, payloads: Iterable[Buffer]) -> bytes:
        """Return the frames of all payloads, concatenated, for one write."""
        if not self._length_only_header:
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

    _repr_fields = ("max_length_bytes", "length_offset", "include_header")

    __slots__ = ("_encode_limit", "max_length_bytes")

    def __init__(
        self,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_length_bytes: int = MAX_VARINT,
        length_offset: int = 0,
        include_header: bool = False,
        implementation: Implementation | None = None,
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
            f"of at most {self.max_length_bytes} bytes after its first {offset} bytes",
            local=True,
        )

    def _field_bytes(self, body_length: int) -> bytes:
        if body_length > self._encode_limit:
            raise FrameTooLongError(
                f"cannot encode a payload of {body_length} bytes: its length needs more "
                f"than max_length_bytes={self.max_length_bytes} varint bytes "
                f"(at most {self._encode_limit})",
                limit=self._encode_limit,
                length=body_length,
                local=True,
            )
        return encode_varint(body_length)
