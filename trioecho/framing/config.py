"""Which framing, with which options: :class:`FramingConfig` and
:func:`make_framer`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Literal

from trioecho._backend import Implementation
from trioecho.framing.base import DEFAULT_MAX_FRAME, DEFAULT_MAX_LINE, FRAMINGS, Framer, FramingName
from trioecho.framing.contract import (
    MAX_VARINT,
)
from trioecho.framing.fixed import FixedLengthFramer, RawFramer
from trioecho.framing.length import LengthPrefixedFramer, VarintFramer
from trioecho.framing.lines import LineFramer, check_delimiters
from trioecho.framing.phased import PhasedFramer

__all__ = ["OPTION_FRAMINGS", "FramingConfig", "framing_config", "make_framer", "new_framer"]

# The framings each option of make_framer applies to: one given (not at its
# default) for another framing is refused, as the command line refuses it.
OPTION_FRAMINGS: dict[str, tuple[str, ...]] = {
    "length_bytes": ("len",),
    "byteorder": ("len",),
    "max_frame": ("line", "len", "varint"),
    "delimiter": ("line",),
    "strip_cr": ("line",),
    "on_too_long": ("line",),
    "length_offset": ("len", "varint"),
    "length_adjustment": ("len",),
    "include_header": ("len", "varint"),
    "max_length_bytes": ("varint",),
    "frame_size": ("fixed",),
}
# The framer of each framing but "raw" (which takes no options): built with
# the options OPTION_FRAMINGS says apply to it, as keyword arguments.
_FRAMER_CLASSES: dict[str, Callable[..., Framer]] = {
    "len": LengthPrefixedFramer,
    "line": LineFramer,
    "varint": VarintFramer,
    "fixed": FixedLengthFramer,
}


def make_framer(
    framing: FramingName,
    *,
    length_bytes: int = 4,
    byteorder: Literal["big", "little"] = "big",
    max_frame: int | None = None,
    delimiter: bytes | Sequence[bytes] = b"\n",
    strip_cr: bool = True,
    on_too_long: Literal["error", "discard"] = "error",
    length_offset: int = 0,
    length_adjustment: int = 0,
    include_header: bool = False,
    max_length_bytes: int = MAX_VARINT,
    frame_size: int | None = None,
    implementation: Implementation | None = None,
) -> Framer:
    """Return a new framer for ``framing``: ``"line"``, ``"len"``, ``"raw"``,
    ``"varint"`` or ``"fixed"`` (which needs ``frame_size``).

    ``max_frame=None`` means the framing's default (64 KiB lines, 1 MiB frames).
    An option that does not apply to the framing (:data:`OPTION_FRAMINGS`),
    given other than at its default, is refused (``ValueError``).
    """
    given = {
        "length_bytes": length_bytes != 4,
        "byteorder": byteorder != "big",
        "max_frame": max_frame is not None,
        "delimiter": delimiter not in (b"\n", (b"\n",), [b"\n"]),
        "strip_cr": strip_cr is not True,
        "on_too_long": on_too_long != "error",
        "length_offset": length_offset != 0,
        "length_adjustment": length_adjustment != 0,
        "include_header": include_header is not False,
        "max_length_bytes": max_length_bytes != MAX_VARINT,
        "frame_size": frame_size is not None,
    }
    for name, differs in given.items():
        if differs and framing in FRAMINGS and framing not in OPTION_FRAMINGS[name]:
            framings = " or ".join(OPTION_FRAMINGS[name])
            raise ValueError(f"{name} applies to framing {framings}, not {framing!r}")
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")
    if framing == "raw":
        return RawFramer()
    framer_class = _FRAMER_CLASSES[framing]
    if framing == "fixed" and frame_size is None:
        raise ValueError("framing 'fixed' needs frame_size")
    default_limit = DEFAULT_MAX_LINE if framing == "line" else DEFAULT_MAX_FRAME
    values = {
        "length_bytes": length_bytes,
        "byteorder": byteorder,
        "max_frame": default_limit if max_frame is None else max_frame,
        "delimiter": delimiter,
        "strip_cr": strip_cr,
        "on_too_long": on_too_long,
        "length_offset": length_offset,
        "length_adjustment": length_adjustment,
        "include_header": include_header,
        "max_length_bytes": max_length_bytes,
        "frame_size": frame_size,
    }
    # Each framer takes the options that apply to its framing, by name.
    options = {name: value for name, value in values.items() if framing in OPTION_FRAMINGS[name]}
    return framer_class(**options, implementation=implementation)


@dataclasses.dataclass(frozen=True)
class FramingConfig:
    """How each connection frames its messages: the arguments of :func:`make_framer`,
    and ``first_frame``: another configuration for a stream's first frame
    only (a :class:`PhasedFramer`; see ``trioecho.framing.presets.postgresql``), used
    again after each first frame ``repeat_first_frame`` returns true of.

    ``strip_cr`` (line framing): one ``\\r`` just before the delimiter that
    ends a line is removed, whichever delimiter it is (``b"ab\\r\\0"`` is
    the message ``b"ab"`` with ``delimiter=b"\\0"``): telnet and Windows
    clients end lines with ``\\r\\n``.  ``strip_cr=False`` keeps it.

    ``new_framer()`` returns a fresh framer (one per connection).  The
    configuration is checked when it is created.
    """

    framing: FramingName = "line"
    length_bytes: int = 4
    byteorder: Literal["big", "little"] = "big"
    max_frame: int | None = None
    delimiter: bytes | tuple[bytes, ...] = b"\n"
    strip_cr: bool = True
    on_too_long: Literal["error", "discard"] = "error"
    length_offset: int = 0
    length_adjustment: int = 0
    include_header: bool = False
    max_length_bytes: int = MAX_VARINT
    frame_size: int | None = None
    implementation: Implementation | None = None
    first_frame: FramingConfig | None = None
    repeat_first_frame: Callable[[bytes], bool] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.delimiter, bytes):
            # A tuple (a list would not be hashable), or the one delimiter itself.
            delimiters = check_delimiters(self.delimiter)
            object.__setattr__(
                self, "delimiter", delimiters[0] if len(delimiters) == 1 else delimiters
            )
        self.new_framer()

    def new_framer(self) -> Framer:
        options = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name not in ("first_frame", "repeat_first_frame")
        }
        framer = make_framer(**options)
        first = self.first_frame
        if first is not None:
            if first.implementation is None and self.implementation is not None:
                first = dataclasses.replace(first, implementation=self.implementation)
            return PhasedFramer(first.new_framer(), framer, repeat=self.repeat_first_frame)
        return framer


def framing_config(framing: FramingConfig | str | None, what: str = "framing") -> FramingConfig:
    """``framing`` as a :class:`FramingConfig`: a configuration as it is, a
    framing name (``"len"``) as ``FramingConfig(name)``, None as the default
    (lines).  ``TypeError`` for anything else, ``ValueError`` for an unknown
    name; ``what`` names the argument in the message."""
    if framing is None:
        return FramingConfig()
    if isinstance(framing, FramingConfig):
        return framing
    if isinstance(framing, str):
        if framing not in FRAMINGS:
            raise ValueError(f"{what} must be one of {FRAMINGS}, not {framing!r}")
        return FramingConfig(framing)
    raise TypeError(
        f"{what} must be a FramingConfig or a framing name ({', '.join(FRAMINGS)}), "
        f"not {type(framing).__name__}"
    )


def new_framer(framing: Framer | FramingConfig | str | None, what: str = "framer") -> Framer:
    """A framer for ``framing``: a framer as it is (anything with ``feed``,
    ``feed_eof``, ``encode`` and ``encode_many``), else the framer of
    :func:`framing_config`'s configuration."""
    if all(callable(getattr(framing, name, None)) for name in _FRAMER_METHODS):
        return framing  # type: ignore[return-value]
    if framing is None or isinstance(framing, FramingConfig | str):
        return framing_config(framing, what).new_framer()
    raise TypeError(
        f"{what} must be a framer, a FramingConfig or a framing name "
        f"({', '.join(FRAMINGS)}), not {type(framing).__name__}"
    )


_FRAMER_METHODS = ("feed", "feed_eof", "encode", "encode_many")
