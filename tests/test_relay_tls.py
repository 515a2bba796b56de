"""TLS on both sides of ``trioecho relay``, with the real programs: psql
against PostgreSQL (``ssl = on``) through the relay, checked from
PostgreSQL's own ``pg_stat_ssl``; mosquitto's clients through a relay that
ends their TLS; ``trioecho serve --tls-cert`` as a TLS upstream; and the
refusals, each with its log line.

The frames are checked on the plain text either way: the relay ends TLS on
each side and sees every message.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import trustme
from support.liveservers import LiveServer, mosquitto_server, postgresql_server
from support.serverproc import ServerProcess, recv_exactly, server_process

from trioecho.framing.presets import POSTGRESQL_STARTTLS
from trioecho.services.echo import GREETING, REPLY_SUFFIX


@dataclass(frozen=True)
class Pki:
    ca: str
    cert: str  # for 127.0.0.1 and localhost: the relay's and the upstreams'
    key: str
    cert_pem: bytes
    key_pem: bytes


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("relay-tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(directory / "key.pem"))
    return Pki(
        str(directory / "ca.pem"),
        str(directory / "cert.pem"),
        str(directory / "key.pem"),
        leaf.cert_chain_pems[0].bytes(),
        leaf.private_key_pem.bytes(),
    )


@pytest.fixture(scope="module")
def tls_postgres(pki: Pki) -> Iterator[LiveServer]:
    with postgresql_server((pki.cert_pem, pki.key_pem)) as server:
        yield server


@pytest.fixture(scope="module")
def plain_postgres() -> Iterator[LiveServer]:
    with postgresql_server() as server:
        yield server


@contextmanager
def relay(upstream: int, *options: str) -> Iterator[ServerProcess]:
    """``trioecho relay`` to ``upstream`` on 127.0.0.1, closed at the end."""
    with server_process("--upstream", f"127.0.0.1:{upstream}", *options, command="relay") as server:
        yield server


def psql(port: int, sslmode: str, pki: Pki, query: str) -> subprocess.CompletedProcess[bytes]:
    dsn = f"host=127.0.0.1 port={port} user=postgres gssencmode=disable sslmode={sslmode}"
    dsn += f" sslrootcert={pki.ca}"
    return subprocess.run(
        ["psql", dsn, "-X", "-A", "-t", "-c", query], capture_output=True, timeout=60, check=False
    )


# What PostgreSQL says of the relay's upstream connection.
UPSTREAM_SSL = "SELECT ssl, version IS NOT NULL FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.mark.parametrize(
    ("client_side", "upstream_side", "seen_by_postgres"),
    [
        (True, False, b"f|f\n"),  # psql verify-full to the relay, clear to PostgreSQL
        (False, True, b"t|t\n"),  # psql in clear, the relay verify-full to PostgreSQL
        (True, True, b"t|t\n"),  # both
    ],
    ids=["client-side", "upstream-side", "both"],
)
def test_postgresql_tls_on_either_side_of_the_relay(
    client_side: bool,
    upstream_side: bool,
    seen_by_postgres: bytes,
    pki: Pki,
    tls_postgres: LiveServer,
) -> None:
    options = ["--preset", "postgresql"]
    if client_side:
        options += ["--tls-cert", pki.cert, "--tls-key", pki.key]
    if upstream_side:
        options += ["--upstream-tls", "verify-full", "--upstream-tls-ca", pki.ca]
    with relay(tls_postgres.port, *options) as server:
        sslmode = "verify-full" if client_side else "disable"
        done = psql(server.port, sslmode, pki, UPSTREAM_SSL)
        assert (done.returncode, done.stdout, done.stderr) == (0, seen_by_postgres, b"")
        big = psql(server.port, sslmode, pki, "SELECT length(repeat('x', 300000))")
        assert (big.returncode, big.stdout) == (0, b"300000\n"), big.stderr
        assert server.stop() == 0


def test_a_client_that_does_not_ask_for_tls_is_served_in_clear(
    pki: Pki, plain_postgres: LiveServer
) -> None:
    """With a certificate the relay answers an SSLRequest with S; a client
    that sends its startup packet at once is served in clear, as PostgreSQL
    with ``ssl = on`` serves it."""
    options = ("--preset", "postgresql", "--tls-cert", pki.cert, "--tls-key", pki.key)
    with relay(plain_postgres.port, *options) as server:
        done = psql(server.port, "disable", pki, "SELECT 6 * 7")
        assert (done.returncode, done.stdout) == (0, b"42\n"), done.stderr
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(POSTGRESQL_STARTTLS.request)
            assert sock.recv(1) == b"S"
        assert server.stop() == 0


def test_an_upstream_that_refuses_tls_ends_that_pair_only(
    pki: Pki, plain_postgres: LiveServer
) -> None:
    options = ("--preset", "postgresql", "--upstream-tls", "require")
    with relay(plain_postgres.port, *options) as server:
        done = psql(server.port, "disable", pki, "SELECT 1")
        assert done.returncode == 2
        assert b"server closed the connection unexpectedly" in done.stderr, done.stderr
        server.wait_for_log(
            "closing: TLS with the upstream", "the upstream does not support TLS: "
            "it answered b'N' to the SSLRequest"
        )  # fmt: skip
        assert server.stop() == 0


def startup_packet() -> bytes:
    body = (196608).to_bytes(4, "big") + b"user\0postgres\0database\0postgres\0\0"
    return (4 + len(body)).to_bytes(4, "big") + body


def direct_tls(port: int, pki: Pki, alpn: list[str] | None) -> bytes:
    """A PostgreSQL 17 client's direct TLS (``sslnegotiation=direct``): a
    ClientHello first, with ``alpn``; then the startup packet.  Returns the
    first byte of the server's answer (``R``: authentication), or b"" if
    the relay closed."""
    context = ssl.create_default_context(cafile=pki.ca)
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(startup_packet())
            return recv_exactly(sock, 1)
    except (ssl.SSLError, ConnectionError):
        return b""


def test_direct_tls_must_name_postgresql_in_alpn(pki: Pki, plain_postgres: LiveServer) -> None:
    """PostgreSQL 17's direct TLS, by a Python client (this machine's libpq
    is older: ``psql --version``): with ALPN ``postgresql`` served, without it
    refused with a log line."""
    options = ("--preset", "postgresql", "--tls-cert", pki.cert, "--tls-key", pki.key)
    with relay(plain_postgres.port, *options, "--log-level", "info") as server:
        assert direct_tls(server.port, pki, ["postgresql"]) == b"R"  # AuthenticationOk
        assert direct_tls(server.port, pki, None) == b""
        server.wait_for_log("direct TLS must name the ALPN protocol 'postgresql', not None")
        assert server.stop() == 0


def test_psql_direct_tls_where_libpq_has_it(pki: Pki, plain_postgres: LiveServer) -> None:
    version = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.split()[2].split(".")[0])
    if major < 17:
        pytest.skip(f"libpq {major} has no sslnegotiation=direct (PostgreSQL 17's)")
    options = ("--preset", "postgresql", "--tls-cert", pki.cert, "--tls-key", pki.key)
    with relay(plain_postgres.port, *options) as server:
        done = psql(server.port, "verify-full sslnegotiation=direct", pki, "SELECT 1")
        assert (done.returncode, done.stdout) == (0, b"1\n"), done.stderr
        assert server.stop() == 0


def test_a_line_service_through_tls_on_both_sides(pki: Pki) -> None:
    """``trioecho serve --tls-cert`` as the upstream, the relay ending the
    clients' TLS and starting its own: every byte checked on the way."""
    upstream_options = ("--tls-cert", pki.cert, "--tls-key", pki.key)
    with server_process(*upstream_options) as upstream:
        options = ["--framing", "line", "--tls-cert", pki.cert, "--tls-key", pki.key]
        options += ["--upstream-tls", "verify-full", "--upstream-tls-ca", pki.ca]
        with relay(upstream.port, *options) as server:
            context = ssl.create_default_context(cafile=pki.ca)
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
                sock.sendall(b"through two TLS layers\nq\n")
                reply = b"through two TLS layers" + REPLY_SUFFIX + b"\n"
                assert recv_exactly(sock, len(reply)) == reply
            assert server.stop() == 0
        # The upstream's certificate names 127.0.0.1 and localhost, not this:
        wrong_name = [*options, "--upstream-tls-server-name", "db.example"]
        with relay(upstream.port, *wrong_name) as server:
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                assert sock.recv(100) == b""
            server.wait_for_log("closing: TLS with the upstream", "Hostname mismatch")
            assert server.stop() == 0


def test_mosquitto_clients_through_a_relay_that_ends_their_tls(pki: Pki) -> None:
    """mosquitto_pub publishes a retained message and mosquitto_sub receives
    it, both with ``--cafile`` through a relay that ends their TLS, in front
    of a broker that speaks plain MQTT."""
    with mosquitto_server() as broker:
        options = ("--preset", "mqtt", "--tls-cert", pki.cert, "--tls-key", pki.key)
        with relay(broker.port, *options) as server:
            common = ["-h", "127.0.0.1", "-p", str(server.port), "--cafile", pki.ca]
            common += ["-t", "trioecho/tls", "-q", "1"]
            published = subprocess.run(
                ["mosquitto_pub", *common, "-r", "-m", "through TLS 好"],
                capture_output=True,
                timeout=30,
            )
            assert published.returncode == 0, published.stderr
            received = subprocess.run(
                ["mosquitto_sub", *common, "-C", "1", "-W", "20"],
                capture_output=True,
                timeout=30,
            )
            assert (received.returncode, received.stdout) == (0, "through TLS 好\n".encode())
            assert server.stop() == 0
