"""TCP keepalive and ``TCP_USER_TIMEOUT``: how the kernel finds a peer that
vanished (no FIN, no reset: a dead host, a pulled cable, a NAT or firewall
that forgot the connection).

Without them nothing ends such a connection: an idle one waits for input
for ever (or the idle timeout), and one whose bytes are in flight waits for
the kernel's retransmission limit (``net.ipv4.tcp_retries2``: 15 to 20
minutes).

:class:`KeepAlive` is the setting (``IDLE[:INTERVAL[:COUNT]]``, nginx's
``so_keepalive``, HAProxy's ``clitcpka-*``): after ``idle`` seconds with
nothing from the peer the kernel probes it every ``interval`` seconds, and
after ``count`` unanswered probes it ends the connection, so a dead idle
peer is freed within :attr:`KeepAlive.bound` seconds of its last packet.
A live peer answers each probe: it is never cut, whatever the settings.

:func:`apply_keepalive` sets a socket's ``SO_KEEPALIVE``, ``TCP_KEEPIDLE``,
``TCP_KEEPINTVL``, ``TCP_KEEPCNT`` and ``TCP_USER_TIMEOUT``.  Unix sockets
are left alone (no TCP), as are options the platform lacks.  On Linux an
accepted socket inherits them all from its listening socket, so a server
sets them once, on its listeners.

``TCP_USER_TIMEOUT`` (:func:`user_timeout_ms`) bounds how long the kernel
waits for the peer to acknowledge bytes it was sent, or to open a window it
closed, before it ends the connection.  Keepalive probes are not sent while
bytes are unacknowledged, so without it a peer that vanished with a reply in
flight would be freed only by the retransmission limit.  Its value is the
keepalive bound (the send timeout without keepalive): one answer to "how
long may a peer stay silent", for an idle connection and for one with bytes
in flight.  It is never below the bound: once a probe is unanswered, Linux
ends the connection when the user timeout has passed *instead of* after
``count`` probes (``tcp_keepalive_timer``), so a shorter one would cut an
idle dead connection at its first unanswered probe.

While a send waits for the peer to read (a reply the kernel could not take
at once), the send rule (:mod:`~trioecho.io.send_deadline`) is in charge:
``SocketTransport`` lifts the user timeout for that wait
(:func:`suspend_user_timeout`) and puts it back after, so that the kernel
never cuts a live reader that pauses (its window closed) before the send
timeout does, and a dead one is cut by the send rule at the send timeout.
A send timeout of None ("never cut a live reader") leaves it at 0, the
kernel's default: any value would cut a live reader whose window stays
closed longer, and a dead path under a send is then freed only by the
retransmission limit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import socket

import trio

__all__ = [
    "DEFAULT_KEEPALIVE",
    "KeepAlive",
    "apply_keepalive",
    "keepalive_of",
    "restore_user_timeout",
    "suspend_user_timeout",
    "user_timeout_ms",
]

# Linux's limits (MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT).
MAX_KEEPALIVE_SECONDS = 32767
MAX_KEEPALIVE_COUNT = 127
MAX_USER_TIMEOUT_MS = 2**31 - 1  # an int of milliseconds: about 24.8 days
SYNTAX = 'IDLE[:INTERVAL[:COUNT]] (whole seconds; COUNT probes) or "off"'

# The options, or None where the platform has no such option.
_TCP_KEEPIDLE: int | None = getattr(socket, "TCP_KEEPIDLE", None)
_TCP_KEEPINTVL: int | None = getattr(socket, "TCP_KEEPINTVL", None)
_TCP_KEEPCNT: int | None = getattr(socket, "TCP_KEEPCNT", None)
_TCP_USER_TIMEOUT: int | None = getattr(socket, "TCP_USER_TIMEOUT", None)


def _check_field(value: object, name: str, high: int, unit: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"keepalive {name} must be an int ({unit}), not {value!r}")
    if not 1 <= value <= high:
        raise ValueError(f"keepalive {name} must be 1 to {high} {unit}, not {value}")


@dataclasses.dataclass(frozen=True)
class KeepAlive:
    """TCP keepalive: after ``idle`` seconds with nothing from the peer,
    probe it every ``interval`` seconds; after ``count`` unanswered probes,
    end the connection.  Whole seconds (1 to 32767) and probes (1 to 127),
    checked here: ``TypeError`` or ``ValueError`` naming the field.

    ``KeepAlive.parse("60:10:6")`` reads the command line's form; ``str()``
    writes it."""

    idle: int = 60
    interval: int = 10
    count: int = 6

    def __post_init__(self) -> None:
        _check_field(self.idle, "idle", MAX_KEEPALIVE_SECONDS, "seconds")
        _check_field(self.interval, "interval", MAX_KEEPALIVE_SECONDS, "seconds")
        _check_field(self.count, "count", MAX_KEEPALIVE_COUNT, "probes")

    @property
    def bound(self) -> int:
        """Seconds after the peer's last packet by which a dead idle peer
        is found: ``idle + interval * count``."""
        return self.idle + self.interval * self.count

    def __str__(self) -> str:
        return f"{self.idle}:{self.interval}:{self.count}"

    @classmethod
    def parse(cls, text: str) -> KeepAlive | None:
        """``"IDLE[:INTERVAL[:COUNT]]"`` (an empty or missing field takes
        the default: ``"300"`` is 300:10:6, ``"60::3"`` is 60:10:3), or
        ``"off"`` for None.  ``ValueError`` for anything else."""
        if not isinstance(text, str):
            raise TypeError(f"keepalive must be a str, {SYNTAX}, not {text!r}")
        if text.strip() == "off":
            return None
        fields = text.strip().split(":")
        if (
            len(fields) > 3
            or not fields[0]
            or not all(not field or (field.isascii() and field.isdigit()) for field in fields)
        ):
            raise ValueError(f"keepalive must be {SYNTAX}, not {text!r}")
        names = ("idle", "interval", "count")[: len(fields)]
        given = {name: int(field) for name, field in zip(names, fields, strict=True) if field}
        return cls(**given)


# The servers' default: a dead peer is found within two minutes of its last
# packet; a live idle one costs a probe and its answer a minute.
DEFAULT_KEEPALIVE = KeepAlive(60, 10, 6)


def keepalive_of(value: object, name: str = "keepalive") -> KeepAlive | None:
    """The setting for an argument ``name``: a :class:`KeepAlive`, the text
    :meth:`KeepAlive.parse` reads, or None (or ``"off"``) for none."""
    if value is None or isinstance(value, KeepAlive):
        return value
    if isinstance(value, str):
        return KeepAlive.parse(value)
    raise TypeError(
        f'{name} must be a KeepAlive, a str "IDLE[:INTERVAL[:COUNT]]" or None (off), not {value!r}'
    )


def user_timeout_ms(keepalive: KeepAlive | None, send_timeout: float | None) -> int:
    """``TCP_USER_TIMEOUT`` for a connection, in milliseconds: ``keepalive``'s
    bound, or ``send_timeout`` without keepalive; 0 (the kernel's) without
    a send timeout.  See the module docstring for why."""
    if send_timeout is None:
        return 0
    seconds = send_timeout if keepalive is None else keepalive.bound
    return min(math.ceil(seconds * 1000), MAX_USER_TIMEOUT_MS)


def suspend_user_timeout(sock: socket.socket) -> int:
    """Lift ``sock``'s ``TCP_USER_TIMEOUT`` while a send waits for its peer
    (the send rule decides then); return the value to give
    :func:`restore_user_timeout`.  0, and nothing done, where there is
    none: not TCP, no such option, or not set."""
    if _TCP_USER_TIMEOUT is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return 0
    try:
        milliseconds = sock.getsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT)
        if milliseconds:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, 0)
    except OSError:  # closed or reset meanwhile: the send fails on its own
        return 0
    return int(milliseconds)


def restore_user_timeout(sock: socket.socket, milliseconds: int) -> None:
    """Put back what :func:`suspend_user_timeout` lifted (0: nothing to do)."""
    if milliseconds and _TCP_USER_TIMEOUT is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, milliseconds)


def apply_keepalive(
    sock: socket.socket | trio.socket.SocketType,
    keepalive: KeepAlive | None,
    send_timeout: float | None,
) -> None:
    """Set ``sock``'s keepalive (off for None) and its ``TCP_USER_TIMEOUT``
    (:func:`user_timeout_ms`).  A socket that is not TCP is left alone.
    Raises ``OSError`` if the kernel refuses an option."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    options: list[tuple[int, int, int]] = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0 if keepalive is None else 1)
    ]
    if keepalive is not None:
        for option, value in (
            (_TCP_KEEPIDLE, keepalive.idle),
            (_TCP_KEEPINTVL, keepalive.interval),
            (_TCP_KEEPCNT, keepalive.count),
        ):
            if option is not None:
                options.append((socket.IPPROTO_TCP, option, value))
    if _TCP_USER_TIMEOUT is not None:
        options.append(
            (socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, user_timeout_ms(keepalive, send_timeout))
        )
    for level, option, value in options:
        sock.setsockopt(level, option, value)
