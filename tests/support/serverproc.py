"""The echo service as a separate process, observed from outside: port, logs, RSS, fds."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from trioecho.services.echo import GREETING, REPLY_SUFFIX


class ServerProcess:
    """``python -m trioecho COMMAND --port 0 OPTIONS`` with its stderr log collected.

    ``program``: a Python script to run instead of ``-m trioecho COMMAND``
    (a server of its own handler); it gets ``--port 0 OPTIONS`` and must
    print ``listening on 127.0.0.1:PORT`` first, as the command line does.
    ``wrapper``: a command that runs it (``ip netns exec NS``: in a network
    namespace); it must exec the server, so that ``pid`` is the server's."""

    def __init__(
        self,
        *options: str,
        env: dict[str, str] | None = None,
        limit_fds: int | None = None,
        command: str = "serve",
        program: str | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        def limit() -> None:
            if limit_fds is not None:  # soft and hard: the server cannot raise it
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit_fds, limit_fds))

        run = ["-m", "trioecho", command] if program is None else [program]
        self.process = subprocess.Popen(
            [*wrapper, sys.executable, *run, "--port", "0", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env} if env else None,
            preexec_fn=limit if limit_fds is not None else None,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        match = re.fullmatch(r"listening on [0-9.]+:(\d+)\n", line)
        if not match:
            self.process.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.process.stderr.read()!r}")  # type: ignore[union-attr]
        self.port = int(match.group(1))
        self.pid = self.process.pid
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        try:
            for raw in self.process.stderr:
                self.log.append(raw.decode(errors="replace").rstrip("\n"))
        except (ValueError, OSError):
            pass  # close() closed the pipe while children still held its other end

    def rss_kib(self) -> int:
        return self._status_kib("VmRSS:")

    def peak_rss_kib(self) -> int:
        """The most RSS the process has had (VmHWM)."""
        return self._status_kib("VmHWM:")

    def _status_kib(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field}")

    def lines_with(self, fragment: str) -> list[str]:
        """The log lines so far that hold ``fragment``."""
        return [line for line in list(self.log) if fragment in line]

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def wait_for_log(self, *fragments: str, timeout: float = 10) -> str:
        """The first log line holding every fragment; waits up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log):
                if all(fragment in line for fragment in fragments):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no log line with {fragments}; log: {self.log[-20:]}")

    def stop(self, signum: int = signal.SIGINT, timeout: float = 20) -> int:
        """Send ``signum`` (if the server still runs) and return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.wait(timeout)

    def wait(self, timeout: float = 20) -> int:
        """Wait for the server to exit by itself; return its exit code."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def server_process(
    *options: str,
    env: dict[str, str] | None = None,
    limit_fds: int | None = None,
    command: str = "serve",
) -> Iterator[ServerProcess]:
    """A server process (``env``: variables to add to this one's environment;
    ``limit_fds``: its RLIMIT_NOFILE; ``command``: ``serve`` or ``relay``)."""
    server = ServerProcess(*options, env=env, limit_fds=limit_fds, command=command)
    try:
        yield server
    finally:
        server.close()


def connect(port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def greeted_line_client(port: int) -> socket.socket:
    sock = connect(port)
    assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
    return sock


class Canary:
    """A well-behaved client doing ping-pong in a thread while a test misbehaves.

    ``framing`` is the server's: ``"line"`` or ``"len"`` (4-byte big endian).
    ``sock``, if given, is the connection to use (e.g. TLS over a PROXY
    header), its greeting not yet read.  ``check()`` asserts every reply was
    right and none took longer than ``stall`` seconds: the other clients
    were never stalled.
    """

    def __init__(
        self,
        port: int,
        framing: str = "line",
        stall: float = 2.0,
        sock: socket.socket | None = None,
    ) -> None:
        self.port = port
        self.stall = stall
        self.exchanges = 0
        self.slowest = 0.0
        self.error: BaseException | None = None
        self._encode = _encode_line if framing == "line" else _encode_len
        self._stop = threading.Event()
        self._sock = sock if sock is not None else connect(port)
        greeting = self._encode(GREETING)
        assert recv_exactly(self._sock, len(greeting)) == greeting
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                message = f"ping {self.exchanges}".encode()
                expected = self._encode(message + REPLY_SUFFIX)
                start = time.monotonic()
                self._sock.sendall(self._encode(message))
                reply = recv_exactly(self._sock, len(expected))
                self.slowest = max(self.slowest, time.monotonic() - start)
                assert reply == expected, reply
                self.exchanges += 1
                time.sleep(0.01)
        except BaseException as exc:
            self.error = exc

    def check(self, minimum: int = 5) -> None:
        """Assert the canary was served throughout, and still is: ``minimum``
        more exchanges must succeed now, after whatever the test did."""
        target = self.exchanges + minimum
        deadline = time.monotonic() + 10
        while self.exchanges < target and self.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(timeout=10)
        self._sock.close()
        assert self.error is None, f"canary failed: {self.error!r}"
        assert self.exchanges >= target, f"only {self.exchanges} exchanges"
        assert self.slowest < self.stall, f"a reply took {self.slowest:.2f}s"


def _encode_line(payload: bytes) -> bytes:
    return payload + b"\n"


def _encode_len(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload
