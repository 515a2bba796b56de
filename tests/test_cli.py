"""The command line, run as a user would: a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from support.serverproc import recv_exactly, server_process

from trioecho import FRAMER_IMPLEMENTATION, __version__
from trioecho.services.echo import GREETING, REPLY_SUFFIX

TRIOECHO = [sys.executable, "-m", "trioecho"]


@contextmanager
def serving(*options: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start ``python -m trioecho`` on a free port; yield (process, port)."""
    with server_process(*options) as server:
        yield server.process, server.port


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_talk_and_stop_with_a_signal(signum: signal.Signals) -> None:
    with server_process() as server:
        port, log = server.port, server.log
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
            sock.sendall(b"hello\n\xff\n")
            expected = b"hello" + REPLY_SUFFIX + b"\n\xff" + REPLY_SUFFIX + b"\n"
            assert recv_exactly(sock, len(expected)) == expected
            assert server.stop(signum) == 0
            assert sock.recv(100) == b""  # closed by the shutdown
    assert f"{signal.Signals(signum).name}: shutting down" in "\n".join(log)


def test_len_framing_with_options() -> None:
    with serving("--framing", "len", "--length-bytes", "2", "--byteorder", "little") as (
        process,
        port,
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert recv_exactly(sock, 2 + len(GREETING)) == bytes([len(GREETING), 0]) + GREETING
            sock.sendall(b"\x02\x00hi\x01\x00q")
            reply = b"hi" + REPLY_SUFFIX
            assert recv_exactly(sock, 2 + len(reply) + 1) == bytes([len(reply), 0]) + reply
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_varint_framing() -> None:
    with server_process("--framing", "varint", "--varint-bytes", "2") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert recv_exactly(sock, 1 + len(GREETING)) == bytes([len(GREETING)]) + GREETING
            big = b"v" * 200  # a 2-byte length, and a 2-byte reply length
            sock.sendall(b"\x02hi" + b"\xc8\x01" + big + b"\x01q")
            expected = b"\x05hi" + REPLY_SUFFIX + b"\xcb\x01" + big + REPLY_SUFFIX
            assert recv_exactly(sock, len(expected)) == expected
            assert sock.recv(10) == b""
        assert server.stop(signal.SIGTERM) == 0


def test_length_field_after_a_type_byte_with_the_header_kept() -> None:
    """PostgreSQL's layout: each reply keeps its message's type byte and gets a
    length that counts itself."""
    options = ["--framing", "len", "--length-offset", "1", "--length-adjustment", "-4"]
    with server_process(*options, "--include-header") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            greeting = b"\0" + (4 + len(GREETING)).to_bytes(4, "big") + GREETING
            assert recv_exactly(sock, len(greeting)) == greeting
            sock.sendall(b"Q\0\0\0\x06hiZ\0\0\0\x04")
            expected = b"Q\0\0\0\x09hi" + REPLY_SUFFIX + b"Z\0\0\0\x07" + REPLY_SUFFIX
            assert recv_exactly(sock, len(expected)) == expected
            sock.sendall(b"Q\0\0\0\x03")  # a length below the header's own 4 bytes
            assert sock.recv(10) == b""  # closed, with a clear error in the log
            server.wait_for_log("length field 3 with length_adjustment -4 gives a negative length")
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as canary:
                assert recv_exactly(canary, len(greeting)) == greeting
                canary.sendall(b"A\0\0\0\x04")
                reply = b"A\0\0\0\x07" + REPLY_SUFFIX
                assert recv_exactly(canary, len(reply)) == reply
        assert server.stop(signal.SIGTERM) == 0


def test_several_delimiters() -> None:
    options = ["--delimiter", "\\r\\n", "--delimiter", "\\0", "--delimiter", "||"]
    with server_process(*options) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert recv_exactly(sock, len(GREETING) + 2) == GREETING + b"\r\n"
            sock.sendall(b"a\r\nb\0c||")
            expected = b"".join(x + REPLY_SUFFIX + b"\r\n" for x in (b"a", b"b", b"c"))
            assert recv_exactly(sock, len(expected)) == expected
        assert server.stop(signal.SIGTERM) == 0


def test_relay_between_a_client_and_an_echo_server() -> None:
    """trioecho relay in front of trioecho serve, both real processes: the
    greeting and the replies pass through unchanged; a bad frame closes the
    client's connection (and its upstream one) while a canary is served."""
    framing = ["--framing", "varint", "--varint-bytes", "2"]
    with server_process(*framing) as upstream:
        upstream_at = f"127.0.0.1:{upstream.port}"
        with server_process(*framing, "--upstream", upstream_at, command="relay") as relay:
            with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
                assert recv_exactly(sock, 1 + len(GREETING)) == bytes([len(GREETING)]) + GREETING
                sock.sendall(b"\x02hi")
                assert recv_exactly(sock, 6) == b"\x05hi" + REPLY_SUFFIX
                with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as canary:
                    sock.sendall(b"\xff\xff\xff")  # a varint over 2 bytes
                    assert sock.recv(10) == b""
                    relay.wait_for_log("varint length field longer than max_length_bytes=2")
                    assert recv_exactly(canary, 1 + len(GREETING))[1:] == GREETING
                    canary.sendall(b"\x01q")
                    assert canary.recv(10) == b""  # q ended the session upstream
            assert relay.stop(signal.SIGTERM) == 0
        assert upstream.stop(signal.SIGTERM) == 0


def test_client_in_a_pipe() -> None:
    with serving() as (process, port):
        result = subprocess.run(
            [*TRIOECHO, "client", "--port", str(port)],
            input="a\n你好\nq\nnot sent\n".encode(),
            capture_output=True,
            timeout=30,
        )
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "你好欢迎你\na好\n你好好\n"


def test_client_reports_a_refused_connection() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        result = subprocess.run(
            [*TRIOECHO, "client", "--port", str(port)], capture_output=True, timeout=30, input=b""
        )
    assert result.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}" in result.stderr.decode()


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run([*TRIOECHO, "--port", str(port)], capture_output=True, timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr.decode()


def test_version_names_the_framer() -> None:
    result = subprocess.run([*TRIOECHO, "--version"], capture_output=True, timeout=30, check=True)
    assert result.stdout.decode() == f"trioecho {__version__} (framer: {FRAMER_IMPLEMENTATION})\n"


def test_version_with_the_pure_python_framer() -> None:
    result = subprocess.run(
        [*TRIOECHO, "--version"],
        capture_output=True,
        timeout=30,
        check=True,
        env={**os.environ, "TRIOECHO_PUREPYTHON": "1"},
    )
    assert result.stdout.decode() == f"trioecho {__version__} (framer: python)\n"


def test_demo_shows_sticky_packets() -> None:
    result = subprocess.run([*TRIOECHO, "demo"], capture_output=True, timeout=60, check=True)
    lines = result.stdout.decode().splitlines()
    assert re.fullmatch(
        r"raw\s+'helloworld好'\s+<- merged into one message: sticky packets", lines[-3]
    )
    assert re.fullmatch(r"line\s+'hello好', 'world好'\s+<- kept apart by the framing", lines[-2])
    assert re.fullmatch(r"len\s+'hello好', 'world好'\s+<- kept apart by the framing", lines[-1])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--framing", "json"], "invalid choice"),
        (["--port", "70000"], "must be 0..65535"),
        (["--max-frame", "0"], "must be at least 1"),
        (["--max-frame", "10"], "greeting"),
        (
            ["--framing", "len", "--length-bytes", "1", "--max-frame", "253"],
            "--max-frame 253 is too large for --length-bytes 1: the reply to a message "
            "(3 bytes longer) must fit the header, so at most 252",
        ),
        (["--framing", "len", "--length-bytes", "2", "--max-frame", "65533"], "at most 65532"),
        (["--max-connections", "-1"], "must be at least 1"),
        (["--tls-key", "k.pem"], "--tls-key needs --tls-cert"),
        (
            ["--tls-cert", "/nonexistent.pem"],
            "--tls-cert: cannot read /nonexistent.pem: No such file or directory",
        ),
        (["--proxy-allow-from", "10.0.0.0/8"], "--proxy-allow-from needs --proxy-protocol"),
        (
            ["--proxy-protocol", "v2", "--proxy-allow-from", "10.0.0.0/8,bogus"],
            "not an IP network: 'bogus'",
        ),
        (["--proxy-protocol", "v3"], "invalid choice: 'v3'"),
        (["--proxy-timeout", "0"], "must be more than 0"),
        (["--workers", "0"], "must be at least 1"),
        (["--grace", "-1"], "--grace: must be 0..86400 seconds, not -1"),
        (["--grace", "nan"], "--grace: must be 0..86400 seconds, not nan"),
        (["--send-timeout", "nan"], "--send-timeout: must be 0..86400 seconds, not nan"),
        (
            ["--min-send-rate", "nan"],
            "--min-send-rate: must be a finite number, at least 0, not nan",
        ),
        (["--min-send-rate", "-1"], "--min-send-rate: must be a finite number, at least 0, not -1"),
        (["--min-send-rate", "1k"], "--min-send-rate: must be bytes a second, not '1k'"),
        (["--idle-timeout", "nan"], "--idle-timeout: must be 0..86400 seconds, not nan"),
        (["--idle-timeout", "inf"], "--idle-timeout: must be 0..86400 seconds, not inf"),
        (["--proxy-timeout", "nan"], "--proxy-timeout: must be 0..86400 seconds, not nan"),
        (["--tls-handshake-timeout", "-3"], "must be 0..86400 seconds, not -3"),
        (["--grace", "soon"], "--grace: must be a number of seconds, not 'soon'"),
        (["bench", "--duration", "0"], "--duration: must be more than 0, not 0"),
        (["bench", "--warmup", "nan"], "--warmup: must be 0..86400 seconds, not nan"),
        (["--workers", "many"], "--workers: must be a number or 'auto', not 'many'"),
        (["--readiness", "select"], "invalid choice: 'select'"),
        (["--framing", "fixed"], "--framing fixed needs --frame-size"),
        (
            ["--framing", "fixed", "--frame-size", "4"],
            "the echo service cannot answer fixed-length messages",
        ),
        (["--framing", "len", "--length-offset", "1"], "--length-offset needs --include-header"),
        (["--framing", "varint", "--varint-bytes", "11"], "between 1 and 10"),
        (
            ["--framing", "varint", "--varint-bytes", "1", "--max-frame", "125"],
            "--max-frame 125 is too large for --varint-bytes 1: the reply to a message "
            "(3 bytes longer) must fit the header, so at most 124",
        ),
        (
            ["--framing", "len", "--length-bytes", "1", "--length-adjustment", "20"],
            "the greeting cannot be framed with these options",
        ),
        (["--delimiter", ""], "a delimiter is 1 to 8 bytes, not 0"),
        (["--delimiter", "\\x"], "bad delimiter"),
        (["--delimiter", "x"] * 9, "give 1 to 8 delimiters, not 9"),
        (["--length-offset", "70000"], "between 0 and 65535"),
        (["client", "--framing", "len", "--include-header"], "the client sends bare payloads"),
        (["bench", "--framing", "varint"], "invalid choice: 'varint'"),
        (["relay"], "the following arguments are required: --upstream"),
        (["relay", "--upstream", "nowhere"], "expected HOST:PORT, not 'nowhere'"),
        (["relay", "--upstream", "h:1", "--preset", "x"], "invalid choice: 'x'"),
    ],
)
def test_bad_options_exit_2(options: list[str], message: str) -> None:
    result = subprocess.run([*TRIOECHO, *options], capture_output=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr.decode()


@pytest.mark.parametrize("readiness", ["hub", "trio"])
def test_both_ways_of_waiting_serve_many_clients(readiness: str) -> None:
    """``--readiness hub`` (the default) and ``trio``: 50 clients at once, each
    pipelining 20 messages, every reply checked."""
    with serving("--framing", "len", "--readiness", readiness) as (process, port):
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
        try:
            for sock in clients:
                assert recv_exactly(sock, 4 + len(GREETING))[4:] == GREETING
            for n, sock in enumerate(clients):
                sock.sendall(b"".join(b"\0\0\0\x06%06d" % (n * 100 + i) for i in range(20)))
            for n, sock in enumerate(clients):
                for i in range(20):
                    reply = b"%06d" % (n * 100 + i) + REPLY_SUFFIX
                    assert (
                        recv_exactly(sock, 4 + len(reply)) == len(reply).to_bytes(4, "big") + reply
                    )
        finally:
            for sock in clients:
                sock.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_a_bad_readiness_environment_variable_exits_2() -> None:
    env = {**os.environ, "TRIOECHO_READINESS": "select"}
    result = subprocess.run(TRIOECHO, capture_output=True, timeout=30, env=env)
    assert result.returncode == 2
    assert "TRIOECHO_READINESS must be hub or trio, not 'select'" in result.stderr.decode()


def test_tls_service_client_and_bench(tls_files: dict[str, str]) -> None:
    with server_process("--tls-cert", tls_files["cert"], "--tls-key", tls_files["key"]) as server:
        port = str(server.port)
        trusted = subprocess.run(
            [*TRIOECHO, "client", "--port", port, "--tls-ca", tls_files["ca"]],
            input=b"over tls\nq\n",
            capture_output=True,
            timeout=30,
        )
        by_name = subprocess.run(
            [
                *TRIOECHO,
                "client",
                "--port",
                port,
                "--tls-ca",
                tls_files["ca"],
                "--tls-server-name",
                "localhost",
            ],
            input=b"q\n",
            capture_output=True,
            timeout=30,
        )
        wrong_name = subprocess.run(
            [
                *TRIOECHO,
                "client",
                "--port",
                port,
                "--tls-ca",
                tls_files["ca"],
                "--tls-server-name",
                "wrong.example",
            ],
            input=b"q\n",
            capture_output=True,
            timeout=30,
        )
        untrusted = subprocess.run(
            [*TRIOECHO, "client", "--port", port, "--tls"],
            input=b"q\n",
            capture_output=True,
            timeout=30,
        )
        plain = subprocess.run(
            [*TRIOECHO, "client", "--port", port], input=b"x\n", capture_output=True, timeout=30
        )
        bench = subprocess.run(
            [
                *TRIOECHO,
                *("bench", "--port", port, "--tls-ca", tls_files["ca"], "-c", "4", "-d", "8"),
                *("--duration", "0.5", "--warmup", "0.1", "--json"),
            ],
            capture_output=True,
            timeout=60,
        )
        server.wait_for_log("closing: TLS handshake failed")
        assert server.stop() == 0
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.decode() == "你好欢迎你\nover tls好\n"
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.decode() == "你好欢迎你\n"
    assert wrong_name.returncode == 1
    assert "Hostname mismatch" in wrong_name.stderr.decode()
    assert untrusted.returncode == 1
    assert (
        f"TLS handshake with 127.0.0.1:{port} failed: [SSL: CERTIFICATE_VERIFY_FAILED]"
        in untrusted.stderr.decode()
    )
    assert plain.returncode == 1
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout)
    assert (result["tls"], result["errors"], result["connections"]) == (True, 0, 4)
    assert result["messages"] > 0


