"""trioecho behind a real HAProxy sending the PROXY protocol (v1 and v2).

HAProxy (Debian's ``haproxy`` package, installed by
``tools/install-system-deps.sh``) balances two trioecho backends round-robin
in TCP mode.  Every reply must be right, both backends must serve, and each
backend must log the real client address (the client's own port, not the
one HAProxy connected from).
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import trustme
from support.serverproc import ServerProcess, greeted_line_client, recv_exactly, server_process

from trioecho.logtext import format_address
from trioecho.services.echo import GREETING, REPLY_SUFFIX

HAPROXY_CONFIG = """\
global
    maxconn 2000

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend echo
    bind 127.0.0.1:{port}
    default_backend trioecho

backend trioecho
    balance roundrobin
    server first 127.0.0.1:{first} {send_proxy}
    server second 127.0.0.1:{second} {send_proxy}
"""
CONNECTED = re.compile(r"trioecho\.connections: (\S+) \(via proxy (\S+)\): connected$")


def haproxy_binary() -> str:
    path = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        pytest.fail("haproxy is not installed: run sh tools/install-system-deps.sh")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def haproxy(config: str, port: int, directory: Path) -> Iterator[set[str]]:
    """Run haproxy with ``config`` until the frontend on ``port`` accepts;
    yields the addresses of the probe connections that found it ready (they
    were relayed to a backend like any client)."""
    path = directory / "haproxy.cfg"
    path.write_text(config)
    binary = haproxy_binary()
    check = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    process = subprocess.Popen(
        [binary, "-db", "-f", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        probes = set()
        while True:  # until the frontend accepts
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                    probes.add(format_address(probe.getsockname()))
                break
            except OSError:
                assert process.poll() is None, process.stdout.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "haproxy did not start listening"
                time.sleep(0.05)
        yield probes
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def logged_clients(backend: ServerProcess) -> set[str]:
    """The client addresses a backend logged as connected through the proxy."""
    backend.wait_for_log("(via proxy 127.0.0.1:")
    logged = set()
    for line in list(backend.log):
        match = CONNECTED.search(line)
        if match:
            logged.add(match.group(1))
            assert match.group(2).startswith("127.0.0.1:")
    return logged


@pytest.mark.parametrize(
    ("send_proxy", "options"),
    [
        ("send-proxy-v2", ("--proxy-protocol", "v2")),
        ("send-proxy", ("--proxy-protocol", "v1")),
        # Backends that are themselves two worker processes each.
        ("send-proxy-v2", ("--proxy-protocol", "auto", "--workers", "2")),
    ],
)
def test_behind_haproxy(send_proxy: str, options: tuple[str, ...], tmp_path: Path) -> None:
    port = free_port()
    with ExitStack() as stack:
        backends = [stack.enter_context(server_process(*options, "-v")) for _ in range(2)]
        config = HAPROXY_CONFIG.format(
            port=port,
            first=backends[0].port,
            second=backends[1].port,
            send_proxy=send_proxy,
        )
        client_addresses = stack.enter_context(haproxy(config, port, tmp_path))  # the probe
        sessions: set[str] = set()
        for session in range(30):
            with greeted_line_client(port) as sock:
                sessions.add(format_address(sock.getsockname()))
                messages = [f"session {session} message {n}".encode() for n in range(20)]
                sock.sendall(b"".join(m + b"\n" for m in messages))  # pipelined
                expected = b"".join(m + REPLY_SUFFIX + b"\n" for m in messages)
                assert recv_exactly(sock, len(expected)) == expected
                sock.sendall(b"q\n")
                assert sock.recv(10) == b""
        # Stopped first: the whole log is read once the process has exited.
        for backend in backends:
            assert backend.stop() == 0
        seen = [logged_clients(backend) for backend in backends]
    # Round-robin: both backends served, in turns (the probe may have made
    # one more: it closes at once, so HAProxy may never pass it on).
    assert abs(len(seen[0]) - len(seen[1])) <= 2 and min(map(len, seen)) >= 15, seen
    # Each backend logged the real clients: the ports our sockets had, not
    # the ones HAProxy connected from.
    assert sessions <= seen[0] | seen[1] <= sessions | client_addresses
    assert len(sessions) == 30


def test_tls_through_haproxy(tmp_path: Path, tls_ca: trustme.CA) -> None:
    """TCP mode passes TLS through: the PROXY header, then TLS to trioecho."""
    certificate = tls_ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    client_context = ssl.create_default_context()
    tls_ca.configure_trust(client_context)
    port = free_port()
    tls_options = ("--tls-cert", str(cert_file), "--tls-key", str(key_file))
    with ExitStack() as stack:
        backends = [
            stack.enter_context(server_process("--proxy-protocol", "v2", "-v", *tls_options))
            for _ in range(2)
        ]
        config = HAPROXY_CONFIG.format(
            port=port, first=backends[0].port, second=backends[1].port, send_proxy="send-proxy-v2"
        )
        probes = stack.enter_context(haproxy(config, port, tmp_path))
        clients = set()
        for session in range(4):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            with client_context.wrap_socket(raw, server_hostname="localhost") as sock:
                clients.add(format_address(sock.getsockname()))
                assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
                sock.sendall(b"secret %d\n" % session)
                expected = b"secret %d" % session + REPLY_SUFFIX + b"\n"
                assert recv_exactly(sock, len(expected)) == expected
        # Stopped first: the whole log is read once the process has exited.
        for backend in backends:
            assert backend.stop() == 0
        seen = [logged_clients(backend) for backend in backends]
    # The probe closed during the TLS handshake, so it may not be logged as connected.
    assert all(seen) and clients <= seen[0] | seen[1] <= clients | probes, (seen, clients)
