"""A connection storm: client threads that connect, read the greeting, say
``q`` and wait for the server's close, over and over, counting what happens.

What an operator's clients would see during a reload or a worker's death:
refused connections, resets, connections cut before the greeting, and how
long each one waited for its greeting.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time

from trioecho.services.echo import GREETING

GREETED = GREETING + b"\n"


class Storm:
    """``threads`` clients storming 127.0.0.1:``port`` until :meth:`stop`."""

    def __init__(self, port: int, threads: int = 16, *, timeout: float = 15.0) -> None:
        self.port = port
        self.timeout = timeout
        self.lock = threading.Lock()
        self.greeted = 0  # sessions that got the greeting and the close after q
        self.refused = 0
        self.reset = 0  # ECONNRESET or EPIPE at any point
        self.cut = 0  # the server closed before the greeting was complete
        self.timed_out = 0
        self.waits: list[float] = []  # seconds from connect() to the whole greeting
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            outcome, waited = self._session()
            with self.lock:
                setattr(self, outcome, getattr(self, outcome) + 1)
                if waited is not None:
                    self.waits.append(waited)

    def _session(self) -> tuple[str, float | None]:
        start = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as sock:
                data = b""
                while len(data) < len(GREETED):
                    chunk = sock.recv(len(GREETED) - len(data))
                    if not chunk:
                        return "cut", None
                    data += chunk
                waited = time.monotonic() - start
                if data != GREETED:
                    self.errors.append(f"greeting {data!r}")
                sock.sendall(b"q\n")
                while sock.recv(4096):
                    pass
                return "greeted", waited
        except ConnectionRefusedError:
            return "refused", None
        except (ConnectionResetError, BrokenPipeError):
            return "reset", None
        except TimeoutError:
            return "timed_out", None
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                return "reset", None
            self.errors.append(repr(exc))
            return "timed_out", None

    def stop(self) -> Storm:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        return self

    def waited_longer_than(self, seconds: float) -> int:
        with self.lock:
            return sum(wait > seconds for wait in self.waits)

    def __str__(self) -> str:
        slowest = max(self.waits, default=0.0)
        return (
            f"{self.greeted} greeted, {self.refused} refused, {self.reset} reset, {self.cut} cut, "
            f"{self.timed_out} timed out; slowest greeting {slowest * 1000:.0f} ms"
        )


def tcp_states(pid: int | None = None) -> dict[str, str]:
    """Socket inode -> TCP state (hex, as ``/proc/net/tcp`` shows it: ``01``
    established, ``0A`` listening), for IPv4 and IPv6: in this process's
    network namespace, or in process ``pid``'s (``/proc/PID/net/tcp``)."""
    states: dict[str, str] = {}
    where = "/proc/net" if pid is None else f"/proc/{pid}/net"
    for table in (f"{where}/tcp", f"{where}/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                states[fields[9]] = fields[3]
    return states


def tcp_sockets(pid: int) -> dict[int, str]:
    """Process ``pid``'s TCP sockets: descriptor -> state, from ``/proc``
    (in whichever network namespace it runs)."""
    states = tcp_states(pid)
    found: dict[int, str] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:[") and target[8:-1] in states:
            found[int(fd)] = states[target[8:-1]]
    return found


def accepted_connections(pid: int) -> int:
    """TCP connections process ``pid`` holds open that are not listening:
    those it has accepted (or dialled), from ``/proc``."""
    return sum(state != "0A" for state in tcp_sockets(pid).values())  # 0A: LISTEN