def _display_column(line: str, marker: str) -> int:
    """Where ``marker`` starts in a terminal: wide characters take two columns."""
    before = line[: line.index(marker)]
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in before)


def test_demo_arrows_line_up_on_a_terminal() -> None:
    result = subprocess.run([*TRIOECHO, "demo"], capture_output=True, timeout=60, check=True)
    rows = result.stdout.decode().splitlines()[-3:]
    assert len({_display_column(row, "<-") for row in rows}) == 1, rows


def test_help_shows_serves_options_and_bench_defaults() -> None:
    top = subprocess.run([*TRIOECHO, "--help"], capture_output=True, timeout=30, check=True)
    text = top.stdout.decode()
    assert "{serve,client,relay,demo,bench}" in text  # the commands
    assert "--max-connections" in text and "--idle-timeout" in text  # and serve's options
    bench = subprocess.run(
        [*TRIOECHO, "bench", "--help"], capture_output=True, timeout=30, check=True
    )
    assert re.search(
        r"--connections N\s+connections at once \(default: 100\)", bench.stdout.decode()
    )


def test_listening_is_said_once_and_verbose_lines_are_info() -> None:
    with server_process("-v") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
        line = server.wait_for_log("connected")
        assert re.search(r" INFO trioecho\.connections: 127\.0\.0\.1:\d+: connected$", line)
        assert server.stop() == 0
    assert not [entry for entry in server.log if "listening on" in entry]  # stdout has it
    assert not [entry for entry in server.log if " DEBUG " in entry]
    stopped = [entry for entry in server.log if "stopped after serving" in entry]
    assert stopped and "serving 1 connection: " in stopped[0]


def test_ctrl_c_ends_bench_quietly() -> None:
    with server_process("--framing", "len") as server:
        bench = subprocess.Popen(
            [*TRIOECHO, "bench", "--port", str(server.port), "--framing=len", "--duration=60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(2)
            bench.send_signal(signal.SIGINT)
            _, err = bench.communicate(timeout=30)
        finally:
            bench.kill()
    assert bench.returncode == 130
    assert b"Traceback" not in err
