"""The command line's value types: each turns one option's text into its
value, or raises ``argparse.ArgumentTypeError`` with one line saying what
the option takes (argparse prefixes it with ``argument --OPTION:``).

A type checks the text only: what a value means together with the others
is checked where the configuration is built.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from trioecho.arguments import parse_address, split_host_port
from trioecho.framing.base import MAX_DELIMITER
from trioecho.framing.contract import LENGTH_BYTES, MAX_ADJUSTMENT, MAX_OFFSET, MAX_VARINT
from trioecho.io.keepalive import KeepAlive
from trioecho.workers.supervisor import cpu_count

__all__ = [
    "MAX_SECONDS",
    "delimiter",
    "file_mode",
    "host_port",
    "keepalive",
    "length_adjustment",
    "length_bytes",
    "length_offset",
    "metrics_address",
    "port",
    "positive_int",
    "positive_seconds",
    "rate_or_off",
    "seconds",
    "seconds_or_off",
    "varint_bytes",
    "worker_count",
]

# Longest duration an option takes: a day (also keeps Trio's deadlines finite).
MAX_SECONDS = 86400.0


def _integer(text: str, what: str, base: int = 10) -> int:
    """``text`` as an int, or the error "not WHAT: 'TEXT'"."""
    try:
        return int(text, base)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def positive_int(text: str) -> int:
    """An int of at least 1."""
    value = _integer(text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 to 65535."""
    value = _integer(text, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, not {value}")
    return value


def file_mode(text: str) -> int:
    """A file mode in octal, 0 to 777."""
    value = _integer(text, "an octal file mode", 8)
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"must be 0..777, not {text}")
    return value


def length_bytes(text: str) -> int:
    """A length field's size: one of :data:`LENGTH_BYTES`."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value not in LENGTH_BYTES:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(map(str, LENGTH_BYTES))}, not {text!r}"
        )
    return value


def _int_in(low: int, high: int, what: str) -> Callable[[str], int]:
    """The type of an int from ``low`` to ``high``; ``what`` names it in the error."""

    def parse(text: str) -> int:
        value = _integer(text, "an integer")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be between {low} and {high}")
        return value

    return parse


length_offset = _int_in(0, MAX_OFFSET, "the length offset")
length_adjustment = _int_in(-MAX_ADJUSTMENT, MAX_ADJUSTMENT, "the length adjustment")
varint_bytes = _int_in(1, MAX_VARINT, "a varint length")


def seconds(text: str) -> float:
    """A finite number of seconds, 0 to MAX_SECONDS."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not 0 <= value <= MAX_SECONDS:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_SECONDS:g} seconds, not {text}")
    return value


def seconds_or_off(text: str) -> float | None:
    """:func:`seconds`, with 0 meaning none (None)."""
    value = seconds(text)
    return None if value == 0 else value


def positive_seconds(text: str) -> float:
    """:func:`seconds`, more than 0."""
    value = seconds(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def rate_or_off(text: str) -> float | None:
    """``--min-send-rate``: a finite number of bytes a second; 0: none."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be bytes a second, not {text!r}") from None
    if not 0 <= value < float("inf"):  # also false for nan
        raise argparse.ArgumentTypeError(f"must be a finite number, at least 0, not {text}")
    return None if value == 0 else value


def keepalive(text: str) -> KeepAlive | None:
    """``--keepalive IDLE[:INTERVAL[:COUNT]]`` or ``off``."""
    try:
        return KeepAlive.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def delimiter(text: str) -> bytes:
    """A delimiter given on the command line, with backslash escapes."""
    try:
        value = (
            text.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1")
        )
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        raise argparse.ArgumentTypeError(f"bad delimiter {text!r}: {exc}") from None
    if not 1 <= len(value) <= MAX_DELIMITER:
        raise argparse.ArgumentTypeError(
            f"a delimiter is 1 to {MAX_DELIMITER} bytes, not {len(value)}: {text!r}"
        )
    return value


def host_port(text: str) -> tuple[str, int]:
    """``--upstream``: ``HOST:PORT`` (``[::1]:5432`` for an IPv6 address),
    split as :func:`~trioecho.arguments.parse_address` splits it, the port
    read as ``--port`` reads it (the same messages)."""
    parts = split_host_port(text)
    if parts is None:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return parts[0], port(parts[1])


def metrics_address(text: str) -> tuple[str, int]:
    """``--metrics``: ``PORT`` (on 127.0.0.1) or ``HOST:PORT``."""
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    try:
        return parse_address(text, "--metrics")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not [HOST:]PORT: {text!r} ({exc})" if ":" in text else f"not [HOST:]PORT: {text!r}"
        ) from None


def worker_count(text: str) -> int:
    """``--workers``: a positive int, or ``auto``: one per CPU."""
    if text == "auto":
        return cpu_count()
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a number or 'auto', not {text!r}")
    return positive_int(text)
