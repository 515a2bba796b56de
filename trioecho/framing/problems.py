"""What the framers say when a frame is bad: the errors of incoming frames and of
payloads that cannot be framed.
"""

from __future__ import annotations

from trioecho.errors import (
    DelimiterInPayloadError,
    IncompleteFrameError,
)

__all__ = [
    "delimiter_in_payload",
    "incomplete_frame",
    "too_long_message",
    "trailing_cr",
    "unfinished_forward",
]


def too_long_message(framing: str, length: int, max_frame: int) -> str:
    """What a :class:`FrameTooLongError` says of an incoming frame or line."""
    if framing == "len":
        return f"frame header announces {length} bytes, over max_frame={max_frame}"
    return f"line longer than max_frame={max_frame}: {length} bytes seen"


def incomplete_frame(what: str, buffered: int) -> IncompleteFrameError:
    """The error for a stream that ended inside a ``what`` ("frame", "line")."""
    return IncompleteFrameError(
        f"connection closed inside a {what}: {buffered} bytes of it received", buffered=buffered
    )


def delimiter_in_payload(delimiter: bytes | tuple[bytes, ...]) -> DelimiterInPayloadError:
    """The error for a line that holds its delimiter before its end."""
    if isinstance(delimiter, tuple):
        return DelimiterInPayloadError(
            f"cannot encode a line that would not read back as one line with the "
            f"delimiters {delimiter!r}"
        )
    return DelimiterInPayloadError(
        f"cannot encode a line that contains the delimiter {delimiter!r}"
    )


def trailing_cr() -> DelimiterInPayloadError:
    """The error for a line the receiver would shorten (``strip_cr=True``)."""
    return DelimiterInPayloadError(
        "cannot encode a line ending with b'\\r': the receiver strips it (strip_cr=True)"
    )


def unfinished_forward(what: str, due: int) -> IncompleteFrameError:
    """The error for a forwarded stream that ended inside a ``what`` whose
    header and first bytes were passed on, ``due`` bytes of it missing."""
    return IncompleteFrameError(
        f"connection closed inside a {what}: {due} bytes of it never came", buffered=0
    )
