"""Checks for the arguments a user gives the public constructors.

Each check refuses a mistake where it is made, with one line that names the
argument, what it takes and what was given: ``ValueError`` for a value out
of range, ``TypeError`` for a value of the wrong kind.  A check returns the
value to use (``host=""`` becomes ``None``: all interfaces).

Nothing here touches the network: an address is only compared as written.
"""

from __future__ import annotations

import ipaddress
import math

__all__ = [
    "check_connect_host",
    "check_count",
    "check_listen_host",
    "check_port",
    "check_rate",
    "check_timeout",
    "is_loopback_host",
    "may_be_the_same_listener",
    "parse_address",
]

MAX_PORT = 65535


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_port(port: object, name: str = "port") -> int:
    """``port`` as an int from 0 to 65535 (0: a free port, when listening)."""
    if not _is_int(port):
        raise TypeError(f"{name} must be an int from 0 to {MAX_PORT}, not {port!r}")
    assert isinstance(port, int)
    if not 0 <= port <= MAX_PORT:
        raise ValueError(f"{name} must be from 0 to {MAX_PORT}, not {port}")
    return port


def check_listen_host(host: object) -> str | None:
    """The host to listen on: a name or address, or ``None`` (or ``""``, as
    ``socketserver`` writes it) for every interface."""
    if host is None or host == "":
        return None
    if not isinstance(host, str):
        raise TypeError(
            f'host must be a str (a name or an address; "" or None for every interface), '
            f"not {host!r}"
        )
    return host


def check_connect_host(host: object) -> str | bytes:
    """The host to connect to: a non-empty name or address."""
    if not isinstance(host, str | bytes):
        raise TypeError(f"host must be a str naming the server, not {host!r}")
    if not host:
        raise ValueError("host must name the server (an empty host is only for listening)")
    return host


def check_timeout(value: object, name: str, *, zero: bool = False) -> float | None:
    """A timeout in seconds: a positive number (or 0, if ``zero``: give up
    at once), or ``None`` for none."""
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds or None, not {value!r}")
    if math.isnan(value) or value < 0 or (value == 0 and not zero):
        least = "at least 0" if zero else "positive"
        raise ValueError(f"{name} must be {least} or None, not {value}")
    return float(value)


def check_rate(value: object, name: str) -> float | None:
    """A rate in bytes a second: a positive finite number, or ``None`` for none."""
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of bytes a second or None, not {value!r}")
    if not 0 < value < math.inf:  # also false for nan
        raise ValueError(
            f"{name} must be a positive, finite number of bytes a second or None, not {value}"
        )
    return float(value)


def check_count(value: object, name: str, minimum: int) -> int:
    """An int of at least ``minimum``."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, not {value!r}")
    assert isinstance(value, int)
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def split_host_port(text: str) -> tuple[str, str] | None:
    """``"host:port"`` split at its last colon, as ``(host, port text)``,
    the brackets of ``"[::1]:5432"`` taken off the host; None if there is
    no colon or no host.  The port is the caller's to read."""
    host, colon, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host:
        return None
    return host, port_text


def parse_address(address: object, name: str) -> tuple[str, int]:
    """``(host, port)`` from a ``(host, port)`` tuple or a ``"host:port"``
    string (``"[::1]:5432"`` for an IPv6 address)."""
    if isinstance(address, str):
        parts = split_host_port(address)
        if parts is None or not parts[1].isdigit():
            raise ValueError(
                f'{name} must be "host:port" (or a (host, port) tuple), not {address!r}'
            )
        return parts[0], check_port(int(parts[1]), f"{name}'s port")
    if isinstance(address, tuple | list) and len(address) == 2:
        host, port = address
        if not isinstance(host, str) or not host:
            raise TypeError(f"{name}'s host must be a non-empty str, not {host!r}")
        return host, check_port(port, f"{name}'s port")
    raise TypeError(f'{name} must be a (host, port) tuple or a "host:port" string, not {address!r}')


def may_be_the_same_listener(upstream: tuple[str, int], host: str | None, port: int) -> bool:
    """Whether connecting to ``upstream`` would reach a listener on
    ``host``:``port``, as far as the written addresses tell: the same port,
    and the same host, or ``localhost``/a loopback address against a
    listener on loopback or on every interface."""
    upstream_host, upstream_port = upstream
    if port == 0 or upstream_port != port:
        return False
    if host is not None and upstream_host == host:
        return True
    if not is_loopback_host(upstream_host):
        return False
    return host is None or is_loopback_host(host) or _is_any(host)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (an
    IPv4-mapped IPv6 one included)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _is_any(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
