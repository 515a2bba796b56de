"""Closing a listening socket without resetting its queue
(:mod:`trioecho.io.refusing`), on real loopback sockets."""

from __future__ import annotations

import errno
import select
import socket
import time
from pathlib import Path

import pytest
import trio

from trioecho.io.refusing import empty_accept_queues, queued_connections, refuse_new_connections


def listener(family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family)
    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    sock.listen(16)
    return sock


def queued_client(address: tuple[str, int]) -> socket.socket:
    """A connection the kernel completes and queues (nobody accepts it)."""
    return socket.create_connection(address[:2], timeout=5)


def pending_connect(address: tuple[str, int], family: int) -> socket.socket:
    client = socket.socket(family)
    client.setblocking(False)
    assert client.connect_ex(address[:2]) == errno.EINPROGRESS
    return client


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_a_refusing_listener_keeps_its_queue_and_drops_new_connections(family: int) -> None:
    """The queued connection is accepted and served after the filter is on;
    a new one's SYN is dropped (its connect stays pending), and once the
    listener is closed the client's retransmitted SYN is refused."""
    try:
        server = listener(family)
    except OSError as exc:  # no IPv6 on this host
        pytest.skip(f"cannot listen on {family!r}: {exc}")
    address = server.getsockname()
    first = queued_client(address)
    deadline = time.monotonic() + 5
    while queued_connections(server) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert refuse_new_connections(server) is True
    late = pending_connect(address, family)
    _, writable, _ = select.select([], [late], [], 0.5)
    assert writable == []  # its SYN was dropped: still connecting
    assert queued_connections(server) == 1
    accepted, _ = server.accept()
    first.sendall(b"hello")
    assert accepted.recv(10) == b"hello"
    assert queued_connections(server) == 0
    server.close()
    _, writable, _ = select.select([], [late], [], 10)  # the SYN again, after 1 s
    assert writable == [late]
    assert late.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    for sock in (first, accepted, late):
        sock.close()


def test_a_unix_listener_is_left_alone(tmp_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "s"))
    server.listen(4)
    with server, socket.socket(socket.AF_UNIX) as client:
        client.connect(str(tmp_path / "s"))
        assert refuse_new_connections(server) is False
        assert queued_connections(server) == 0


async def test_emptying_waits_for_the_accept_loop_and_says_what_is_left() -> None:
    """0 once the caller's accept loop has taken every queued connection; the
    number still queued when nobody accepts within the limit."""
    taken, stuck = listener(), listener()
    clients = [queued_client(taken.getsockname()) for _ in range(3)]
    clients += [queued_client(stuck.getsockname()) for _ in range(2)]
    accepted: list[socket.socket] = []
    trio_taken = trio.socket.from_stdlib_socket(taken)

    async def accept_loop() -> None:
        while True:
            sock, _ = await trio_taken.accept()
            accepted.append(socket.socket(fileno=sock.detach()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_loop)
        assert await empty_accept_queues([trio_taken], limit=5) == 0
        nursery.cancel_scope.cancel()
    assert len(accepted) == 3
    assert await empty_accept_queues([stuck], limit=0.1) == 2
    for sock in [*clients, *accepted, stuck]:
        sock.close()
    trio_taken.close()
