"""Signals and listening options on real server processes: SIGHUP never
kills (one process re-reads its TLS certificate), ``--backlog`` reaches the
kernel, ``--log-level`` sets what is logged."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
from pathlib import Path

import trustme
from support.serverproc import greeted_line_client, recv_exactly, server_process

from trioecho.services.echo import GREETING, REPLY_SUFFIX


def ask(sock: socket.socket, message: bytes) -> bytes:
    sock.sendall(message + b"\n")
    return recv_exactly(sock, len(message) + len(REPLY_SUFFIX) + 1)


def test_sighup_does_not_stop_one_process_and_its_clients_are_still_answered() -> None:
    with server_process() as server:
        canary = greeted_line_client(server.port)
        assert ask(canary, b"before") == b"before" + REPLY_SUFFIX + b"\n"
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("SIGHUP: nothing to reload (no TLS certificate); still serving")
        assert server.process.poll() is None
        assert ask(canary, b"after") == b"after" + REPLY_SUFFIX + b"\n"
        newcomer = greeted_line_client(server.port)
        assert ask(newcomer, b"new") == b"new" + REPLY_SUFFIX + b"\n"
        canary.close()
        newcomer.close()
        assert server.stop(signal.SIGTERM) == 0


def _write_cert(ca: trustme.CA, directory: Path) -> tuple[str, str]:
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = directory / "cert.pem", directory / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def _tls_client(port: int, ca: trustme.CA) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1"
    )
    assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
    return sock


def test_sighup_reloads_the_tls_certificate_for_new_connections(tmp_path: Path) -> None:
    old_ca, new_ca = trustme.CA(), trustme.CA()
    cert, key = _write_cert(old_ca, tmp_path)
    with server_process("--tls-cert", cert, "--tls-key", key) as server:
        before = _tls_client(server.port, old_ca)
        _write_cert(new_ca, tmp_path)  # the files are replaced, as a renewal does
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(f"SIGHUP: reloaded the TLS certificate {cert}; still serving")
        after = _tls_client(server.port, new_ca)
        assert ask(after, b"renewed") == b"renewed" + REPLY_SUFFIX + b"\n"
        try:
            _tls_client(server.port, old_ca)
        except ssl.SSLCertVerificationError as exc:
            assert "certificate verify failed" in str(exc)
        else:
            raise AssertionError("the old certificate was still served")
        # The connection made before the reload keeps its session.
        assert ask(before, b"kept") == b"kept" + REPLY_SUFFIX + b"\n"
        (tmp_path / "key.pem").write_text("not a key")  # a broken renewal: the old one stays
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("SIGHUP: cannot reload the TLS certificate", "keeping the old one")
        again = _tls_client(server.port, new_ca)
        for sock in (before, after, again):
            sock.close()
        assert server.stop(signal.SIGTERM) == 0


def test_backlog_sets_the_listening_sockets_queue() -> None:
    with server_process("--backlog", "7") as server:
        listing = subprocess.run(
            ["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        # State, Recv-Q, Send-Q (the backlog of a listening socket), ...
        assert listing[:3] == ["LISTEN", "0", "7"], listing
        assert server.stop(signal.SIGTERM) == 0


def test_log_level_sets_what_is_logged() -> None:
    with server_process("--log-level", "warning") as server:
        greeted_line_client(server.port).close()
        assert server.stop(signal.SIGTERM) == 0
    assert [line for line in server.log if " INFO " in line] == []
    with server_process("--log-level", "debug") as server:
        server.wait_for_log(" DEBUG ", f"listening on 127.0.0.1:{server.port}")
        assert server.stop(signal.SIGTERM) == 0
    assert any("stopped after serving 0 connections" in line for line in server.log)
