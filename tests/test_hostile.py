"""Hostile peers against the real server process, over loopback TCP.

For each case: the offending connection is closed within a stated bound, a
log line names the peer and the reason, a well-behaved client keeps getting
correct replies throughout, and the server's memory stays bounded.  A
server out of file descriptors (its own RLIMIT_NOFILE) says so once per
episode and serves again once some are freed.  And peers pipelining without
pause delay neither the canary nor a new connection's greeting (the
readiness hub's fairness, whose logic ``test_inline.py`` checks in-process).
"""

from __future__ import annotations

import os
import re
import resource
import select
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest
from support.serverproc import (
    Canary,
    ServerProcess,
    connect,
    greeted_line_client,
    recv_exactly,
    server_process,
)

from trioecho.io.readiness import resolve_readiness
from trioecho.io.tls import client_context, detect_truncation, server_context
from trioecho.services.echo import GREETING, REPLY_SUFFIX

RSS_GROWTH_KIB = 32 * 1024  # what a misbehaving peer may cost the server, at most
CLOSE_BOUND = 5.0  # seconds within which an offender's connection is closed


def peer_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Read (and drop) until the server closes; return how long it took."""
    sock.settimeout(seconds)
    start = time.monotonic()
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - start


@pytest.mark.parametrize(
    ("options", "header", "announced"),
    [
        ((), b"\xff\xff\xff\xff", 0xFFFFFFFF),
        (("--length-bytes", "8"), struct.pack(">Q", 1 << 63), 1 << 63),
    ],
)
def test_huge_length_prefix(options: tuple[str, ...], header: bytes, announced: int) -> None:
    with server_process("--framing", "len", *options) as server:
        rss = server.rss_kib()
        with connect(server.port) as sock:
            width = len(header)
            assert recv_exactly(sock, width + len(GREETING))[width:] == GREETING
            sock.sendall(header + b"just a little body")
            assert closed_within(sock, CLOSE_BOUND) < CLOSE_BOUND
            server.wait_for_log(peer_of(sock), f"frame header announces {announced} bytes")
        assert server.rss_kib() - rss < RSS_GROWTH_KIB
        assert server.stop() == 0


def stream_endless_line(sock: socket.socket, total: int) -> int:
    """Send up to ``total`` bytes of one line; return how many were sent."""
    chunk = b"x" * (1 << 20)
    sent = 0
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # reset or broken pipe: the server gave up on us
        pass
    return sent


def test_endless_line_is_cut_off() -> None:
    with server_process() as server:
        canary = Canary(server.port)
        rss = server.rss_kib()
        sock = greeted_line_client(server.port)
        sock.settimeout(30)
        sent = stream_endless_line(sock, 1 << 30)
        assert sent < 64 << 20, "the server kept reading a line far over its limit"
        server.wait_for_log(peer_of(sock), "line longer than max_frame=65536")
        sock.close()
        canary.check()
        assert server.rss_kib() - rss < RSS_GROWTH_KIB
        assert server.stop() == 0


def test_one_gib_line_in_discard_mode_streams_through_in_bounded_memory() -> None:
    with server_process("--on-too-long", "discard") as server:
        canary = Canary(server.port)
        rss = server.rss_kib()
        sock = greeted_line_client(server.port)
        sock.settimeout(60)
        assert stream_endless_line(sock, 1 << 30) == 1 << 30  # all of it was read
        sock.sendall(b"\nafter\n")
        reply = b"after" + REPLY_SUFFIX + b"\n"
        assert recv_exactly(sock, len(reply)) == reply
        server.wait_for_log(peer_of(sock), "dropped an over-long line")
        assert server.rss_kib() - rss < RSS_GROWTH_KIB
        sock.close()
        canary.check()
        assert server.stop() == 0


def test_invalid_utf8_and_nul_bytes_are_echoed_exactly() -> None:
    with server_process() as server:
        with greeted_line_client(server.port) as sock:
            payloads = [
                b"\xff\xfe\xfd",
                b"\x00\x00",
                b"caf\xc3",
                b"\xed\xa0\x80 surrogate",
                b"a\x00b",
            ]
            sock.sendall(b"".join(p + b"\n" for p in payloads))
            expected = b"".join(p + REPLY_SUFFIX + b"\n" for p in payloads)
            assert recv_exactly(sock, len(expected)) == expected
        assert not [line for line in server.log if "ERROR" in line or "Traceback" in line]
        assert server.stop() == 0


def test_partial_frame_then_eof() -> None:
    with server_process("--framing", "len") as server:
        canary = Canary(server.port, framing="len")
        with connect(server.port) as sock:
            recv_exactly(sock, 4 + len(GREETING))
            sock.sendall(b"\x00\x00\x00\x10only half")
            sock.shutdown(socket.SHUT_WR)
            assert closed_within(sock, CLOSE_BOUND) < CLOSE_BOUND
            server.wait_for_log(peer_of(sock), "IncompleteFrameError", "13 bytes of it received")
        canary.check()
        assert server.stop() == 0


def test_reset_in_the_middle_of_a_frame() -> None:
    with server_process("--framing", "len") as server:
        canary = Canary(server.port, framing="len")
        rss = server.rss_kib()
        for _ in range(50):
            with connect(server.port) as sock:
                recv_exactly(sock, 4 + len(GREETING))
                sock.sendall(b"\x00\x01\x00\x00" + b"y" * 1000)
                peer = peer_of(sock)
                # SO_LINGER with a zero timeout: close() sends RST, not FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.wait_for_log(peer, "connection broken")
        canary.check()
        assert server.rss_kib() - rss < RSS_GROWTH_KIB
        assert server.stop() == 0


def test_slowloris_is_closed_by_the_idle_timeout() -> None:
    with server_process("--idle-timeout", "3") as server:
        canary = Canary(server.port)
        with greeted_line_client(server.port) as sock:
            start = time.monotonic()
            sock.settimeout(0.1)
            closed_after = None
            for byte in b"GET / HTTP/1.1 and so on, one byte a second":
                try:
                    sock.sendall(bytes([byte]))
                    if sock.recv(100) == b"":
                        closed_after = time.monotonic() - start
                        break
                except TimeoutError:
                    pass
                except OSError:
                    closed_after = time.monotonic() - start
                    break
                time.sleep(1)
            assert closed_after is not None and closed_after < 3 + CLOSE_BOUND
            server.wait_for_log(peer_of(sock), "idle_timeout=3.0s")
        canary.check()
        assert server.stop() == 0


def test_client_that_never_reads_is_closed_by_the_send_timeout() -> None:
    with server_process("--send-timeout", "1") as server:
        canary = Canary(server.port)
        rss = server.rss_kib()
        with greeted_line_client(server.port) as sock:
            sock.settimeout(30)
            start = time.monotonic()
            try:
                while time.monotonic() - start < 30:
                    sock.sendall((b"z" * 1000 + b"\n") * 64)
            except OSError:
                pass
            server.wait_for_log(peer_of(sock), "did not read its replies")
        canary.check()
        assert server.rss_kib() - rss < RSS_GROWTH_KIB
        assert server.stop() == 0


def test_connection_flood_past_max_connections() -> None:
    with server_process("--max-connections", "20") as server:
        canary = Canary(server.port)  # holds one of the 20 slots
        socks = [connect(server.port) for _ in range(60)]
        time.sleep(0.5)  # the server greets every connection it accepted
        readable, _, _ = select.select(socks, [], [], 0)
        served = [sock for sock in socks if sock in readable]
        waiting = [sock for sock in socks if sock not in readable]
        assert len(served) == 19  # 20 slots, the canary has one
        for sock in served:
            assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
        assert server.process.poll() is None
        for sock in served:
            sock.sendall(b"q\n")
            sock.close()
        for sock in waiting[:19]:
            sock.settimeout(10)
            assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
            sock.sendall(b"late\n")
            reply = b"late" + REPLY_SUFFIX + b"\n"
            assert recv_exactly(sock, len(reply)) == reply
        for sock in waiting:
            sock.close()
        canary.check()
        assert server.stop() == 0


def test_half_close_still_gets_every_reply() -> None:
    with server_process() as server:
        with greeted_line_client(server.port) as sock:
            messages = [f"message {i}".encode() for i in range(500)]
            sock.sendall(b"".join(m + b"\n" for m in messages))
            sock.shutdown(socket.SHUT_WR)
            expected = b"".join(m + REPLY_SUFFIX + b"\n" for m in messages)
            sock.settimeout(10)
            assert recv_exactly(sock, len(expected) + 1) == expected  # then EOF
        assert server.stop() == 0


def descriptors_once_served(
    server: ServerProcess, context: ssl.SSLContext, header: bytes = b""
) -> int:
    """The server's open descriptors after one TLS client (behind
    ``header``) was greeted and left, and the server closed its socket: the
    baseline of a test that counts them.  The readiness hub opens its
    epoll, one descriptor, at the first connection, and keeps it; with
    Trio's waits (the server inherits ``TRIOECHO_READINESS``) nothing
    stays."""
    kept = 1 if resolve_readiness(None) == "hub" else 0
    before = server.open_fds()
    with connect(server.port) as raw:
        raw.sendall(header)
        with context.wrap_socket(raw, server_hostname="localhost") as client:
            assert recv_exactly(client, len(GREETING) + 1) == GREETING + b"\n"
    deadline = time.monotonic() + 5
    while server.open_fds() > before + kept and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.open_fds()


def test_proxy_protocol_garbage_and_stalls(tls_files: dict[str, str]) -> None:
    """Behind a load balancer: malformed headers, half headers, half TLS
    handshakes.  Each is closed within its bound with a log line; the
    canary (a proper PROXY header, then TLS) is served throughout; no file
    descriptor outlives its connection."""
    options = ("--proxy-protocol", "auto", "--proxy-timeout", "1")
    tls = ("--tls-cert", tls_files["cert"], "--tls-key", tls_files["key"])
    with server_process(*options, *tls, "--tls-handshake-timeout", "1") as server:
        context = ssl.create_default_context(cafile=tls_files["ca"])
        fds = descriptors_once_served(server, context, b"PROXY TCP4 203.0.113.9 127.0.0.1 1 9\r\n")
        rss = server.rss_kib()
        raw = connect(server.port)
        raw.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 4242 9999\r\n")
        tls_sock = context.wrap_socket(raw, server_hostname="localhost")
        canary = Canary(server.port, sock=tls_sock)
        cases = [
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "port 99999 out of range"),
            (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff", "more than the limit of 4096"),
            (b"GET / HTTP/1.1\r\n\r\n", "no PROXY protocol header"),
            (b"PROXY TCP4 1.2.3.4", "no complete PROXY header within 1 s"),
            (b"PROXY UNKNOWN\r\n\x16\x03\x01", "TLS handshake not done within 1 s"),
            (b"PROXY UNKNOWN\r\nnot a ClientHello\n", "TLS handshake failed"),
        ]
        for _ in range(3):
            for data, reason in cases:
                with connect(server.port) as sock:
                    sock.sendall(data)
                    assert closed_within(sock, CLOSE_BOUND) < CLOSE_BOUND
                    server.wait_for_log(peer_of(sock), reason)
        canary.check()
        assert canary.exchanges > 10
        deadline = time.monotonic() + 5  # the server closes the canary's connection
        while server.open_fds() != fds and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.open_fds() == fds
        assert server.rss_kib() - rss < RSS_GROWTH_KIB
        assert server.stop() == 0


def test_out_of_file_descriptors_is_logged_once_per_episode() -> None:
    limit = 128
    with server_process("--max-connections", "1000", limit_fds=limit) as server:
        warning = server.wait_for_log("RLIMIT_NOFILE")
        assert "--max-connections 1000" in warning
        canary = Canary(server.port)
        clients = []
        for _ in range(200):  # past the limit: accepting fails with EMFILE
            try:
                clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            except OSError:
                break
        time.sleep(1.5)  # accept() fails again and again meanwhile
        out_of_fds = [entry for entry in server.log if "out of file descriptors" in entry]
        assert len(out_of_fds) == 1, out_of_fds
        assert "Traceback" not in "\n".join(server.log)
        for client in clients:
            client.close()
        server.wait_for_log("accepting again")
        with connect(server.port) as sock:  # served again
            assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
        canary.check()
        assert server.stop() == 0
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > limit  # ours is untouched


# -- a peer pipelining without pause (the readiness hub's fairness) ------------


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def flood(port: int, stop: threading.Event, sent: list[int], errors: list[OSError]) -> None:
    """Pipeline 64-byte messages without pause, reading replies only to
    keep the pipe moving (a thread)."""
    sock = connect(port)
    batch = memoryview(frame(b"p" * 64) * 1000)
    offset = 0
    sock.setblocking(False)
    try:
        while not stop.is_set():
            try:
                done = sock.send(batch[offset:])
            except BlockingIOError:
                done = 0
            sent[0] += done
            offset = (offset + done) % len(batch)
            try:
                while sock.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
    except OSError as exc:
        errors.append(exc)
    finally:
        sock.close()


def test_a_pipelining_peer_does_not_delay_the_canary_or_accept() -> None:
    """The bound stated in docs/explanation/performance.md (Fairness): under a
    flood of pipelined messages from two peers, every canary exchange and every new connection's
    greeting takes under a second (they typically take milliseconds)."""
    with server_process("--framing", "len", "--idle-timeout", "0") as server:
        stop = threading.Event()
        sent = [0]
        errors: list[OSError] = []
        flooders = [
            threading.Thread(target=flood, args=(server.port, stop, sent, errors)) for _ in range(2)
        ]
        for thread in flooders:
            thread.start()
        try:
            time.sleep(0.3)
            canary = Canary(server.port, "len", stall=1.0)
            slowest_accept = 0.0
            for _ in range(20):
                start = time.monotonic()
                sock = connect(server.port)
                assert recv_exactly(sock, 4 + len(GREETING)) == frame(GREETING)
                slowest_accept = max(slowest_accept, time.monotonic() - start)
                sock.close()
                time.sleep(0.05)
            time.sleep(1)
            print(
                f"canary: {canary.exchanges} exchanges, slowest {canary.slowest * 1000:.1f} ms; "
                f"slowest greeting of a new connection {slowest_accept * 1000:.1f} ms; "
                f"{sent[0] / 1e6:.0f} MB flooded"
            )
            canary.check()
            assert canary.exchanges > 50
            assert slowest_accept < 1.0, slowest_accept
            assert sent[0] > 10_000_000  # the flood really ran
            assert not errors, (errors, server.log[-5:])
        finally:
            stop.set()
            for thread in flooders:
                thread.join()


def test_tls_errors_have_a_reason(tls_files: dict[str, str]) -> None:
    """A peer that drops the TLS layer without close_notify (a truncation)
    gets one line naming why, never an empty reason.  A real process: in
    the test's own Trio run the truncation was sometimes read as a clean
    end (a close_notify) instead."""
    context = ssl.create_default_context(cafile=tls_files["ca"])
    with server_process(
        "--tls-cert", tls_files["cert"], "--tls-key", tls_files["key"], "-v"
    ) as server:
        raw = connect(server.port)
        tls = context.wrap_socket(raw, server_hostname="localhost")
        assert recv_exactly(tls, len(GREETING) + 1) == GREETING + b"\n"
        tls.sendall(b"partial")
        os.close(tls.detach())  # drop the TLS layer without close_notify: a truncation
        line = server.wait_for_log("connection broken")
        assert not re.search(r"connection broken while \w+: ?$", line), line
        assert server.stop() == 0


def test_trioechos_tls_contexts_report_a_truncation(tls_files: dict[str, str]) -> None:
    """Some Pythons (Debian's 3.11.2) set OP_IGNORE_UNEXPECTED_EOF by
    default, which reads a truncation as a clean end: trioecho's contexts
    clear it, whatever the default."""
    ignore = ssl.OP_IGNORE_UNEXPECTED_EOF
    set_by_default = ssl.create_default_context()
    set_by_default.options |= ignore
    assert not detect_truncation(set_by_default).options & ignore
    assert not server_context(tls_files["cert"], tls_files["key"]).options & ignore
    assert not client_context(tls_files["ca"]).options & ignore


FLOOD = 120  # hostile handshakes, more than the server's slots
CLIENT_HELLO_START = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # and no more


def test_a_handshake_flood_gives_every_slot_back(tls_files: dict[str, str]) -> None:
    """FLOOD connections to a TLS port with 40 slots: a third stall in the
    middle of a ClientHello, a third send plain text, a third complete a
    handshake and reset the connection.  Each is closed (the stalled ones
    by the handshake timeout) with its own log line; a TLS canary is
    answered throughout; then every slot and descriptor is back and a new
    TLS client is served."""
    options = ("--tls-cert", tls_files["cert"], "--tls-key", tls_files["key"], "-v")
    limits = ("--tls-handshake-timeout", "1", "--max-connections", "40")
    context = ssl.create_default_context(cafile=tls_files["ca"])
    with server_process(*options, *limits) as server:
        fds, rss = descriptors_once_served(server, context), server.rss_kib()
        raw = connect(server.port)
        canary = Canary(server.port, sock=context.wrap_socket(raw, server_hostname="localhost"))
        peers = []
        for index in range(FLOOD):
            sock = connect(server.port, timeout=30)
            if index % 3 == 0:
                sock.sendall(CLIENT_HELLO_START)
            elif index % 3 == 1:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            else:  # a handshake done, then a reset
                tls = context.wrap_socket(sock, server_hostname="localhost")
                tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                tls.close()
                continue
            peers.append(sock)
        for sock in peers:
            if closed_within(sock, 30) >= 30:
                pytest.fail(f"{peer_of(sock)} still open after 30 s")
            sock.close()
        reasons = ("TLS handshake not done within 1 s", "the client does not speak TLS")
        deadline = time.monotonic() + 10  # each line follows its close
        while time.monotonic() < deadline:
            counts = [len(server.lines_with(reason)) for reason in reasons]
            if counts == [FLOOD // 3, FLOOD // 3]:
                break
            time.sleep(0.05)
        assert counts == [FLOOD // 3, FLOOD // 3], server.log[-5:]
        canary.check()
        with context.wrap_socket(connect(server.port), server_hostname="localhost") as fresh:
            assert recv_exactly(fresh, len(GREETING) + 1) == GREETING + b"\n"
        deadline = time.monotonic() + 10
        while server.open_fds() != fds and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.open_fds() == fds
        assert server.rss_kib() - rss < RSS_GROWTH_KIB
        assert server.stop() == 0


def test_a_tls_client_on_a_plain_port_gives_up_and_is_let_go(tls_files: dict[str, str]) -> None:
    """OpenSSL's s_client against a plain port: it reads the greeting as a
    TLS record and gives up (``wrong version number``); its connection is
    closed and counted, and the canary never notices."""
    with server_process("-v") as server:
        canary = Canary(server.port)
        done = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-quiet"],
            input=b"",
            capture_output=True,
            timeout=30,
        )
        assert done.returncode != 0
        assert b"wrong version number" in done.stderr, done.stderr
        server.wait_for_log("closed")
        canary.check()
        assert server.stop() == 0
