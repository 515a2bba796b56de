"""What both scanners (the C one, ``_cframer``, and its Python twin,
``_pyframer``) share: the limits of a frame configuration and their check,
the fields, and how a scan reports a problem (the numbers of
``csrc/framer.h``).  The framers import them from here, so neither twin is
load-bearing for the other.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

__all__ = [
    "BAD_VARINT",
    "FIELD_NONE",
    "FIELD_UINT",
    "FIELD_VARINT",
    "HEADER_FORMATS",
    "LENGTH_BYTES",
    "MAX_ADJUSTMENT",
    "MAX_OFFSET",
    "MAX_VARINT",
    "NEGATIVE_LENGTH",
    "TOO_LONG",
    "VARINT_NOT_MINIMAL",
    "Field",
    "Problem",
    "ProblemCode",
    "check_frame_config",
    "header_struct",
]


class ProblemCode(IntEnum):
    """A scan's problem: the same numbers as csrc/framer.h's statuses."""

    TOO_LONG = -1
    NEGATIVE_LENGTH = -3
    BAD_VARINT = -4
    VARINT_NOT_MINIMAL = -5


class Field(IntEnum):
    """How a frame's length is written (csrc/framer.h's ``TE_FIELD_*``)."""

    UINT = 0
    VARINT = 1
    NONE = 2


TOO_LONG, NEGATIVE_LENGTH, BAD_VARINT, VARINT_NOT_MINIMAL = ProblemCode
FIELD_UINT, FIELD_VARINT, FIELD_NONE = Field
MAX_VARINT = 10
MAX_OFFSET = 65535
MAX_ADJUSTMENT = (1 << 31) - 1
LENGTH_BYTES = (1, 2, 3, 4, 8)  # widths of a FIELD_UINT
HEADER_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}  # struct's, for all but 3 bytes


def header_struct(header_bytes: int, little_endian: bool) -> struct.Struct:
    """The :class:`struct.Struct` of an unsigned length field of
    ``header_bytes`` (1, 2, 4 or 8: 3 has none) in the given byte order."""
    return struct.Struct(("<" if little_endian else ">") + HEADER_FORMATS[header_bytes])


class Problem(NamedTuple):
    """How the input broke a rule (a scan's third value)."""

    code: int
    """A :class:`ProblemCode` value."""
    value: int
    """``TOO_LONG``: the length seen (a length field's value plus the
    adjustment); ``NEGATIVE_LENGTH``: the field's value; ``BAD_VARINT`` and
    ``VARINT_NOT_MINIMAL``: the value of the varint's bytes read."""
    field_len: int
    """The varint's bytes read (0 for the other codes)."""


def check_frame_config(
    field: int, header_bytes: int, length_offset: int, length_adjustment: int, max_frame: int
) -> None:
    """What te_frame_init refuses, refused alike (ValueError)."""
    if field == FIELD_UINT:
        ok = header_bytes in LENGTH_BYTES
    elif field == FIELD_VARINT:
        ok = 1 <= header_bytes <= MAX_VARINT and length_adjustment == 0
    elif field == FIELD_NONE:
        ok = header_bytes == 0 and max_frame > 0 and length_offset == 0 and length_adjustment == 0
    else:
        ok = False
    ok = ok and 0 <= length_offset <= MAX_OFFSET and abs(length_adjustment) <= MAX_ADJUSTMENT
    if not ok:
        raise ValueError(
            f"bad frame configuration: field={field} header_bytes={header_bytes} "
            f"length_offset={length_offset} length_adjustment={length_adjustment} "
            f"max_frame={max_frame}"
        )
