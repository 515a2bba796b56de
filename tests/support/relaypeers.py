"""A relay's peers, hostile or odd, for tests of ``trioecho relay`` as a real
process: an upstream whose every connection runs a behaviour in a thread
(never answering, never reading, flooding, resetting, half-closing), the
PostgreSQL startup packets and ErrorResponse fields, and the relay's
sockets counted from ``/proc``."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from contextlib import suppress

import trio

from support.serverproc import ServerProcess

SSL_REQUEST = struct.pack(">II", 8, 80877103)
GSSENC_REQUEST = struct.pack(">II", 8, 80877104)


class HostileUpstream:
    """A TCP server on loopback whose connections each run ``behave(sock)`` in
    a thread.  ``ended`` counts the connections whose ``behave`` returned or
    failed (for one that reads until EOF: the relay closed its side)."""

    def __init__(self, behave: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.behave = behave
        self.accepted = 0
        self.ended = 0
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.connections.append(sock)
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock: socket.socket) -> None:
        try:
            with suppress(OSError):
                self.behave(sock)
        finally:
            self.ended += 1

    def close(self) -> None:
        self.listener.close()
        for sock in self.connections:
            with suppress(OSError):
                sock.close()


def never_answers(sock: socket.socket) -> None:
    """Read until the relay's end, answer nothing."""
    while sock.recv(65536):
        pass


def never_reads(sock: socket.socket) -> None:
    time.sleep(60)


def floods(sock: socket.socket) -> None:
    frame = struct.pack(">I", 60000) + b"f" * 60000
    while True:
        sock.sendall(frame)


def resets(sock: socket.socket) -> None:
    sock.recv(100)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def half_closes(sock: socket.socket) -> None:
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):
        pass


def sockets_of(pid: int) -> int:
    """How many sockets process ``pid`` holds now."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except FileNotFoundError:
            pass
    return count


def wait_for_sockets(pid: int, count: int, within: float) -> float:
    """Seconds until process ``pid`` holds ``count`` sockets; fails past ``within``."""
    start = time.monotonic()
    while sockets_of(pid) != count:
        waited = time.monotonic() - start
        assert waited < within, f"{sockets_of(pid)} sockets after {waited:.2f} s, not {count}"
        time.sleep(0.01)
    return time.monotonic() - start


def no_tracebacks(process: ServerProcess) -> None:
    assert not any("Traceback" in line or "handler raised" in line for line in process.log)


def startup_message(**parameters: str) -> bytes:
    """A protocol 3.0 StartupMessage (user postgres, and ``parameters``)."""
    pairs = {"user": "postgres", **parameters}
    body = struct.pack(">I", 196608)
    body += b"".join(f"{key}\0{value}\0".encode() for key, value in pairs.items()) + b"\0"
    return struct.pack(">I", 4 + len(body)) + body


def error_fields(response: bytes | None) -> dict[str, str]:
    """The fields of one whole ErrorResponse, by their code letters."""
    assert response is not None
    assert response[:1] == b"E"
    size = struct.unpack(">I", response[1:5])[0]
    assert len(response) == 1 + size
    fields = {}
    for field in response[5:-1].split(b"\0")[:-1]:
        fields[chr(field[0])] = field[1:].decode()
    return fields


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def read_frame(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    """One frame with a 4-byte big-endian length from ``stream`` (Trio),
    ``buffer`` holding what was read past it."""
    while True:
        if len(buffer) >= 4:
            (length,) = struct.unpack_from(">I", buffer)
            if len(buffer) >= 4 + length:
                frame = bytes(buffer[4 : 4 + length])
                del buffer[: 4 + length]
                return frame
        chunk = await stream.receive_some(1 << 16)
        if not chunk:
            raise EOFError(f"closed with {len(buffer)} bytes of a frame")
        buffer += chunk
