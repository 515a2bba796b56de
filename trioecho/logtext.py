"""Text for log lines: peer addresses and peer-controlled text, escaped so a
peer cannot forge a line.
"""

from __future__ import annotations

from typing import Any

__all__ = ["escape_for_log", "format_address", "format_listen_address"]


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
