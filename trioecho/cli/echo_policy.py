"""What the echo service (``serve``) and its client can answer with the framing
options given: refused combinations, and a ``--max-frame`` every reply fits.
"""

from __future__ import annotations

import argparse
import dataclasses

from trioecho.framing.base import DEFAULT_MAX_FRAME
from trioecho.framing.config import FramingConfig
from trioecho.services.echo import (
    REPLY_SUFFIX,
)
from trioecho.services.echo_session import reply_limit

__all__ = ["echo_framing_problem", "fit_replies"]


def echo_framing_problem(framing: FramingConfig, command: str) -> str | None:
    """Why the echo service (serve) or its client cannot use ``framing``, or None."""
    if framing.framing == "fixed":
        return (
            "--framing fixed: the echo service cannot answer fixed-length messages "
            f"(each reply is {len(REPLY_SUFFIX)} bytes longer than its message)"
        )
    if framing.framing not in ("len", "varint"):
        return None
    if command == "client" and (framing.include_header or framing.length_offset):
        return "the client sends bare payloads: --include-header and --length-offset are for serve"
    if framing.length_offset and not framing.include_header:
        return (
            "--length-offset needs --include-header for the echo service: each reply "
            "carries its message's bytes before the length field"
        )
    return None


def fit_replies(
    parser: argparse.ArgumentParser, args: argparse.Namespace, framing: FramingConfig
) -> FramingConfig:
    """Every message the server accepts gets a reply, and a reply must fit the
    length header: refuse a --max-frame it cannot honour, and keep the
    default within it."""
    limit = reply_limit(framing, REPLY_SUFFIX)
    if limit is None:
        return framing
    if args.max_frame is None:
        return dataclasses.replace(framing, max_frame=min(DEFAULT_MAX_FRAME, limit))
    if args.max_frame > limit:
        field = (
            f"--length-bytes {args.length_bytes}"
            if framing.framing == "len"
            else f"--varint-bytes {args.varint_bytes}"
        )
        if framing.length_adjustment:
            field += f" and --length-adjustment {framing.length_adjustment}"
        parser.error(
            f"--max-frame {args.max_frame} is too large for {field}: "
            f"the reply to a message ({len(REPLY_SUFFIX)} bytes longer) must fit the header, "
            f"so at most {limit}"
        )
    return framing
