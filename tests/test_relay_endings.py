"""How a relay's pairs end, on real ``trioecho relay`` processes with odd and
hostile peers on both sides, and the live PostgreSQL where it matters.

With ``--preset postgresql`` a side's end closes both connections at once
(PostgreSQL has no half-close; pgbouncer does the same); generic relays pass
a half-close on and cut a side that moves no bytes for ``--fin-timeout``
after the other ended.  Every ending is one log line naming the client, the
side (the upstream with its address) and the reason.  The preset's
timeouts are pgbouncer's (none), and one given explicitly tells the client
why first, with an ErrorResponse; a protocol 2.0 startup gets PostgreSQL's
own old-style refusal, byte for byte."""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest
from support.liveservers import LiveServer, postgresql_server
from support.relaypeers import (
    SSL_REQUEST,
    HostileUpstream,
    error_fields,
    half_closes,
    never_answers,
    never_reads,
    no_tracebacks,
    sockets_of,
    startup_message,
    wait_for_sockets,
)
from support.serverproc import ServerProcess, recv_exactly

from trioecho import FramingConfig
from trioecho.cli.configs import relay_config_from_args
from trioecho.cli.options import build_parser, resolve_relay_timeouts
from trioecho.cli.serve import relay_from_args
from trioecho.errors import IdleTimeoutError, ProtocolRefusedError, SlowReaderError
from trioecho.framing.presets import postgres_refusal
from trioecho.server.server import LINGER_SECONDS
from trioecho.services.relay_config import DEFAULT_CONNECT_TIMEOUT

FIN_TIMEOUT = 2.0


@contextmanager
def relay_process(upstream_port: int, *options: str) -> Iterator[ServerProcess]:
    relay = ServerProcess(
        "--upstream", f"127.0.0.1:{upstream_port}", "--log-level", "info", *options, command="relay"
    )
    try:
        yield relay
    finally:
        relay.close()


@contextmanager
def hostile(behave: Callable[[socket.socket], None]) -> Iterator[HostileUpstream]:
    upstream = HostileUpstream(behave)
    try:
        yield upstream
    finally:
        upstream.close()


def wait_until(condition: Callable[[], bool], within: float = 5) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.01)


def relay_lines(relay: ServerProcess, client_port: int) -> list[str]:
    """The relay's log lines (``trioecho.relay``) about the client from ``client_port``."""
    return [
        line
        for line in list(relay.log)
        if " trioecho.relay: " in line and f"127.0.0.1:{client_port}: " in line
    ]


def one_line(relay: ServerProcess, client_port: int) -> str:
    """The one log line ending the client from ``client_port``'s pair."""
    wait_until(lambda: bool(relay_lines(relay, client_port)))
    time.sleep(0.1)  # a second line would be there by now
    (line,) = relay_lines(relay, client_port)
    return line


def upstream_side(upstream_port: int) -> str:
    return f"the upstream side (127.0.0.1:{upstream_port})"


# -- PostgreSQL: no half-close --------------------------------------------------


@pytest.mark.parametrize("ending", ["FIN", "reset"])
def test_postgresql_a_client_that_ends_frees_its_upstream_and_slot_at_once(ending: str) -> None:
    """The client goes away (a FIN, or a reset) while its upstream is
    silent: the upstream connection is closed and the slot freed at once,
    whatever --send-timeout and --fin-timeout say (before: --send-timeout,
    60 s by default)."""
    with (
        hostile(never_answers) as upstream,
        relay_process(
            upstream.port,
            "--preset",
            "postgresql",
            "--max-connections",
            "1",
            "--send-timeout",
            "30",
            "--fin-timeout",
            "30",
        ) as relay,
    ):
        baseline = sockets_of(relay.pid)
        sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        client_port = sock.getsockname()[1]
        sock.sendall(SSL_REQUEST)
        assert sock.recv(1) == b"N"
        sock.sendall(startup_message())
        wait_until(lambda: upstream.accepted == 1 and sockets_of(relay.pid) == baseline + 2)
        if ending == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        waited = wait_for_sockets(relay.pid, baseline, within=0.5)
        wait_until(lambda: upstream.ended == 1, within=0.5)  # its connection was closed
        print(f"client {ending}: both sockets freed after {waited:.3f} s")
        with socket.create_connection(("127.0.0.1", relay.port), timeout=2) as again:
            again.sendall(SSL_REQUEST)
            assert again.recv(1) == b"N"  # the one slot is free
        line = one_line(relay, client_port)
        if ending == "FIN":
            assert line.endswith(
                f" INFO trioecho.relay: 127.0.0.1:{client_port}: closing: the client side "
                f"ended; no half-close: {upstream_side(upstream.port)} closes too"
            ), line
        else:
            assert f" INFO trioecho.relay: 127.0.0.1:{client_port}: closing: the client side: " in (
                line
            )
            assert line.endswith("Connection reset by peer"), line
        no_tracebacks(relay)


def ends_after_one_message(sock: socket.socket) -> None:
    """A PostgreSQL server that says one FATAL ErrorResponse and closes."""
    sock.recv(65536)
    sock.sendall(b"E\x00\x00\x00\x0cSFATAL\x00\x00")
    sock.close()


def test_postgresql_an_upstream_that_ends_closes_its_client_after_its_last_bytes() -> None:
    with (
        hostile(ends_after_one_message) as upstream,
        relay_process(upstream.port, "--preset", "postgresql", "--fin-timeout", "30") as relay,
    ):
        baseline = sockets_of(relay.pid)
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
            client_port = sock.getsockname()[1]
            sock.sendall(startup_message())
            assert recv_exactly(sock, 13) == b"E\x00\x00\x00\x0cSFATAL\x00\x00"
            assert sock.recv(10) == b""
            # The relay's upstream socket is closed at once, though this
            # client still listens (it gets LINGER_SECONDS for its own end).
            wait_for_sockets(relay.pid, baseline + 1, within=0.5)
        wait_for_sockets(relay.pid, baseline, within=0.5)
        line = one_line(relay, client_port)
        assert line.endswith(
            f"127.0.0.1:{client_port}: closing: {upstream_side(upstream.port)} ended; "
            "no half-close: the client side closes too"
        ), line
        no_tracebacks(relay)


def answers_after_a_second(sock: socket.socket) -> None:
    """A PostgreSQL server slow to answer the startup: ReadyForQuery 1 s
    later, then the end once the relay has ended its input."""
    sock.recv(65536)
    time.sleep(1)
    sock.sendall(b"Z\x00\x00\x00\x05I")
    while sock.recv(65536):
        pass
    sock.close()


def test_postgresql_on_shutdown_the_upstream_still_finishes() -> None:
    """SIGTERM stops reading the client, which is not the client's end: the
    upstream is told (its input ends) and its answer still reaches the
    client within the grace period."""
    with (
        hostile(answers_after_a_second) as upstream,
        relay_process(upstream.port, "--preset", "postgresql") as relay,
        socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock,
    ):
        client_port = sock.getsockname()[1]
        sock.sendall(startup_message())
        wait_until(lambda: upstream.accepted == 1)
        relay.process.send_signal(signal.SIGTERM)
        assert recv_exactly(sock, 6) == b"Z\x00\x00\x00\x05I"
        assert sock.recv(10) == b""
        line = one_line(relay, client_port)
        assert line.endswith(
            f" INFO trioecho.relay: 127.0.0.1:{client_port}: closed: the client side stopped "
            f"(shutdown), then {upstream_side(upstream.port)}"
        ), line
        assert relay.wait() == 0
        no_tracebacks(relay)


