"""The framing flags: which :class:`FramingConfig` field each sets, their
defaults, and the configuration they build.

Each framing flag defaults to None on the parser, so that one given for a
framing it does not apply to is refused (:func:`resolve_framing_options`)
instead of ignored; :func:`framing_from_args` then builds the configuration,
whose own checks refuse a value out of range (``ValueError``).
"""

from __future__ import annotations

import argparse
import dataclasses

from trioecho.framing.config import OPTION_FRAMINGS, FramingConfig

__all__ = [
    "DEFAULT_FRAMING",
    "FRAMING_OPTIONS",
    "framing_default",
    "framing_from_args",
    "resolve_framing_options",
]

# Each framing option: its flag, and the FramingConfig field it sets, which
# gives the framings it applies to (OPTION_FRAMINGS) and its default (but
# for those in _NONE_UNTIL_BUILT, which stay None: framing_from_args
# decides).
FRAMING_OPTIONS: dict[str, tuple[str, str]] = {
    "length_bytes": ("--length-bytes", "length_bytes"),
    "byteorder": ("--byteorder", "byteorder"),
    "length_offset": ("--length-offset", "length_offset"),
    "length_adjustment": ("--length-adjustment", "length_adjustment"),
    "include_header": ("--include-header", "include_header"),
    "varint_bytes": ("--varint-bytes", "max_length_bytes"),
    "frame_size": ("--frame-size", "frame_size"),
    "delimiter": ("--delimiter", "delimiter"),
    "strip_cr": ("--strip-cr/--keep-cr", "strip_cr"),
    "on_too_long": ("--on-too-long", "on_too_long"),
    "max_frame": ("--max-frame", "max_frame"),
}
_NONE_UNTIL_BUILT = ("frame_size", "delimiter", "max_frame")
_FRAMING_DEFAULTS = {field.name: field.default for field in dataclasses.fields(FramingConfig)}
DEFAULT_FRAMING = str(_FRAMING_DEFAULTS["framing"])


def framing_default(dest: str) -> object:
    """A framing option's default: its FramingConfig field's (or None)."""
    return None if dest in _NONE_UNTIL_BUILT else _FRAMING_DEFAULTS[FRAMING_OPTIONS[dest][1]]


def resolve_framing_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, preset: str | None = None
) -> None:
    """Refuse a framing option given for a framing it does not apply to (or
    with ``--preset``, which sets the framing), then fill in the defaults."""
    if preset is not None:
        given = [
            flag
            for dest, (flag, _field) in FRAMING_OPTIONS.items()
            if dest != "max_frame" and getattr(args, dest) is not None
        ]
        if args.framing is not None:
            given.insert(0, "--framing")
        if given:
            parser.error(
                f"{', '.join(given)}: --preset {preset} sets the framing "
                "(only --max-frame applies with it)"
            )
    framing = args.framing or DEFAULT_FRAMING
    for dest, (flag, field) in FRAMING_OPTIONS.items():
        value = getattr(args, dest)
        framings = OPTION_FRAMINGS[field]
        if value is None:
            setattr(args, dest, framing_default(dest))
        elif preset is None and framing not in framings:
            parser.error(f"{flag} applies to --framing {' or '.join(framings)}, not {framing}")
    args.framing = framing


def framing_from_args(args: argparse.Namespace) -> FramingConfig:
    """The :class:`FramingConfig` the resolved framing flags name
    (``ValueError`` for values that do not go together)."""
    if args.framing == "fixed" and args.frame_size is None:
        raise ValueError("--framing fixed needs --frame-size")
    fields = {field: getattr(args, dest) for dest, (_flag, field) in FRAMING_OPTIONS.items()}
    fields["delimiter"] = tuple(args.delimiter or (b"\n",))
    return FramingConfig(args.framing, **fields)
