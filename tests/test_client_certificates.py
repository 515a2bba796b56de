"""Mutual TLS on real processes: ``serve --tls-verify-client`` with
``--tls-client-ca``, ``client --tls-cert/--tls-key``, and OpenSSL's own
``openssl s_client`` as the client with each kind of certificate.

A client without a certificate (under ``required``), with one from another
CA, or with an expired one is refused at the handshake, with one INFO line
naming the peer and OpenSSL's reason, and an access record whose close
reason is ``tls``; its slot is free at once (the server allows 2
connections, and a canary holds one throughout); a good client is served,
and its certificate's subject is in its access record.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from support.serverproc import ServerProcess, recv_exactly

from trioecho.services.echo import GREETING, REPLY_SUFFIX

GREETED = GREETING + b"\n"
SESSION = GREETED + b"hello" + REPLY_SUFFIX + b"\n"
# alice's subject as the access record writes it (RFC 4514; trustme adds the OU).
ALICE = re.compile(r"CN=alice,OU=Testing cert #\S+,O=Example")


@dataclass(frozen=True)
class Pki:
    """PEM files: our CA, the server's certificate, client certificates."""

    ca: str
    server_cert: str
    server_key: str
    alice: tuple[str, str]  # a good client: (certificate, key)
    expired: tuple[str, str]  # from our CA, expired yesterday
    stranger: tuple[str, str]  # from another CA
    other_ca: str


def _write(leaf: trustme.LeafCert, directory: Path, name: str) -> tuple[str, str]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("mtls")
    ours, other = trustme.CA(), trustme.CA()
    ours.cert_pem.write_to_path(str(directory / "ca.pem"))
    other.cert_pem.write_to_path(str(directory / "other-ca.pem"))
    server_cert, server_key = _write(ours.issue_cert("127.0.0.1"), directory, "server")
    now = datetime.datetime.now(datetime.timezone.utc)
    return Pki(
        ca=str(directory / "ca.pem"),
        server_cert=server_cert,
        server_key=server_key,
        alice=_write(
            ours.issue_cert("alice@example.com", common_name="alice", organization_name="Example"),
            directory,
            "alice",
        ),
        expired=_write(
            ours.issue_cert(
                "old@example.com",
                common_name="old",
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            ),
            directory,
            "expired",
        ),
        stranger=_write(other.issue_cert("eve@example.com", common_name="eve"), directory, "eve"),
        other_ca=str(directory / "other-ca.pem"),
    )


def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("openssl is not installed (Debian's openssl package)")
    return path


def s_client(port: int, pki: Pki, client: tuple[str, str] | None) -> tuple[bytes, str, float]:
    """``openssl s_client`` to the server, trusting our CA, presenting
    ``client`` (certificate, key) or nothing; it sends ``hello`` then ``q``.
    Returns what the server sent, s_client's diagnostics, and the seconds
    it took."""
    command = [openssl(), "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", pki.ca]
    command += ["-verify_return_error", "-quiet"]
    if client is not None:
        command += ["-cert", client[0], "-key", client[1]]
    started = time.monotonic()
    done = subprocess.run(command, input=b"hello\nq\n", capture_output=True, timeout=30)
    return done.stdout, done.stderr.decode(errors="replace"), time.monotonic() - started


def python_client(port: int, pki: Pki, client: tuple[str, str] | None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=pki.ca)
    if client is not None:
        context.load_cert_chain(*client)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    assert recv_exactly(sock, len(GREETED)) == GREETED
    return sock


def access_records(server: ServerProcess, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line) for line in list(server.log) if line.startswith("{")]
        access = [record for record in records if record["logger"] == "trioecho.access"]
        if len(access) >= count or time.monotonic() > deadline:
            return access
        time.sleep(0.02)


def mtls_server(pki: Pki, verify: str, *options: str) -> ServerProcess:
    return ServerProcess(
        "--tls-cert", pki.server_cert, "--tls-key", pki.server_key,
        "--tls-client-ca", pki.ca, "--tls-verify-client", verify,
        "--max-connections", "2", "--access-log", "--log-format", "json", *options,
    )  # fmt: skip


