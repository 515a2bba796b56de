"""Defects found by trying trioecho as a hostile peer and as an operator
would, each against a real server process (issue: nothing lost, nothing
stuck): forged log lines, telnet line endings (and a ``\\r`` before any
delimiter), empty error reasons, running out of file descriptors."""

from __future__ import annotations

import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import time

from support import proxyheaders
from support.serverproc import Canary, connect, recv_exactly, server_process

from trioecho.logtext import escape_for_log, format_address
from trioecho.services.echo import GREETING, REPLY_SUFFIX


def test_peer_text_cannot_forge_log_lines() -> None:
    forged = "/tmp/x\n2026-01-01 00:00:00,000 ERROR trioecho: forged"
    with server_process("--proxy-protocol", "v2", "-v") as server:
        with connect(server.port) as sock:
            sock.sendall(proxyheaders.v2(forged, "/run/trioecho.sock"))
            assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
        line = server.wait_for_log("connected")
        assert "/tmp/x\\n2026-01-01" in line
        assert server.stop() == 0
    assert not [entry for entry in server.log if entry.startswith("2026-01-01")]
    assert escape_for_log("a\tb\x1b[31m") == "a\\tb\\x1b[31m"
    assert format_address(("::1", 80)) == "[::1]:80"


def test_telnet_line_endings_are_stripped_by_default() -> None:
    with server_process() as server:
        with connect(server.port) as sock:
            assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
            sock.sendall(b"hello\r\nworld\n")
            expected = b"hello" + REPLY_SUFFIX + b"\nworld" + REPLY_SUFFIX + b"\n"
            assert recv_exactly(sock, len(expected)) == expected
            sock.sendall(b"q\r\n")  # ends the session, as q\n does
            assert sock.recv(100) == b""
        assert server.stop() == 0
    with server_process("--keep-cr") as server:
        with connect(server.port) as sock:
            assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
            sock.sendall(b"hello\r\n")
            expected = b"hello\r" + REPLY_SUFFIX + b"\n"
            assert recv_exactly(sock, len(expected)) == expected
        assert server.stop() == 0


def test_strip_cr_strips_before_any_delimiter_as_its_help_says() -> None:
    for option, message in [("--strip-cr", b"ab"), ("--keep-cr", b"ab\r")]:
        with server_process("--delimiter", "\\0", option) as server:
            with connect(server.port) as sock:
                assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\0"
                sock.sendall(bytes([0x61, 0x62, 0x0D, 0x00]))
                expected = message + REPLY_SUFFIX + b"\0"
                assert recv_exactly(sock, len(expected)) == expected
            assert server.stop() == 0
    result = subprocess.run(
        [sys.executable, "-m", "trioecho", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "COLUMNS": "200"},  # each option's help on one line
    )
    helps = {
        line.split()[0]: line.split(None, 1)[1]
        for line in result.stdout.splitlines()
        if line.startswith(("  --strip-cr", "  --keep-cr"))
    }
    assert helps == {
        "--strip-cr": "line: strip one \\r just before the delimiter that ends a line, whichever "
        "delimiter it is (telnet and Windows end lines with \\r\\n; the default)",
        "--keep-cr": "line: keep a \\r before the delimiter as part of the message",
    }


def test_tls_errors_have_a_reason(tls_files: dict[str, str]) -> None:
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
