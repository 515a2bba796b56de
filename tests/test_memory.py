"""A server-wide memory budget, measured: RSS from /proc under two attacks.

900 connections each holding an unfinished 1 MiB frame, and 900 connections
pipelining four 1 MiB-3 messages without reading a reply: with the default
budget the server's RSS stays under 512 MiB on all three paths (the C echo
session, --generic, the pure-Python twins), a second client (the canary) is
answered within a second throughout, and RSS returns to within 64 MiB of
where it started once the attackers leave.  The first release reached 981 MiB
and 2.8 GiB here (2.7 GiB still resident after the clients left).
"""

from __future__ import annotations

import selectors
import socket
import time

import pytest
from support.serverproc import Canary, ServerProcess, server_process

CONNECTIONS = 900
ATTACK_SECONDS = 8.0
RSS_LIMIT_KIB = 512 * 1024
RETURN_KIB = 64 * 1024
MIB = 1 << 20
PATHS = {
    "c": ((), None),
    "generic": (("--generic",), None),
    "python": ((), {"TRIOECHO_PUREPYTHON": "1"}),
}


def unfinished_frames() -> bytes:
    """A header announcing 1 MiB, and all of the body but its last byte."""
    return MIB.to_bytes(4, "big") + b"u" * (MIB - 1)


def pipelined_messages() -> bytes:
    message = b"p" * (MIB - 3)
    return b"".join(len(message).to_bytes(4, "big") + message for _ in range(4))


def attack(server: ServerProcess, payload: bytes) -> int:
    """CONNECTIONS clients push ``payload`` as fast as the server takes it,
    never reading, for ATTACK_SECONDS; returns the server's peak RSS (KiB)."""
    selector = selectors.DefaultSelector()
    sockets: dict[socket.socket, int] = {}
    for _ in range(CONNECTIONS):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.setblocking(False)
        sockets[sock] = 0
        selector.register(sock, selectors.EVENT_WRITE)
    view = memoryview(payload)
    peak = server.rss_kib()
    deadline = time.monotonic() + ATTACK_SECONDS
    try:
        while time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                try:
                    sockets[ready] += ready.send(view[sockets[ready] : sockets[ready] + 65536])
                except BlockingIOError:
                    continue
                except OSError:  # the server closed it (over the budget)
                    selector.unregister(ready)
                    continue
                if sockets[ready] >= len(payload):
                    selector.unregister(ready)  # all sent; keep it open, unread
            peak = max(peak, server.rss_kib())
    finally:
        for sock in sockets:
            sock.close()
        selector.close()
    return peak


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("kind", ["unfinished", "pipelined"])
def test_memory_stays_bounded_and_returns(kind: str, path: str) -> None:
    options, env = PATHS[path]
    framing = ["--framing", "len", *options]
    payload = unfinished_frames() if kind == "unfinished" else pipelined_messages()
    with server_process(*framing, "--max-connections", "2000", env=env) as server:
        canary = Canary(server.port, "len", stall=1.0)
        start = server.rss_kib()
        peak = attack(server, payload)
        deadline = time.monotonic() + 15
        while server.rss_kib() - start > RETURN_KIB and time.monotonic() < deadline:
            time.sleep(0.2)
        after = server.rss_kib()
        print(
            f"{kind} {path}: RSS {start // 1024} MiB -> peak {peak // 1024} MiB -> "
            f"{after // 1024} MiB after the clients left"
        )
        canary.check()
        assert peak < RSS_LIMIT_KIB, f"peak RSS {peak // 1024} MiB"
        assert after - start < RETURN_KIB, f"{(after - start) // 1024} MiB not returned"
        assert server.stop() == 0
