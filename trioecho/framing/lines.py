"""Delimited lines: one delimiter or the first of several, ``\r`` stripping,
Netty's discard mode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from trioecho._backend import Implementation
from trioecho.framing import _pyframer
from trioecho.framing.base import (
    _MAX_LIMIT,
    DEFAULT_MAX_LINE,
    MAX_DELIMITER,
    MAX_DELIMITERS,
    Buffer,
    _check_limit,
    _Scanner,
    _StreamFramer,
)
from trioecho.framing.implementation import FRAMER
from trioecho.framing.problems import delimiter_in_payload, too_long_message, trailing_cr

__all__ = ["LineFramer", "check_delimiters"]


class LineFramer(_StreamFramer):
    """Frames are lines ended by a delimiter, or by the first of several."""

    _repr_fields = ("delimiters", "strip_cr", "on_too_long")

    __slots__ = (
        "_check_scanner",
        "_cr_delimiter",
        "_single_byte",
        "delimiter",
        "delimiters",
        "on_too_long",
        "strip_cr",
    )

    _what = "line"
    _forwards = False  # a line's end is found by searching, not announced

    def __init__(
        self,
        *,
        delimiter: bytes | Sequence[bytes] = b"\n",
        strip_cr: bool = True,
        max_frame: int = DEFAULT_MAX_LINE,
        on_too_long: Literal["error", "discard"] = "error",
        implementation: Implementation | None = None,
    ) -> None:
        delimiters = check_delimiters(delimiter)
        if on_too_long not in ("error", "discard"):
            raise ValueError(f"on_too_long must be 'error' or 'discard', not {on_too_long!r}")
        _check_limit("max_frame", max_frame)
        backend = FRAMER.get(implementation)
        discard = on_too_long == "discard"
        super().__init__(
            backend.LineScanner(delimiters, bool(strip_cr), discard, max_frame),
            max_frame,
            drops_too_long=discard,
            implementation=backend.IMPLEMENTATION,
        )
        self.delimiters = delimiters
        self.delimiter = delimiters[0]  # what encode() ends a line with
        self.strip_cr = bool(strip_cr)
        self.on_too_long = on_too_long
        self._single_byte = len(delimiters) == 1 and len(self.delimiter) == 1
        self._cr_delimiter = b"\r" + self.delimiter  # with strip_cr: a line the peer shortens
        self._check_scanner: Callable[[], _Scanner] | None = None
        if len(delimiters) > 1:
            self._check_scanner = functools.partial(
                _pyframer.LineScanner, delimiters, self.strip_cr, False, _MAX_LIMIT
            )

    def _too_long_message(self, length: int) -> str:
        return too_long_message("line", length, self._max_frame)

    def _check(self, payload: Buffer) -> None:
        length = len(payload)
        data = bytes(payload) + self.delimiter
        if self._check_scanner is not None:
            # Several delimiters: the line must read back as exactly itself.
            if self.strip_cr and data[length - 1 : length] == b"\r":
                raise trailing_cr()
            frames, consumed, _ = self._check_scanner().scan(data)
            if frames != [data[:length]] or consumed != len(data):
                raise delimiter_in_payload(self.delimiters)
            return
        if data.find(self.delimiter) != length:
            raise delimiter_in_payload(self.delimiter)
        if self.strip_cr and data[length - 1 : length] == b"\r":
            raise trailing_cr()

    def encode(self, payload: Buffer) -> bytes:
        """Return the payload followed by the (first) delimiter."""
        self._check(payload)
        return bytes(payload) + self.delimiter

    def encode_many(self, payloads: Iterable[Buffer]) -> bytes:
        """Return all payloads as lines, concatenated, for one write."""
        items = payloads if isinstance(payloads, list) else list(payloads)
        if not items:
            return b""
        delimiter = self.delimiter
        joined = delimiter.join(items)
        # Fast path: a one-byte delimiter is absent from every payload exactly
        # when the joined text holds len(items) - 1 of them; with strip_cr, no
        # payload ends in "\r" exactly when "\r" + delimiter is absent too.
        if (
            self._single_byte
            and joined.count(delimiter) == len(items) - 1
            and not (self.strip_cr and (joined.endswith(b"\r") or self._cr_delimiter in joined))
        ):
            return joined + delimiter
        for payload in items:
            self._check(payload)
        return joined + delimiter


def check_delimiters(delimiter: bytes | Sequence[bytes]) -> tuple[bytes, ...]:
    """``delimiter`` (one, or a sequence of them) as a checked tuple."""
    delimiters = (delimiter,) if isinstance(delimiter, bytes) else tuple(delimiter)
    if not 1 <= len(delimiters) <= MAX_DELIMITERS:
        raise ValueError(f"give 1 to {MAX_DELIMITERS} delimiters, not {len(delimiters)}")
    for one in delimiters:
        if not isinstance(one, bytes):
            raise TypeError(f"delimiter must be bytes, not {type(one).__name__}")
        if not 1 <= len(one) <= MAX_DELIMITER:
            raise ValueError(f"delimiter must be 1 to {MAX_DELIMITER} bytes, not {len(one)}")
    return delimiters
