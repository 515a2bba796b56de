"""Logging for the command line: the level and format every command (and
every worker of ``serve --workers N``) logs with.

* ``--log-level``, ``-q``, ``-v`` (the ``trioecho.connections`` lines);
* text: :class:`TextFormatter`, one line per record, a traceback's lines
  after it, with the exceptions' text escaped (an exception may quote peer
  bytes);
* ``--log-format json``: :class:`JSONFormatter`, one object per record with
  the record's ``extra=`` fields;
* ``--log-config FILE``: ``logging.config.dictConfig`` from JSON or TOML,
  instead of all of the above;
* ``--access-log``: the ``trioecho.access`` logger at INFO, whatever the
  level, one record per closed connection (see
  :data:`~trioecho.server.endings.ACCESS_FIELDS`).
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.config
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any

from trioecho.logtext import format_exception_for_log

if TYPE_CHECKING:
    from trioecho.cli.configs import LogOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

__all__ = ["JSONFormatter", "TextFormatter", "configure_logging", "load_log_config"]

# What every LogRecord has: the rest of a record's attributes came as extra=.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``,
    ``logger``, ``message``, ``process``, every ``extra=`` field, and
    ``exception`` (the traceback text) if there is one.  Text is escaped by
    JSON, and peer text was already escaped by trioecho.  ``worker``: the
    ``--workers`` index, added to every record."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(
                record.created, datetime.timezone.utc
            ).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``logging.Formatter`` (same arguments) whose tracebacks cannot forge
    lines: the exceptions' messages and notes are escaped by
    :func:`~trioecho.logtext.format_exception_for_log`, so each line after a
    record's own is a real line of its traceback, with no control character
    quoted from a peer.  The record's message is written as it is: trioecho
    escapes the peer text it logs."""

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        if ei[1] is None:
            return super().formatException(ei)
        return format_exception_for_log(ei[1], ei[2])


def load_log_config(path: str) -> dict[str, Any]:
    """The dictConfig in ``path`` (``.toml``, else JSON).  Raises ``OSError``
    or ``ValueError`` saying what is wrong."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        config = tomllib.loads(data.decode()) if path.endswith(".toml") else json.loads(data)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.endswith(".toml") else "JSON"
        raise ValueError(f"not {kind}: {exc}") from None
    if not isinstance(config, dict) or config.get("version") != 1:
        raise ValueError('a logging dictConfig must be a table with "version": 1')
    return config


def configure_logging(options: LogOptions) -> None:
    """INFO for the server (WARNING with -q, or ``--log-level``), one line per
    connection with -v; or ``--log-config``.  Raises ``ValueError`` for a
    config that ``dictConfig`` refuses."""
    access = logging.getLogger("trioecho.access")
    if options.log_config is not None:
        try:
            config = load_log_config(options.log_config)
            config.setdefault("disable_existing_loggers", False)  # trioecho's loggers exist
            logging.config.dictConfig(config)
        except (ValueError, TypeError, AttributeError, ImportError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ValueError(f"--log-config {options.log_config}: {reason}") from None
        if options.access_log:
            access.setLevel(logging.INFO)
        return
    access.setLevel(logging.INFO if options.access_log else logging.WARNING)
    level = logging.INFO if options.command == "serve" else logging.WARNING
    if options.quiet:
        level = logging.WARNING
    if options.log_level is not None:
        level = getattr(logging, options.log_level.upper())
    if not options.verbose:
        logging.getLogger("trioecho.connections").setLevel(logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    worker = options.worker_index
    if options.log_format == "json":
        handler.setFormatter(JSONFormatter(worker))
    else:
        who = f"worker {worker} [%(process)d] " if worker is not None else ""
        handler.setFormatter(TextFormatter(f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
