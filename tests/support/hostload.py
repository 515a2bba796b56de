"""Client load on the echo service (``lines`` framing) through a load
balancer, every reply checked byte for byte, every session classified once.

Two kinds of sessions run at once, each in its own bounded set of threads:

* the *storm*: new sessions one after another: connect, read the greeting,
  send 3 messages and check each reply, send ``q``, expect the server's close;
* *established* sessions: each sends one message every ``interval`` seconds
  for ``lifetime`` seconds, then ``q``; a thread starts the next one when one
  ends, so about ``established`` of them are open at any time.

A session ends as exactly one of :data:`KINDS`:

* ``served``: every reply right, and the server's close after ``q``;
* ``refused``: ``ECONNREFUSED``;
* ``reset``: ``ECONNRESET`` or ``EPIPE`` at any point;
* ``cut``: the end of the stream, or bytes other than the expected ones,
  before the server's close after ``q``;
* ``timed_out``: nothing for ``timeout`` seconds;
* ``other``: any other ``OSError`` (its text in ``detail``).

Each session also counts the messages the server must have received: each
one whose reply came, and ``q`` once the server closed after it.  For a
served session that is every line it sent (the server counts ``q`` as a
message received).
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from support.serverproc import recv_exactly
from trioecho.services.echo import GREETING, REPLY_SUFFIX

__all__ = ["KINDS", "Load", "LoadResult", "Session", "run_session"]

KINDS = ("served", "refused", "reset", "cut", "timed_out", "other")
STORM_MESSAGES = 3


@dataclass(frozen=True)
class Session:
    """One client session's outcome: its ``kind`` (one of :data:`KINDS`),
    when it started and ended (``time.monotonic()``), the messages the
    server must have received, whether it was an established (long) one."""

    kind: str
    started: float
    ended: float
    received: int
    established: bool
    detail: str = ""
    client: str = ""  # its own address, ADDRESS:PORT, once connected


class _Cut(Exception):
    """The stream ended, or held other bytes, before the session's end."""


def _expect(sock: socket.socket, expected: bytes) -> None:
    got = recv_exactly(sock, len(expected))
    if got != expected:
        raise _Cut(f"expected {expected!r}, got {got!r}")


def run_session(
    address: tuple[str, int],
    messages: Iterator[bytes],
    *,
    established: bool,
    timeout: float,
) -> Session:
    """One session on ``address``: the greeting, each of ``messages`` (an
    iterator: it may pace itself) answered right, then ``q`` and the
    server's close.  Never raises for what the network does: the outcome is
    in the returned :class:`Session`."""
    started = time.monotonic()
    received = 0
    client = ""

    def ended(kind: str, detail: str = "") -> Session:
        return Session(kind, started, time.monotonic(), received, established, detail, client)

    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            host, port = sock.getsockname()[:2]
            client = f"{host}:{port}"
            _expect(sock, GREETING + b"\n")
            for message in messages:
                sock.sendall(message + b"\n")
                _expect(sock, message + REPLY_SUFFIX + b"\n")
                received += 1
            sock.sendall(b"q\n")
            rest = sock.recv(64)
            if rest:
                raise _Cut(f"after q: {rest!r}")
            received += 1
        return ended("served")
    except ConnectionRefusedError:
        return ended("refused")
    except (ConnectionResetError, BrokenPipeError) as exc:
        return ended("reset", repr(exc))
    except _Cut as exc:
        return ended("cut", str(exc))
    except TimeoutError:
        return ended("timed_out")
    except OSError as exc:
        return ended("other", repr(exc))


@dataclass
class LoadResult:
    """Every session a :class:`Load` ran."""

    sessions: list[Session] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Sessions by kind, every kind present (0 included)."""
        counted = Counter(session.kind for session in self.sessions)
        return {kind: counted[kind] for kind in KINDS}

    def failures(self, *, started_after: float = float("-inf")) -> list[Session]:
        """The sessions not served that started after ``started_after``."""
        return [
            session
            for session in self.sessions
            if session.kind != "served" and session.started > started_after
        ]

    def messages(self) -> int:
        """The messages the server must have received, over every session."""
        return sum(session.received for session in self.sessions)

    def summary(self) -> str:
        """One line: counts by kind, new and established apart, and messages."""
        parts = []
        for established, label in ((False, "new"), (True, "established")):
            counted = Counter(s.kind for s in self.sessions if s.established == established)
            parts.append(f"{label}: " + " ".join(f"{k}={counted[k]}" for k in KINDS))
        return "; ".join(parts) + f"; messages={self.messages()}"


class Load:
    """``storm`` threads of new sessions (``pause`` seconds apart each) and
    ``established`` threads of long sessions, on ``address`` from
    :meth:`start` until :meth:`stop`.  A session in progress at
    :meth:`stop` runs to its end; none starts after it."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        storm: int = 3,
        pause: float = 0.01,
        established: int = 9,
        lifetime: float = 3.0,
        interval: float = 0.1,
        timeout: float = 5.0,
    ) -> None:
        self.address = address
        self.storm = storm
        self.pause = pause
        self.established = established
        self.lifetime = lifetime
        self.interval = interval
        self.timeout = timeout
        self.result = LoadResult()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next = 0
        self._lock = threading.Lock()

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        for index in range(self.storm):
            self._spawn(self._storm_loop, f"storm-{index}")
        for index in range(self.established):
            # Staggered: long sessions end, and new ones begin, at all times.
            delay = index * self.lifetime / max(self.established, 1)
            self._spawn(functools.partial(self._established_loop, delay), f"long-{index}")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> LoadResult:
        """Start no more sessions, wait for those running; the result."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.lifetime + 3 * self.timeout + 5)
        assert not any(thread.is_alive() for thread in self._threads), "a client thread hangs"
        return self.result

    def _number(self) -> int:
        with self._lock:
            self._next += 1
            return self._next

    def _storm_loop(self) -> None:
        while not self._stop.is_set():
            number = self._number()
            messages = (f"s{number} m{i} 测试 \x00\xff".encode() for i in range(STORM_MESSAGES))
            session = run_session(self.address, messages, established=False, timeout=self.timeout)
            self._record(session)
            self._stop.wait(self.pause)

    def _established_loop(self, delay: float) -> None:
        if self._stop.wait(delay):
            return
        while not self._stop.is_set():
            messages = self._paced(self._number())
            session = run_session(self.address, messages, established=True, timeout=self.timeout)
            self._record(session)

    def _paced(self, number: int) -> Iterator[bytes]:
        """Messages one ``interval`` apart for ``lifetime`` seconds."""
        end = time.monotonic() + self.lifetime
        index = 0
        while True:
            yield f"e{number} m{index} 持续".encode()
            index += 1
            time.sleep(self.interval)
            if time.monotonic() >= end:
                return

    def _record(self, session: Session) -> None:
        self.result.sessions.append(session)
