"""Slow readers on real processes: ``--send-timeout`` measures stalls, and
``--min-send-rate`` is the floor under it.

Clients with a small receive buffer each send one 1 MiB message and read
the reply at a paced rate, all at once (the steady reader needs 52 s):

* a steady 20 KB/s reader gets its 1 MiB reply in full, byte for byte
  (the first release cut it after 112,640 bytes at 5.7 s with
  ``--send-timeout 5``);
* a reader that stops is cut 5 s (± 1) after its last read, the log saying
  the send stalled;
* a reader at 4 KB/s, under the floor (``--min-send-rate 10000``), is cut,
  the log saying it read too slowly;
* through ``trioecho relay`` (its bytes forwarded as they come, ``len``; and
  whole frames, ``line``) the steady reader gets everything and the one
  that stops is cut 5 s after its last read, by the relay;
* over TLS, the same as directly.

The stream-level tests of the rule, on Trio's mock clock, are in
``test_send_rule.py``.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from support.serverproc import ServerProcess, recv_exactly, server_process

from trioecho.services.echo import GREETING, REPLY_SUFFIX

SEND_TIMEOUT = 5.0
FLOOR = 10_000  # --min-send-rate
STEADY = 20_000  # bytes a second
TRICKLE = 4_000  # bytes a second, under FLOOR
# 1 MiB, one line too (no "\n", no "\r"); where a byte sits is checkable.
PAYLOAD = (bytes(range(32, 127)) * 11_038)[: 1 << 20]
OPTIONS = ("--max-frame", "2000000", "--send-timeout", str(SEND_TIMEOUT))
CLIENT_SECONDS = 120.0  # no client runs longer


def _encode(framing: str, payload: bytes) -> bytes:
    if framing == "len":
        return len(payload).to_bytes(4, "big") + payload
    return payload + b"\n"


class PacedClient:
    """Connects with a 4 KiB receive buffer, sends PAYLOAD as one message,
    and reads the reply at ``rate`` bytes a second: all of it, or
    ``stop_after`` bytes and then nothing until :attr:`release` is set
    (then the rest at once), in a thread of its own."""

    def __init__(
        self,
        port: int,
        framing: str,
        rate: int,
        stop_after: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.framing = framing
        self.rate = rate
        self.stop_after = stop_after
        self.expected = _encode(framing, PAYLOAD + REPLY_SUFFIX)
        self.received = bytearray()
        self.started = 0.0  # time.monotonic() when it sent its message
        self.last_read = 0.0  # time.monotonic() of the last read before it stopped
        self.ending = ""  # "complete", "eof", "timeout" or the error
        self.release = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.peer = f"127.0.0.1:{self.sock.getsockname()[1]}"  # as the server logs it
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        greeting = _encode(framing, GREETING)
        assert recv_exactly(self.sock, len(greeting)) == greeting
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self.started = time.monotonic()
            self.sock.sendall(_encode(self.framing, PAYLOAD))
            self.ending = self._read_paced()
            if self.ending == "stopped":
                self.release.wait(CLIENT_SECONDS)
                self.ending = self._read_rest()
        except OSError as exc:
            self.ending = repr(exc)
        finally:
            self.sock.close()

    def _read_paced(self) -> str:
        start = time.monotonic()
        limit = len(self.expected) if self.stop_after is None else self.stop_after
        step = self.rate // 20  # a read every 50 ms
        while len(self.received) < limit:
            if time.monotonic() - start > CLIENT_SECONDS:
                return "timeout"
            due = int(self.rate * (time.monotonic() - start)) - len(self.received)
            if due < step:
                time.sleep(0.05)
                continue
            data = self.sock.recv(min(due, limit - len(self.received)))
            if not data:
                return "eof"
            self.received += data
            self.last_read = time.monotonic()
        return "complete" if self.stop_after is None else "stopped"

    def _read_rest(self) -> str:
        while data := self.sock.recv(65536):
            self.received += data
        return "eof"

    def join(self) -> None:
        self.thread.join(CLIENT_SECONDS + 30)
        assert not self.thread.is_alive()

    def assert_served_in_full(self) -> None:
        self.join()
        assert self.ending == "complete", (self.ending, len(self.received))
        assert self.received == self.expected

    def assert_cut_short(self) -> None:
        """Fewer bytes than the reply, each one right."""
        self.release.set()
        self.join()
        assert self.ending in ("eof", repr(ConnectionResetError(104, "Connection reset by peer")))
        assert len(self.received) < len(self.expected)
        assert self.received == self.expected[: len(self.received)]


def _when_logged(
    expected: dict[str, tuple[ServerProcess, tuple[str, ...]]], timeout: float = 60
) -> dict[str, tuple[str, float]]:
    """For each name, the first log line of its server holding every one of
    its fragments, and when it was seen (``time.monotonic()``: all are
    watched at once, every 20 ms)."""
    seen: dict[str, tuple[str, float]] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(expected) and time.monotonic() < deadline:
        for name, (server, fragments) in expected.items():
            if name in seen:
                continue
            for line in list(server.log):
                if all(fragment in line for fragment in fragments):
                    seen[name] = line, time.monotonic()
                    break
        time.sleep(0.02)
    missing = {name: fragments for name, (_, fragments) in expected.items() if name not in seen}
    assert not missing, f"no log line with {missing}"
    return seen


@contextmanager
def _relay(framing: str, upstream: int) -> Iterator[ServerProcess]:
    with server_process(
        "--upstream",
        f"127.0.0.1:{upstream}",
        "--framing",
        framing,
        *OPTIONS,
        "--min-send-rate",
        str(FLOOR),
        command="relay",
    ) as relay:
        yield relay


def test_slow_readers_are_served_while_they_read_and_cut_when_they_stall(
    tls_files: dict[str, str], client_ssl_context: ssl.SSLContext
) -> None:
    with ExitStack() as stack:
        echo = stack.enter_context(
            server_process("--framing", "len", *OPTIONS, "--min-send-rate", str(FLOOR))
        )
        # Over TLS (progress is seen a record, 16 KiB, at a time: OpenSSL on
        # the socket with the hub, trio.SSLStream with Trio's waits).
        tls_echo = stack.enter_context(
            server_process(
                "--framing",
                "len",
                *OPTIONS,
                "--tls-cert",
                tls_files["cert"],
                "--tls-key",
                tls_files["key"],
            )
        )
        # The relays' upstreams, with the default send timeout (30 s): on
        # loopback a relay's socket (default buffers, 64 KiB segments) shows
        # the upstream its progress only every 64-128 KiB it reads.
        upstream = stack.enter_context(server_process("--framing", "len", "--max-frame", "2000000"))
        line_upstream = stack.enter_context(
            server_process("--framing", "line", "--max-frame", "2000000")
        )
        relay = stack.enter_context(_relay("len", upstream.port))
        line_relay = stack.enter_context(_relay("line", line_upstream.port))
        steady = [
            PacedClient(echo.port, "len", STEADY),
            PacedClient(relay.port, "len", STEADY),
            PacedClient(line_relay.port, "line", STEADY),
            PacedClient(tls_echo.port, "len", STEADY, tls=client_ssl_context),
        ]
        stopping = {
            "serve": (echo, PacedClient(echo.port, "len", STEADY, stop_after=100_000)),
            "relay": (relay, PacedClient(relay.port, "len", STEADY, stop_after=100_000)),
            "line relay": (
                line_relay,
                PacedClient(line_relay.port, "line", STEADY, stop_after=100_000),
            ),
            "tls": (
                tls_echo,
                PacedClient(
                    tls_echo.port, "len", STEADY, stop_after=100_000, tls=client_ssl_context
                ),
            ),
        }
        trickling = PacedClient(echo.port, "len", TRICKLE)
        clients = [*steady, *(client for _, client in stopping.values()), trickling]
        for client in clients:
            client.start()

        stalled = f"the send stalled for send_timeout={SEND_TIMEOUT}s"
        expected: dict[str, tuple[ServerProcess, tuple[str, ...]]] = {
            name: (server, (client.peer, stalled)) for name, (server, client) in stopping.items()
        }
        expected["trickling"] = (echo, (trickling.peer, "too slowly: "))
        seen = _when_logged(expected)
        for name, (_, client) in stopping.items():
            assert client.last_read > 0, name
            after = seen[name][1] - client.last_read
            assert SEND_TIMEOUT - 1 <= after <= SEND_TIMEOUT + 1, (name, after)
            client.assert_cut_short()
            print(f"{name}: a stopped reader cut {after:.2f} s after its last read")
        assert f"below min_send_rate={FLOOR} bytes/s" in seen["trickling"][0]
        trickling.assert_cut_short()
        print(f"trickling: cut after {seen['trickling'][1] - trickling.started:.1f} s")
        for client in steady:
            client.assert_served_in_full()
            print(
                f"steady: {len(client.received)} bytes in {client.last_read - client.started:.1f} s"
            )
        for server in (line_relay, relay, line_upstream, upstream, tls_echo, echo):
            assert server.stop() == 0
