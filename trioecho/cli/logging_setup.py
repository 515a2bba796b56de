"""Logging for the command line: the level and format every command (and
every worker of ``serve --workers N``) logs with."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["configure_logging"]


def configure_logging(args: argparse.Namespace) -> None:
    """INFO for the server (WARNING with -q, or ``--log-level``), one line per
    connection with -v."""
    level = logging.INFO if args.command == "serve" else logging.WARNING
    if getattr(args, "quiet", False):
        level = logging.WARNING
    if getattr(args, "log_level", None) is not None:
        level = getattr(logging, args.log_level.upper())
    if not getattr(args, "verbose", False):
        logging.getLogger("trioecho.connections").setLevel(logging.WARNING)
    worker = getattr(args, "worker_index", None)
    who = f"worker {worker} [%(process)d] " if worker is not None else ""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s",
    )
