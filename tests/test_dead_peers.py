"""Peers that vanish: no FIN, no reset, their link just goes silent.

Each test runs the real server (``python -m trioecho serve``) in one network
namespace and its clients in another, joined by a veth pair
(:mod:`support.netns`), then silences the client's side: from then on no
packet of the client reaches the server, as when a host dies or a cable is
cut.  What frees the client's slot is read from the server's own socket
table (``/proc/PID/net/tcp`` and its descriptors: :mod:`support.storm`).

* an idle peer is freed by TCP keepalive (``--keepalive``) at the keepalive
  bound, even with ``--idle-timeout 0``, and not earlier: a
  ``TCP_USER_TIMEOUT`` shorter than the bound would end it at the first
  unanswered probe; a live idle peer is never cut;
* a peer that vanishes while a send to it is blocked is freed by the send
  timeout;
* a peer that vanishes with a reply in flight (sent, never acknowledged,
  the send long finished) is freed by ``TCP_USER_TIMEOUT``, which
  ``--send-timeout`` sets (never below the keepalive bound); before, the
  kernel's retransmission limit (15 to 20 minutes) freed it.

Needs root (CI runs as root); skipped, with the reason, only where network
namespaces cannot be made.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from support.netns import CLIENT_ADDRESS, SERVER_ADDRESS, NetnsPair, why_no_namespaces
from support.serverproc import ServerProcess, recv_exactly
from support.storm import accepted_connections

from trioecho.services.echo import GREETING, REPLY_SUFFIX

GREETED = GREETING + b"\n"
# How often the server's socket table is read while waiting.
POLL_SECONDS = 0.02


@pytest.fixture
def netns() -> Iterator[NetnsPair]:
    """Two fresh namespaces joined by a veth pair, removed after the test
    whatever happens."""
    reason = why_no_namespaces()
    if reason is not None:
        pytest.skip(reason)
    pair = NetnsPair()
    try:
        pair.create()
    except RuntimeError as exc:
        pair.delete()
        pytest.skip(f"cannot make network namespaces here: {exc}")
    try:
        yield pair
    finally:
        pair.delete()


@contextmanager
def server_in(pair: NetnsPair, *options: str) -> Iterator[ServerProcess]:
    """``trioecho serve`` in the server's namespace, on its veth address."""
    server = ServerProcess(
        "--host", SERVER_ADDRESS, *options, wrapper=pair.exec_prefix(pair.server)
    )
    try:
        yield server
    finally:
        server.close()


