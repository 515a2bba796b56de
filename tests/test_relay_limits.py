"""The relay against hostile peers on both sides, as a real process: upstreams
that never answer, never read, flood, reset or half-close, clients that never
read or go away.  After each case the relay's sockets (from ``/proc``) and its
``--max-connections`` slots are back at baseline within ``--send-timeout`` (or
``--fin-timeout``) + 1 s, and each ending is one log line, never a traceback.  And PostgreSQL's
own answer to a second SSLRequest, side by side with the real server's."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from support.liveservers import LiveServer, postgresql_server
from support.relaypeers import (
    GSSENC_REQUEST,
    SSL_REQUEST,
    HostileUpstream,
    dead_port,
    error_fields,
    floods,
    half_closes,
    never_answers,
    never_reads,
    no_tracebacks,
    resets,
    sockets_of,
    startup_message,
    wait_for_sockets,
)
from support.serverproc import ServerProcess, recv_exactly

SEND_TIMEOUT = 1.0
FIN_TIMEOUT = 1.0
SLOTS = 20


@contextmanager
def relay_to(upstream: HostileUpstream, *options: str) -> Iterator[ServerProcess]:
    relay = ServerProcess(
        "--upstream",
        f"127.0.0.1:{upstream.port}",
        "--send-timeout",
        str(SEND_TIMEOUT),
        "--fin-timeout",
        str(FIN_TIMEOUT),
        "--max-connections",
        str(SLOTS),
        "--log-level",
        "info",
        *options,
        command="relay",
    )
    try:
        yield relay
    finally:
        relay.close()
        upstream.close()


def back_at_baseline(
    relay: ServerProcess, baseline: int, within: float = SEND_TIMEOUT + 1
) -> float:
    """Seconds until the relay holds ``baseline`` sockets again (at most ``within``)."""
    return wait_for_sockets(relay.pid, baseline, within)


def every_slot_serves(relay: ServerProcess) -> None:
    """``--max-connections`` clients at once each get the relay's own answer
    to an SSLRequest: no slot is held by a connection that is gone."""
    clients = [socket.create_connection(("127.0.0.1", relay.port), timeout=5) for _ in range(SLOTS)]
    try:
        for sock in clients:
            sock.sendall(SSL_REQUEST)
        for sock in clients:
            assert sock.recv(1) == b"N"
    finally:
        for sock in clients:
            sock.close()


def test_clients_gone_while_the_upstream_never_answers_free_everything() -> None:
    """PostgreSQL has no half-close: each client's end frees its upstream
    connection and its slot at once (it took --send-timeout before)."""
    upstream = HostileUpstream(never_answers)
    with relay_to(upstream, "--preset", "postgresql") as relay:
        baseline = sockets_of(relay.pid)
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", relay.port)) as sock:
                sock.sendall(SSL_REQUEST)
                assert sock.recv(1) == b"N"
                sock.sendall(startup_message())
        waited = back_at_baseline(relay, baseline, within=0.5)
        print(f"30 clients gone, upstream silent: back at baseline after {waited:.2f} s")
        every_slot_serves(relay)
        back_at_baseline(relay, baseline, within=0.5)
        relay.wait_for_log("closing: the client side ended; no half-close: the upstream side")
        no_tracebacks(relay)


@pytest.mark.parametrize(
    ("behave", "logged"),
    [
        (never_reads, "peer did not read its replies"),
        (resets, "connection broken while"),
    ],
)
def test_an_upstream_that_never_reads_or_resets(
    behave: Callable[[socket.socket], None], logged: str
) -> None:
    upstream = HostileUpstream(behave)
    with relay_to(upstream, "--framing", "len") as relay:
        baseline = sockets_of(relay.pid)
        sock = socket.create_connection(("127.0.0.1", relay.port))
        sock.settimeout(SEND_TIMEOUT + 5)
        frame = struct.pack(">I", 1 << 20) + b"x" * (1 << 20)
        try:
            for _ in range(200):  # 200 MiB: far more than the buffers hold
                sock.sendall(frame)
        except OSError:
            pass  # closed by the relay: reset, or a send that timed out
        sock.close()
        back_at_baseline(relay, baseline)
        line = relay.wait_for_log(
            f"closing: the upstream side (127.0.0.1:{upstream.port}): {logged}"
        )
        assert "WARNING" in line or "INFO" in line
        no_tracebacks(relay)


def test_an_upstream_flooding_a_client_that_never_reads() -> None:
    upstream = HostileUpstream(floods)
    with relay_to(upstream, "--framing", "len") as relay:
        baseline = sockets_of(relay.pid)
        sock = socket.create_connection(("127.0.0.1", relay.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        relay.wait_for_log("closing: the client side: peer did not read its replies")
        sock.close()
        back_at_baseline(relay, baseline)
        rss_kib = relay.rss_kib()
        assert rss_kib < 200 * 1024
        no_tracebacks(relay)


def test_an_upstream_that_half_closes() -> None:
    upstream = HostileUpstream(half_closes)
    with relay_to(upstream, "--framing", "len") as relay:
        baseline = sockets_of(relay.pid)
        with socket.create_connection(("127.0.0.1", relay.port)) as sock:
            sock.settimeout(5)
            assert sock.recv(10) == b""  # the upstream's end, passed on
            sock.sendall(struct.pack(">I", 2) + b"hi")  # the other way still goes
        back_at_baseline(relay, baseline)
        no_tracebacks(relay)


def test_a_client_that_half_closes_and_an_upstream_that_never_answers() -> None:
    upstream = HostileUpstream(never_answers)
    with relay_to(upstream, "--framing", "len") as relay:
        baseline = sockets_of(relay.pid)
        with socket.create_connection(("127.0.0.1", relay.port)) as sock:
            sock.sendall(struct.pack(">I", 2) + b"hi")
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(SEND_TIMEOUT + 5)
            started = time.monotonic()
            assert sock.recv(10) == b""  # closed: the upstream did not finish in time
            assert time.monotonic() - started < FIN_TIMEOUT + 1
        back_at_baseline(relay, baseline)
        relay.wait_for_log(
            f"closing: the upstream side (127.0.0.1:{upstream.port}): not finished: no bytes "
            "for 1 s after the client side ended"
        )
        no_tracebacks(relay)


def test_an_idle_pair_is_closed() -> None:
    upstream = HostileUpstream(never_answers)
    with relay_to(upstream, "--framing", "len", "--idle-timeout", "0.5") as relay:
        baseline = sockets_of(relay.pid)
        with socket.create_connection(("127.0.0.1", relay.port)) as sock:
            sock.settimeout(5)
            sock.sendall(struct.pack(">I", 2) + b"hi")
            assert sock.recv(10) == b""
        back_at_baseline(relay, baseline)
        relay.wait_for_log("closing: the client side: no bytes either way for 0.5 s")
        no_tracebacks(relay)


def test_a_refused_upstream_is_one_line_naming_the_client() -> None:
    upstream = HostileUpstream(never_answers)
    upstream.port = dead_port()  # the relay dials a port nothing listens on
    with relay_to(upstream, "--framing", "len") as relay:
        with socket.create_connection(("127.0.0.1", relay.port)) as sock:
            port = sock.getsockname()[1]
            assert sock.recv(10) == b""
        line = relay.wait_for_log("cannot connect to the upstream")
        assert line.endswith(
            f"WARNING trioecho.relay: 127.0.0.1:{port}: closing: cannot connect to the upstream "
            f"127.0.0.1:{upstream.port}: Connection refused"
        )
        no_tracebacks(relay)


# -- PostgreSQL's own answer to a second SSLRequest, side by side -------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[LiveServer]:
    with postgresql_server() as server:
        yield server


def second_request(port: int, first: bytes, second: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(first)
        assert sock.recv(1) == b"N"
        sock.sendall(second)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


def test_a_second_ssl_request_is_refused_as_postgresql_does(postgres: LiveServer) -> None:
    """Side by side: the real server's answer to SSLRequest, N, SSLRequest, and the relay's."""
    real = error_fields(second_request(postgres.port, SSL_REQUEST, SSL_REQUEST))
    relay = ServerProcess(
        "--upstream", f"127.0.0.1:{postgres.port}", "--preset", "postgresql", command="relay"
    )
    try:
        ours = error_fields(second_request(relay.port, SSL_REQUEST, SSL_REQUEST))
        assert {key: ours[key] for key in "SVC"} == {key: real[key] for key in "SVC"}
        assert (ours["S"], ours["C"]) == ("FATAL", "0A000")
        message = "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0"
        assert ours["M"] == message
        assert real["M"].startswith("unsupported frontend protocol 1234.5679: server supports 3.0")
        line = relay.wait_for_log(
            "closing: the client side: a second SSLRequest: unsupported frontend protocol"
        )
        assert "WARNING" in line
        no_tracebacks(relay)
    finally:
        relay.close()


def test_one_of_each_encryption_request_is_answered_and_a_second_gss_refused(
    postgres: LiveServer,
) -> None:
    """libpq asks for GSSAPI, then TLS: the relay answers N to one of each (as
    PostgreSQL does, which takes the same path for both: ProcessStartupPacket),
    then a second GSSENCRequest gets the same FATAL 0A000.  (This server is
    built with GSSAPI and answers G, so only the relay is compared here.)"""
    relay = ServerProcess(
        "--upstream", f"127.0.0.1:{postgres.port}", "--preset", "postgresql", command="relay"
    )
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
            sock.sendall(GSSENC_REQUEST)
            assert recv_exactly(sock, 1) == b"N"
            sock.sendall(SSL_REQUEST)
            assert recv_exactly(sock, 1) == b"N"
            sock.sendall(startup_message())
            assert sock.recv(1) == b"R"  # the real server's authentication request
        ours = error_fields(second_request(relay.port, GSSENC_REQUEST, GSSENC_REQUEST))
        assert (ours["S"], ours["V"], ours["C"]) == ("FATAL", "FATAL", "0A000")
        assert ours["M"] == "unsupported frontend protocol 1234.5680: server supports 3.0 to 3.0"
        relay.wait_for_log(
            "closing: the client side: a second GSSENCRequest: unsupported frontend protocol"
        )
        no_tracebacks(relay)
    finally:
        relay.close()


def test_a_row_over_the_limit_gets_an_error_response_that_says_why(postgres: LiveServer) -> None:
    relay = ServerProcess(
        "--upstream",
        f"127.0.0.1:{postgres.port}",
        "--preset",
        "postgresql",
        "--max-frame",
        "100000",
        command="relay",
    )
    try:
        dsn = f"host=127.0.0.1 port={relay.port} user=postgres"
        fits = subprocess.run(
            ["psql", dsn, "-X", "-A", "-t", "-c", "SELECT length(repeat('x', 90000))"],
            capture_output=True,
            timeout=60,
        )
        assert (fits.returncode, fits.stdout) == (0, b"90000\n")
        over = subprocess.run(
            ["psql", dsn, "-X", "-A", "-t", "-c", "SELECT repeat('x', 200000)"],
            capture_output=True,
            timeout=60,
        )
        assert over.returncode == 2, over
        assert (
            b"FATAL:  the relay refused a message from the server: frame header announces 200"
            in over.stderr
        ), over.stderr
        query = "SELECT '" + "y" * 150_000 + "'"
        asked = subprocess.run(
            ["psql", dsn, "-X", "-A", "-t"],
            input=query.encode() + b";\n",
            capture_output=True,
            timeout=60,
        )
        assert (
            b"FATAL:  the relay refused a message from the client: frame header announces"
            in asked.stderr
        )
        line = relay.wait_for_log(
            f"closing: the upstream side (127.0.0.1:{postgres.port}): FrameTooLongError"
        )
        assert "WARNING" in line
        no_tracebacks(relay)
    finally:
        relay.close()


def test_the_refusal_is_postgresqls_error_response() -> None:
    from trioecho.errors import FrameTooLongError, MalformedFrameError
    from trioecho.framing.presets import postgres_refusal

    error = FrameTooLongError("a frame of 9 bytes is over 8", limit=8, length=9)
    too_long = postgres_refusal("down", error)
    assert error_fields(too_long) == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "54000",
        "M": "the relay refused a message from the server: a frame of 9 bytes is over 8",
    }
    malformed = postgres_refusal("up", MalformedFrameError("bad"))
    assert error_fields(malformed)["C"] == "08P01"
    assert error_fields(malformed)["M"] == "the relay refused a message from the client: bad"


def access_records(relay: ServerProcess, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while True:
        records = [
            json.loads(line)
            for line in list(relay.log)
            if line.startswith("{") and '"trioecho.access"' in line
        ]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.02)


def test_the_relays_access_records_name_the_reason() -> None:
    json_log = ("--access-log", "--log-format", "json")
    with relay_to(HostileUpstream(resets), "--framing", "len", *json_log) as relay:
        with socket.create_connection(("127.0.0.1", relay.port)) as sock:
            sock.sendall(struct.pack(">I", 2) + b"hi")
            sock.settimeout(5)
            assert sock.recv(10) == b""
        (record,) = access_records(relay, 1)
        assert record["close_reason"] == "reset"
        assert record["bytes_received"] == 6
        no_tracebacks(relay)
    unreachable = ServerProcess(
        "--upstream", f"127.0.0.1:{dead_port()}", "--framing", "len", *json_log, command="relay"
    )
    try:
        with socket.create_connection(("127.0.0.1", unreachable.port)) as sock:
            sock.settimeout(5)
            assert sock.recv(10) == b""
        (record,) = access_records(unreachable, 1)
        assert record["close_reason"] == "upstream_unreachable"
        no_tracebacks(unreachable)
    finally:
        unreachable.close()
