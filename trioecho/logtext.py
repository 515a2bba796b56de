"""Text for log lines: peer addresses and peer-controlled text, escaped so a
peer cannot forge a line; tracebacks whose exceptions quote peer text, too.
"""

from __future__ import annotations

import traceback
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import Any

__all__ = ["escape_for_log", "format_address", "format_exception_for_log", "format_listen_address"]


def escape_for_log(text: str) -> str:
    """Peer-controlled text made safe for one log line: control and other
    unprintable characters escaped (``\\n``), so a peer cannot forge lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_address(address: Any) -> str:
    """``host:port`` (``[host]:port`` for IPv6) for a socket address; a UNIX
    path (which a PROXY header may carry) as it is.  Escaped for logs."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = escape_for_log(str(address[0])), address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(address, bytes):
        address = address.decode("utf-8", "backslashreplace")
    return escape_for_log(str(address))


def format_listen_address(address: Any) -> str:
    """Where a listener listens: ``host:port``, or ``unix:PATH``."""
    if isinstance(address, str | bytes):
        return "unix:" + format_address(address)
    return format_address(address)


def format_exception_for_log(exc: BaseException, tb: TracebackType | None) -> str:
    """``exc`` with its traceback ``tb`` (usually ``exc.__traceback__``) as
    ``traceback.format_exception`` writes them (causes, contexts and exception
    groups included; no final newline), but with the text an exception
    carries escaped by :func:`escape_for_log`: its message, its notes, a
    ``SyntaxError``'s file and line.  An exception may quote peer bytes; here
    each line of the result is a real line of the traceback, and none holds a
    control character a peer sent."""
    report = traceback.TracebackException(type(exc), exc, tb, compact=True)
    for node in _nodes(report):
        node.__class__ = _EscapedTracebackException
        notes = getattr(node, "__notes__", None)  # Python 3.11+
        if notes is not None and not isinstance(notes, str | bytes):
            # Python writes each note's lines as lines of the traceback: escape them first.
            node.__notes__ = [escape_for_log(str(note)) for note in notes]
    return "".join(report.format()).removesuffix("\n")


class _EscapedTracebackException(traceback.TracebackException):
    """A traceback whose ``exception-only`` part (``Type: message`` and what
    a ``SyntaxError`` adds) is escaped line by line."""

    def format_exception_only(self, *args: Any, **kwargs: Any) -> Generator[str, None, None]:
        for text in super().format_exception_only(*args, **kwargs):
            yield escape_for_log(text.removesuffix("\n")) + "\n"


def _nodes(report: traceback.TracebackException) -> Iterator[traceback.TracebackException]:
    """``report`` and every exception it shows: causes, contexts, a group's members."""
    seen: set[int] = set()
    todo = [report]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        linked = [node.__cause__, node.__context__, *(getattr(node, "exceptions", None) or ())]
        todo += [other for other in linked if other is not None]
