"""The command line, run as a user would: a real subprocess (``serve``,
``serve --uds``, ``relay``, ``client`` and ``bench``, their exit codes and
``--help``).  Every option mistake's message is checked in-process in
``test_cli_options.py``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from support.serverproc import recv_exactly, server_process

from trioecho import FRAMER_IMPLEMENTATION, __version__, open_unix_message_stream
from trioecho.services.echo import GREETING, REPLY_SUFFIX

TRIOECHO = [sys.executable, "-m", "trioecho"]


@contextmanager
def serving(*options: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start ``python -m trioecho`` on a free port; yield (process, port)."""
    with server_process(*options) as server:
        yield server.process, server.port


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_talk_and_stop_with_a_signal(signum: signal.Signals) -> None:
    with server_process("--grace", "1") as server:
        port, log = server.port, server.log
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
            sock.sendall(b"hello\n\xff\n")
            expected = b"hello" + REPLY_SUFFIX + b"\n\xff" + REPLY_SUFFIX + b"\n"
            assert recv_exactly(sock, len(expected)) == expected
            assert server.stop(signum) == 0
            assert sock.recv(100) == b""  # closed once the grace period ran out
    assert f"{signal.Signals(signum).name}: draining" in "\n".join(log)


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
        (["--port", "70000"], "must be 0..65535"),  # the parser's own check
        (["--tls-key", "k.pem"], "--tls-key needs --tls-cert"),  # serve's cross-option check
    ],
)
def test_bad_options_exit_2(options: list[str], message: str) -> None:
    """The process's exit status and stderr; every mistake's message is checked
    in-process (``test_cli_options.py``)."""
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


# -- serve --uds -------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_uds_on_a_real_process(tmp_path: Path, workers: str) -> None:
    path = str(tmp_path / "cli.sock")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trioecho",
            "serve",
            "--uds",
            path,
            "--framing",
            "len",
            "--workers",
            workers,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().decode() == f"listening on unix:{path}\n"

        async def talk() -> bytes:
            async with await open_unix_message_stream(path, framing="len") as stream:
                assert await stream.receive_message() == GREETING
                await stream.send_message(b"over unix")
                return await stream.receive_message()

        for _ in range(10):  # with --workers 2, both serve the one socket
            assert trio.run(talk) == b"over unix" + REPLY_SUFFIX
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not os.path.exists(path)


# -- client and bench against a server of another framing ------------------------

QUICK = ["--duration", "0.5", "--warmup", "0"]


def test_client_against_another_framing_says_which() -> None:
    with server_process("--framing", "len") as server:
        start = time.monotonic()
        result = subprocess.run(
            [*TRIOECHO, "client", "--port", str(server.port)],
            input=b"hello\n",
            capture_output=True,
            timeout=30,
        )
    assert time.monotonic() - start < 10
    assert result.returncode == 1
    assert b"the server speaks len framing? try --framing len" in result.stderr


@pytest.mark.parametrize(("server", "bench"), [("line", "len"), ("line", "raw"), ("len", "line")])
def test_bench_against_another_framing_says_which(server: str, bench: str) -> None:
    with server_process("--framing", server) as process:
        result = subprocess.run(
            [*TRIOECHO, "bench", "--port", str(process.port), "--framing", bench, *QUICK],
            capture_output=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"try --framing {server}".encode() in result.stderr


def test_bench_takes_a_host_name_and_exit_codes_are_documented() -> None:
    with server_process("--framing", "len") as process:
        result = subprocess.run(
            [
                *TRIOECHO,
                "bench",
                "--host",
                "localhost",
                "--port",
                str(process.port),
                *QUICK,
                "--framing",
                "len",
                "-c",
                "2",
            ],
            capture_output=True,
            timeout=30,
        )
    assert result.returncode == 0, result.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
        for command in ("bench", "client"):
            refused = subprocess.run(
                [*TRIOECHO, command, "--port", port], capture_output=True, timeout=30
            )
            assert refused.returncode == 1, command
            assert b"cannot connect to 127.0.0.1:" + port.encode() in refused.stderr


def test_ctrl_c_ends_the_interactive_client_quietly() -> None:
    with server_process() as server:
        client = subprocess.Popen(
            [*TRIOECHO, "client", "--port", str(server.port)],
            stdin=subprocess.PIPE,  # left open: the client waits for a line
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert client.stdout is not None
        assert client.stdout.readline() == GREETING + b"\n"
        time.sleep(0.2)  # the client is now blocked reading its input
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=30)
    assert client.returncode == 130
    assert err == b""