def wait_for_connections(server: ServerProcess, count: int, timeout: float) -> float:
    """Wait until the server holds ``count`` connections; the time it did
    (``time.monotonic()``).  Fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        held = accepted_connections(server.pid)
        if held == count:
            return now
        if now > deadline:
            raise AssertionError(
                f"the server still holds {held} connections, not {count}, after {timeout} s; "
                f"log: {server.log[-10:]}"
            )
        time.sleep(POLL_SECONDS)


def exchange(sock: socket.socket, message: bytes) -> None:
    """One line and its echo."""
    sock.sendall(message + b"\n")
    expected = message + REPLY_SUFFIX + b"\n"
    assert recv_exactly(sock, len(expected)) == expected


def test_keepalive_frees_a_vanished_idle_peer_at_its_bound_and_never_a_live_one(
    netns: NetnsPair,
) -> None:
    # The keepalive bound is 2 + 1 * 3 = 5 s, and TCP_USER_TIMEOUT is the
    # bound: not the send timeout (the default, 30 s, would hold the dead
    # peer that long), nor below it (the kernel would end the idle
    # connection at its first unanswered probe, at 3 s).
    with server_in(netns, "--idle-timeout", "0", "--keepalive", "2:1:3") as server:
        live = netns.dial(netns.server, SERVER_ADDRESS, server.port)  # its link stays up
        vanishing = netns.dial(netns.client, SERVER_ADDRESS, server.port)
        port = vanishing.getsockname()[1]
        for sock in (live, vanishing):
            assert recv_exactly(sock, len(GREETED)) == GREETED
            exchange(sock, b"hello")
        wait_for_connections(server, 2, timeout=5)
        netns.silence()
        silenced = time.monotonic()
        freed = wait_for_connections(server, 1, timeout=10) - silenced
        print(f"vanished idle peer freed {freed:.2f} s after its link went silent")
        assert 4.0 <= freed <= 6.0
        line = server.wait_for_log(f"{CLIENT_ADDRESS}:{port}: ", "timed out")
        assert "Traceback" not in "\n".join(server.log)
        # The live peer, idle more than the bound, answered every probe.
        time.sleep(max(0.0, silenced + 7 - time.monotonic()))
        exchange(live, b"still here")
        assert accepted_connections(server.pid) == 1
        live.close()
        vanishing.close()
        assert server.stop() == 0
    assert "connection broken" in line


def test_a_peer_vanished_during_a_blocked_send_is_freed_within_the_send_timeout(
    netns: NetnsPair,
) -> None:
    send_timeout = 3.0
    with server_in(
        netns,
        "--framing", "len",
        "--max-frame", str(8 << 20),
        "--idle-timeout", "0",
        "--keepalive", "2:1:3",
        "--send-timeout", f"{send_timeout:g}",
    ) as server:  # fmt: skip
        # A small receive buffer: the 4 MiB reply cannot hide in the kernel.
        sock = netns.dial(netns.client, SERVER_ADDRESS, server.port, rcvbuf=16384)
        port = sock.getsockname()[1]
        greeting = len(GREETING).to_bytes(4, "big") + GREETING
        assert recv_exactly(sock, len(greeting)) == greeting
        payload = bytes(range(256)) * (4 << 12)  # 4 MiB
        sock.sendall(len(payload).to_bytes(4, "big") + payload)
        # Read steadily for a second: the reply's send is blocked, and moving.
        received = 0
        reading = time.monotonic()
        while time.monotonic() - reading < 1.0:
            received += len(sock.recv(16384))
            time.sleep(0.05)
        assert 0 < received < len(payload)
        netns.silence()
        silenced = time.monotonic()
        freed = wait_for_connections(server, 0, timeout=send_timeout + 5) - silenced
        print(f"peer vanished mid-send freed {freed:.2f} s after its link went silent")
        assert freed <= send_timeout + 1
        server.wait_for_log(f"{CLIENT_ADDRESS}:{port}: ", "did not read its replies")
        sock.close()
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("options", "user_timeout"),
    [
        (("--keepalive", "off", "--send-timeout", "2"), 2.0),
        # The keepalive bound (2 + 1 * 3 = 5 s), whatever the send timeout.
        (("--keepalive", "2:1:3", "--send-timeout", "1"), 5.0),
        (("--keepalive", "2:1:3"), 5.0),  # the default send timeout, 30 s
    ],
    ids=["no keepalive: the send timeout", "keepalive: its bound", "keepalive, default send"],
)
def test_a_peer_vanished_with_a_reply_in_flight_is_freed_by_the_user_timeout(
    netns: NetnsPair, options: tuple[str, ...], user_timeout: float
) -> None:
    with server_in(
        netns, "--idle-timeout", "0", "--max-connections", "1", "-v", *options
    ) as server:
        holder = netns.dial(netns.server, SERVER_ADDRESS, server.port)
        assert recv_exactly(holder, len(GREETED)) == GREETED
        # Connected, but queued: the one slot is the holder's.
        queued = netns.dial(netns.client, SERVER_ADDRESS, server.port)
        port = queued.getsockname()[1]
        wait_for_connections(server, 1, timeout=5)
        netns.silence()
        # The slot frees: the server accepts the queued peer and greets it,
        # and the greeting's acknowledgement never comes back.
        holder.close()
        server.wait_for_log(f"{CLIENT_ADDRESS}:{port}: connected")
        greeted = time.monotonic()
        freed = wait_for_connections(server, 0, timeout=user_timeout + 5) - greeted
        print(f"peer vanished with a reply in flight freed {freed:.2f} s after it was sent")
        # Late by about half a second here: a tail loss probe resends the
        # greeting first (nstat: TCPLossProbes 1), the user timeout counts
        # from that last send, and the kernel's timers round up (HZ=250).
        assert user_timeout - 0.5 <= freed <= user_timeout + 1.5
        server.wait_for_log(f"{CLIENT_ADDRESS}:{port}: ", "timed out")
        queued.close()
        assert server.stop() == 0