# -- generic relays: half-closes and --fin-timeout ----------------------------------


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def answers_slowly_after_the_end(sock: socket.socket) -> None:
    """Read until the client's end, then six frames 0.4 s apart (2.4 s in
    all, longer than the fin timeout: bytes keep moving), then the end."""
    while sock.recv(65536):
        pass
    for index in range(6):
        time.sleep(0.4)
        sock.sendall(frame(b"part %d" % index))
    sock.shutdown(socket.SHUT_WR)


def read_to_the_end(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_half_close_is_passed_on_and_the_other_side_finishes() -> None:
    with (
        hostile(answers_slowly_after_the_end) as upstream,
        relay_process(
            upstream.port, "--framing", "len", "--fin-timeout", "1", "--send-timeout", "1"
        ) as relay,
    ):
        baseline = sockets_of(relay.pid)
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
            client_port = sock.getsockname()[1]
            sock.sendall(frame(b"the question"))
            sock.shutdown(socket.SHUT_WR)  # passed on: the upstream reads its end
            assert read_to_the_end(sock) == b"".join(frame(b"part %d" % i) for i in range(6))
        wait_for_sockets(relay.pid, baseline, within=1)
        line = one_line(relay, client_port)
        assert line.endswith(
            f" INFO trioecho.relay: 127.0.0.1:{client_port}: closed: the client side ended, "
            f"then {upstream_side(upstream.port)}"
        ), line
        no_tracebacks(relay)


def test_an_upstream_that_never_finishes_is_cut_at_the_fin_timeout() -> None:
    """The client half-closes; the upstream reads its end but never
    answers nor ends: both close --fin-timeout (2 s) later, ± 1 s, though
    --send-timeout is 30 s."""
    with (
        hostile(never_answers) as upstream,
        relay_process(
            upstream.port, "--framing", "len", "--fin-timeout", "2", "--send-timeout", "30"
        ) as relay,
    ):
        baseline = sockets_of(relay.pid)
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
            client_port = sock.getsockname()[1]
            sock.sendall(frame(b"hi"))
            sock.shutdown(socket.SHUT_WR)
            ended = time.monotonic()
            assert sock.recv(10) == b""
            waited = time.monotonic() - ended
        assert FIN_TIMEOUT - 0.1 < waited < FIN_TIMEOUT + 1, waited
        print(f"cut {waited:.2f} s after the other side's end (--fin-timeout 2)")
        wait_for_sockets(relay.pid, baseline, within=1)
        wait_until(lambda: upstream.ended == 1)
        line = one_line(relay, client_port)
        assert line.endswith(
            f" INFO trioecho.relay: 127.0.0.1:{client_port}: closing: "
            f"{upstream_side(upstream.port)}: not finished: no bytes for 2 s after the "
            "client side ended"
        ), line
        no_tracebacks(relay)


def test_a_client_that_never_finishes_is_cut_at_the_fin_timeout() -> None:
    """The upstream half-closes at once; the client hears the end and then
    neither sends nor ends: its upstream connection is closed --fin-timeout
    (2 s) later, ± 1 s, and its own once the lossless close has given it
    its 2 s to end (``LINGER_SECONDS``)."""
    with (
        hostile(half_closes) as upstream,
        relay_process(
            upstream.port, "--framing", "len", "--fin-timeout", "2", "--send-timeout", "30"
        ) as relay,
    ):
        baseline = sockets_of(relay.pid)
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
            client_port = sock.getsockname()[1]
            assert sock.recv(10) == b""  # the upstream's end, passed on
            ended = time.monotonic()
            wait_until(lambda: upstream.ended == 1, within=FIN_TIMEOUT + 1)
            waited = time.monotonic() - ended
            wait_for_sockets(relay.pid, baseline, within=LINGER_SECONDS + 1)
        assert FIN_TIMEOUT - 0.1 < waited < FIN_TIMEOUT + 1, waited
        print(f"cut {waited:.2f} s after the other side's end (--fin-timeout 2)")
        line = one_line(relay, client_port)
        assert line.endswith(
            f" INFO trioecho.relay: 127.0.0.1:{client_port}: closing: the client side: not "
            f"finished: no bytes for 2 s after the upstream side ended"
        ), line
        no_tracebacks(relay)


# -- the upstream's connect -------------------------------------------------------------


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose connects are never answered: its listener's queue (backlog
    0) is full with one connection it never accepts, so the kernel drops the
    SYNs of the next ones."""
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued.connect(listener.getsockname())
        yield listener.getsockname()[1]


def test_connect_timeout_closes_a_client_whose_upstream_does_not_answer() -> None:
    """``relay --connect-timeout`` (pgbouncer's server_connect_timeout): the
    client is closed once the upstream's connect has gone unanswered that
    long, with one log line naming the timeout given."""
    with unanswered_port() as port, relay_process(port, "--connect-timeout", "0.5") as relay:
        with socket.create_connection(("127.0.0.1", relay.port)) as client:
            client.settimeout(10)
            client_port = client.getsockname()[1]
            assert client.recv(1) == b""
        assert one_line(relay, client_port).endswith(
            f" WARNING trioecho.relay: 127.0.0.1:{client_port}: closing: cannot connect to the "
            f"upstream 127.0.0.1:{port}: no answer in 0.5 s"
        )
        no_tracebacks(relay)


def test_connect_timeout_is_the_relays_own_unless_given() -> None:
    def connect_timeout(*argv: str) -> float | None:
        args = build_parser().parse_args(["relay", "--upstream", "db:5432", *argv])
        return relay_config_from_args(args, FramingConfig("len")).connect_timeout

    assert connect_timeout() == DEFAULT_CONNECT_TIMEOUT == 10.0
    assert connect_timeout("--connect-timeout", "2.5") == 2.5
    assert connect_timeout("--connect-timeout", "0") is None  # never


# -- the PostgreSQL preset's timeouts ----------------------------------------------------


def relay_args(*argv: str) -> tuple[float | None, float | None, float | None]:
    args = build_parser().parse_args(["relay", "--upstream", "db:5432", *argv])
    resolve_relay_timeouts(args)
    return args.idle_timeout, args.send_timeout, args.fin_timeout


def test_the_postgresql_presets_timeouts_are_pgbouncers() -> None:
    """pgbouncer's client_idle_timeout is 0 and it has no send timeout:
    with the preset no timeout cuts a live client unless given."""
    assert relay_args("--preset", "postgresql") == (None, None, 30.0)
    assert relay_args("--preset", "mqtt") == (3600.0, 60.0, 30.0)
    assert relay_args("--framing", "len") == (3600.0, 60.0, 30.0)
    given = ("--idle-timeout", "5", "--send-timeout", "7", "--fin-timeout", "0")
    assert relay_args("--preset", "postgresql", *given) == (5.0, 7.0, None)
    args = build_parser().parse_args(["relay", "--upstream", "db:5432", "--preset", "postgresql"])
    server = relay_from_args(args, FramingConfig("len"))
    assert server.send_timeout is None  # the relay's streams, both sides


def test_the_refusals_for_timeouts_are_postgresqls() -> None:
    idle = error_fields(postgres_refusal("up", IdleTimeoutError("no bytes either way for 1 s")))
    assert idle == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "57P05",
        "M": "terminating connection due to idle-session timeout",
    }
    stalled = postgres_refusal("down", SlowReaderError("peer did not read its replies"))
    assert error_fields(stalled) == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "08006",
        "M": "terminating connection: the server stopped reading (peer did not read its replies)",
    }
    assert postgres_refusal("up", ProtocolRefusedError("no")) is None


def pg_message(sock: socket.socket) -> tuple[bytes, bytes]:
    """One message from a PostgreSQL server: (type, body); (b"", b"") at
    the end; EOFError for an end inside a message."""
    header = recv_exactly(sock, 5)
    if not header:
        return b"", b""
    if len(header) < 5:
        raise EOFError(f"the connection ended inside a message header: {header!r}")
    size = struct.unpack(">I", header[1:])[0]
    body = recv_exactly(sock, size - 4)
    if len(body) < size - 4:
        raise EOFError(f"the connection ended inside a message: {len(body)} of {size - 4}")
    return header[:1], body


def start_session(port: int, receive_buffer: int = 0, **parameters: str) -> socket.socket:
    """A session on a trust-authenticated PostgreSQL, ready for a query
    (``receive_buffer``: the socket's SO_RCVBUF, fixed before it connects)."""
    sock = socket.socket()
    sock.settimeout(20)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    sock.sendall(startup_message(**parameters))
    while (kind := pg_message(sock)[0]) != b"Z":
        assert kind in (b"R", b"S", b"K"), kind
    return sock


@pytest.fixture(scope="module")
def postgres() -> Iterator[LiveServer]:
    with postgresql_server() as server:
        yield server


def test_an_idle_timeout_tells_the_client_fatal_57p05_first(postgres: LiveServer) -> None:
    """An explicit --idle-timeout with the preset: the client gets the
    ErrorResponse PostgreSQL sends when its own idle_session_timeout fires
    (severity, SQLSTATE 57P05 and message alike), then the end."""
    with start_session(postgres.port, idle_session_timeout="1000") as direct:
        real = pg_message(direct)
        assert pg_message(direct) == (b"", b"")
    assert real[0] == b"E"
    real_fields = error_fields(real[0] + struct.pack(">I", 4 + len(real[1])) + real[1])
    with relay_process(postgres.port, "--preset", "postgresql", "--idle-timeout", "1") as relay:
        with start_session(relay.port) as sock:
            client_port = sock.getsockname()[1]
            ready = time.monotonic()
            kind, body = pg_message(sock)
            waited = time.monotonic() - ready
            assert pg_message(sock) == (b"", b"")
        assert 0.9 < waited < 2, waited
        assert kind == b"E"
        ours = error_fields(kind + struct.pack(">I", 4 + len(body)) + body)
        assert {key: ours[key] for key in "SVCM"} == {key: real_fields[key] for key in "SVCM"}
        assert ours["C"] == "57P05"
        line = one_line(relay, client_port)
        assert line.endswith(
            f" INFO trioecho.relay: 127.0.0.1:{client_port}: closing: the client side: no bytes "
            "either way for 1 s"
        ), line
        no_tracebacks(relay)


def test_an_upstream_that_stops_reading_gets_the_client_an_error_response_first() -> None:
    """An explicit --send-timeout with the preset; the upstream never reads
    a long query: 1 s after the relay's send to it stalled, the client gets
    FATAL 08006, then the end."""
    query = b"SELECT '" + b"q" * (32 << 20) + b"'\0"
    message = b"Q" + struct.pack(">I", 4 + len(query)) + query
    with (
        hostile(never_reads) as upstream,
        relay_process(upstream.port, "--preset", "postgresql", "--send-timeout", "1") as relay,
    ):
        with socket.create_connection(("127.0.0.1", relay.port), timeout=20) as sock:
            client_port = sock.getsockname()[1]
            sock.sendall(startup_message())

            def send_the_query() -> None:
                with suppress(OSError):  # the relay closes before it is all sent
                    sock.sendall(message)

            sender = threading.Thread(target=send_the_query, daemon=True)
            sender.start()
            kind, body = pg_message(sock)
            assert kind == b"E", (kind, body[:100])
            fields = error_fields(kind + struct.pack(">I", 4 + len(body)) + body)
            assert (fields["S"], fields["C"]) == ("FATAL", "08006")
            assert fields["M"].startswith(
                "terminating connection: the server stopped reading (peer did not read"
            ), fields["M"]
            with suppress(ConnectionResetError):
                assert sock.recv(10) == b""
            sender.join(timeout=20)
        line = one_line(relay, client_port)
        assert (
            f" WARNING trioecho.relay: 127.0.0.1:{client_port}: closing: "
            f"{upstream_side(upstream.port)}: peer did not read its replies"
        ) in line, line
        no_tracebacks(relay)


COPY_ROWS = 25_000
COPY_QUERY = f"COPY (SELECT repeat('x', 999) FROM generate_series(1, {COPY_ROWS})) TO STDOUT"


def copy_with_a_pause(port: int, pause: float) -> tuple[int, list[bytes]]:
    """COPY TO STDOUT read through a 4 KiB receive buffer, pausing ``pause``
    seconds after the first 64 KiB: (bytes of CopyData, the message types
    after the data), until the end of the session's answer or of the
    connection."""
    sock = start_session(port, receive_buffer=4096)
    with sock:
        query = COPY_QUERY.encode() + b"\0"
        sock.sendall(b"Q" + struct.pack(">I", 4 + len(query)) + query)
        copied, paused, after = 0, False, []
        while True:
            try:
                kind, body = pg_message(sock)
            except (ConnectionResetError, EOFError):
                after.append(b"cut")
                break
            if kind == b"d":
                copied += len(body)
            elif kind != b"H":
                after.append(kind)
            if kind in (b"Z", b""):
                break
            if copied > 65536 and not paused:
                paused = True
                time.sleep(pause)
        return copied, after


def test_a_paused_copy_reader_gets_everything_with_the_presets_defaults(
    postgres: LiveServer,
) -> None:
    """Flow control holds the rows while the reader pauses: with the
    preset's defaults (no send timeout, as pgbouncer) it gets every byte, as
    directly; with an explicit --send-timeout 1 the same reader is cut."""
    everything = COPY_ROWS * 1000
    assert copy_with_a_pause(postgres.port, 0) == (everything, [b"c", b"C", b"Z"])
    with relay_process(postgres.port, "--preset", "postgresql") as relay:
        assert copy_with_a_pause(relay.port, 3) == (everything, [b"c", b"C", b"Z"])
        relay.wait_for_log("closing: the client side ended; no half-close")  # its own end
        assert not [line for line in relay.log if " WARNING " in line]
        no_tracebacks(relay)
    with relay_process(postgres.port, "--preset", "postgresql", "--send-timeout", "1") as relay:
        copied, after = copy_with_a_pause(relay.port, 3)
        assert copied < everything and after in ([b""], [b"cut"]), (copied, after)
        relay.wait_for_log("closing: the client side: peer did not read its replies")
        no_tracebacks(relay)


# -- protocol 2.0 ------------------------------------------------------------------------


def v2_startup() -> bytes:
    """A protocol 2.0 StartupPacket: the version, then fixed-size fields."""
    body = struct.pack(">I", 0x00020000) + b"postgres".ljust(64, b"\0")
    body += b"postgres".ljust(32, b"\0") + b"\0" * (64 + 64 + 64)
    return struct.pack(">I", 4 + len(body)) + body


def answer_to(port: int, *packets: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for packet in packets[:-1]:
            sock.sendall(packet)
            assert sock.recv(1) == b"N"
        sock.sendall(packets[-1])
        return read_to_the_end(sock)


def test_a_protocol_2_startup_gets_postgresqls_own_answer(postgres: LiveServer) -> None:
    """PostgreSQL refuses protocol 2.0 in the old style, an ``E`` with no
    length field; the relay used to pass that on and then refuse it as a
    message "over max_frame"."""
    real = answer_to(postgres.port, v2_startup())
    assert real == b"EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n\0"
    with relay_process(postgres.port, "--preset", "postgresql") as relay:
        assert answer_to(relay.port, v2_startup()) == real
        assert answer_to(relay.port, SSL_REQUEST, v2_startup()) == real
        line = relay.wait_for_log("a protocol 2.0 startup")
        assert line.endswith(
            "closing: the client side: a protocol 2.0 startup: unsupported frontend protocol "
            "2.0: server supports 3.0 to 3.0"
        ), line
        assert " WARNING trioecho.relay: " in line
        no_tracebacks(relay)