def test_required_refuses_clients_without_a_good_certificate_and_serves_the_rest(
    pki: Pki,
) -> None:
    server = mtls_server(pki, "required")
    try:
        canary = python_client(server.port, pki, pki.alice)
        cases = [
            (None, "certificate required", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
            (pki.stranger, "unknown ca", "certificate verify failed: unable to get local issuer"),
            (pki.expired, "certificate expired", "certificate verify failed: certificate has"),
        ]
        for client, alert, reason in cases:
            out, diagnostics, took = s_client(server.port, pki, client)
            assert GREETING not in out, (client, out)
            assert alert in diagnostics, (client, diagnostics)
            assert took < 2, (client, took)
            line = server.wait_for_log("closing: TLS handshake failed", reason)
            assert " INFO " in line or '"level": "INFO"' in line, line
            # The slot is free at once: the one slot the canary leaves serves the next.
            assert s_client(server.port, pki, pki.alice)[0] == SESSION
            canary.sendall(b"still here\n")
            assert recv_exactly(canary, 14) == b"still here" + REPLY_SUFFIX + b"\n"
        canary.sendall(b"q\n")
        canary.close()
        records = access_records(server, 7)
        assert [record["close_reason"] for record in records].count("tls") == 3
        served = [record for record in records if record["close_reason"] == "stop_message"]
        assert len(served) == 4
        assert all(ALICE.fullmatch(str(record["tls_client"])) for record in served), served
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_optional_serves_a_client_without_a_certificate_and_checks_one_given(pki: Pki) -> None:
    server = mtls_server(pki, "optional")
    try:
        assert s_client(server.port, pki, None)[0] == SESSION
        assert s_client(server.port, pki, pki.alice)[0] == SESSION
        out, diagnostics, _ = s_client(server.port, pki, pki.stranger)
        assert GREETING not in out and "unknown ca" in diagnostics, diagnostics
        records = access_records(server, 3)
        assert [record["close_reason"] for record in records] == ["stop_message"] * 2 + ["tls"]
        assert records[0]["tls_client"] is None
        assert ALICE.fullmatch(str(records[1]["tls_client"])), records[1]
        assert records[2]["tls_client"] is None
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_sighup_reads_the_client_ca_again(pki: Pki, tmp_path: Path) -> None:
    client_ca = tmp_path / "clients.pem"
    shutil.copyfile(pki.ca, client_ca)
    server = ServerProcess(
        "--tls-cert", pki.server_cert, "--tls-key", pki.server_key,
        "--tls-client-ca", str(client_ca), "--tls-verify-client", "required",
    )  # fmt: skip
    try:
        assert s_client(server.port, pki, pki.alice)[0] == SESSION
        assert GREETING not in s_client(server.port, pki, pki.stranger)[0]
        shutil.copyfile(pki.other_ca, client_ca)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("SIGHUP: reloaded the TLS certificate")
        assert s_client(server.port, pki, pki.stranger)[0] == SESSION
        assert GREETING not in s_client(server.port, pki, pki.alice)[0]
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_the_client_command_presents_its_certificate(pki: Pki) -> None:
    server = mtls_server(pki, "required")
    try:
        command = [sys.executable, "-m", "trioecho", "client", "--port", str(server.port)]
        command += ["--tls-ca", pki.ca]
        with_cert = subprocess.run(
            [*command, "--tls-cert", pki.alice[0], "--tls-key", pki.alice[1]],
            input=b"hello\nq\n",
            capture_output=True,
            timeout=30,
        )
        assert (with_cert.returncode, with_cert.stdout) == (0, SESSION), with_cert.stderr
        without = subprocess.run(command, input=b"hello\nq\n", capture_output=True, timeout=30)
        assert without.returncode == 1
        assert GREETING not in without.stdout
        assert b"certificate required" in without.stderr, without.stderr
        assert b"Traceback" not in without.stderr
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()
