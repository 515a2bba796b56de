"""Logs as operators configure them, on real processes: ``--access-log``
records with their fields, ``--log-format json``, ``--log-config`` (JSON and
TOML dictConfig) and its mistakes."""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import trustme
from support.serverproc import ServerProcess, recv_exactly
from support.snippets import ROOT, snippets

from trioecho.logtext import format_exception_for_log
from trioecho.server.endings import ACCESS_FIELDS
from trioecho.services.echo import GREETING, REPLY_SUFFIX

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


def session(sock: socket.socket | ssl.SSLSocket, message: bytes) -> tuple[int, int]:
    """Greeting, one echo, q; returns the bytes (sent, received)."""
    greeting = recv_exactly(sock, len(GREETING) + 1)
    sock.sendall(message + b"\nq\n")
    reply = recv_exactly(sock, len(message) + len(REPLY_SUFFIX) + 1)
    assert reply == message + REPLY_SUFFIX + b"\n"
    return len(message) + 3, len(greeting) + len(reply)


def json_records(server: ServerProcess, logger: str, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line) for line in list(server.log) if line.startswith("{")]
        wanted = [record for record in records if record["logger"] == logger]
        if len(wanted) >= count or time.monotonic() > deadline:
            return wanted
        time.sleep(0.02)


def test_a_json_access_record_carries_the_fields() -> None:
    server = ServerProcess("--access-log", "--log-format", "json")
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            port = sock.getsockname()[1]
            sent, received = session(sock, b"hello")
        (record,) = json_records(server, "trioecho.access", 1)
        assert set(ACCESS_FIELDS) <= set(record)
        assert record["peer"] == record["client"] == f"127.0.0.1:{port}"
        assert record["tls"] is None
        assert record["close_reason"] == "stop_message"
        assert (record["messages_received"], record["messages_sent"]) == (2, 2)  # hello, q
        assert (record["bytes_received"], record["bytes_sent"]) == (sent, received)
        assert isinstance(record["duration"], float) and 0 <= record["duration"] < 10
        assert record["level"] == "INFO"
        assert record["message"] == (
            f"127.0.0.1:{port}: stop_message after {record['duration']:.3f} s: 2 messages in, "
            f"2 out; {sent} bytes in, {received} out"
        )
        # Every record is JSON, the server's own too.
        assert all(line.startswith("{") for line in server.log)
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_the_access_log_names_tls_and_the_real_client(tmp_path: Path) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    options = ["--access-log", "--log-format", "json", "--tls-cert", str(cert)]
    options += ["--tls-key", str(key), "--proxy-protocol", "v1"]
    server = ServerProcess(*options)
    try:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        raw = socket.create_connection(("127.0.0.1", server.port))
        port = raw.getsockname()[1]
        raw.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 9999\r\n")
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            session(sock, b"secret")
            version = sock.version()
        (record,) = json_records(server, "trioecho.access", 1)
        assert record["client"] == "203.0.113.7:51000"
        assert record["peer"] == f"127.0.0.1:{port}"
        assert record["tls"] == version
        assert record["close_reason"] == "stop_message"
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_the_access_log_is_off_by_default_and_separate_from_the_level() -> None:
    quiet = ServerProcess("--log-level", "error", "--access-log")
    default = ServerProcess()
    try:
        for server in (quiet, default):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                session(sock, b"x")
        quiet_line = quiet.wait_for_log("trioecho.access: 127.0.0.1:")
        assert "stop_message after" in quiet_line
        for server in (quiet, default):
            assert server.stop(signal.SIGTERM) == 0
        assert not any("trioecho.access" in line for line in default.log)
        assert [line for line in quiet.log if "trioecho.access" not in line] == []  # only errors
    finally:
        quiet.close()
        default.close()


def test_a_refused_tls_handshake_gets_an_access_record(tmp_path: Path) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert = tmp_path / "both.pem"
    cert.write_bytes(issued.private_key_pem.bytes() + issued.cert_chain_pems[0].bytes())
    server = ServerProcess("--access-log", "--log-format", "json", "--tls-cert", str(cert))
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"plain text, not TLS\n")
            sock.recv(100)
        (record,) = json_records(server, "trioecho.access", 1)
        assert record["close_reason"] == "tls"
        assert record["messages_received"] == record["bytes_received"] == 0
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


CONFIG = {
    "version": 1,
    "formatters": {"json": {"()": "trioecho.cli.logging_setup.JSONFormatter"}},
    "handlers": {
        "file": {"class": "logging.FileHandler", "filename": "{log}", "formatter": "json"},
    },
    "loggers": {"trioecho.access": {"level": "INFO"}},
    "root": {"level": "WARNING", "handlers": ["file"]},
}

TOML_CONFIG = """\
version = 1
[formatters.json]
"()" = "trioecho.cli.logging_setup.JSONFormatter"
[handlers.file]
class = "logging.FileHandler"
filename = "{log}"
formatter = "json"
[loggers."trioecho.access"]
level = "INFO"
[root]
level = "WARNING"
handlers = ["file"]
"""


@pytest.mark.parametrize("kind", ["json", "toml"])
def test_log_config_from_a_file(tmp_path: Path, kind: str) -> None:
    log = tmp_path / "trioecho.log"
    config = tmp_path / f"logging.{kind}"
    if kind == "json":
        config.write_text(json.dumps(CONFIG).replace("{log}", str(log)))
    else:
        config.write_text(TOML_CONFIG.replace("{log}", str(log)))
    server = ServerProcess("--log-config", str(config))
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            session(sock, b"configured")
        deadline = time.monotonic() + 10
        while not log.exists() or "trioecho.access" not in log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert server.stop(signal.SIGTERM) == 0
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert [record["close_reason"] for record in records] == ["stop_message"]
        assert server.log == []  # nothing on stderr: the file has it all
    finally:
        server.close()


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        (None, [], "--log-config {path}: No such file or directory"),
        ("{", [], "--log-config {path}: not JSON: Expecting property name enclosed in double "),
        ('{"handlers": {}}', [], "--log-config {path}: a logging dictConfig must be a table with "),
        (
            '{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}',
            [],
            "--log-config {path}: Unable to configure handler 'h'",
        ),
        (
            '{"version": 1}',
            ["--log-level", "debug", "-v"],
            "--log-config decides the logging: not with --log-level, -v",
        ),
    ],
)
def test_log_config_mistakes(
    tmp_path: Path, content: str | None, options: list[str], message: str
) -> None:
    path = tmp_path / "logging.json"
    if content is not None:
        path.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "trioecho", "serve", "--log-config", str(path), *options],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    last = result.stderr.splitlines()[-1]
    assert last.startswith("trioecho serve: error: " + message.format(path=path)), last


def test_workers_log_json_with_their_index() -> None:
    server = ServerProcess("--workers", "2", "--log-format", "json", "--access-log")
    try:
        for n in range(6):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                session(sock, f"w{n}".encode())
        records = json_records(server, "trioecho.access", 6)
        assert len(records) == 6
        assert {record["worker"] for record in records} <= {0, 1}
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_the_documented_log_config_works(tmp_path: Path) -> None:
    page = ROOT / "docs" / "reference" / "metrics-logs.md"
    (block,) = [s.code for s in snippets(page) if s.language == "toml"]
    config = tmp_path / "logging.toml"
    config.write_text(block)
    server = ServerProcess("--log-config", str(config), "--access-log")
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            session(sock, b"as documented")
        (record,) = json_records(server, "trioecho.access", 1)
        assert record["close_reason"] == "stop_message"
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


QUOTING_SERVER = '''\
"""A server whose handler fails quoting the peer's message, logging as `trioecho serve`."""
import argparse, signal, sys

import trio

from trioecho import BaseRequestHandler, MessageServer
from trioecho.cli.configs import LogOptions
from trioecho.cli.logging_setup import configure_logging


class Quoting(BaseRequestHandler):
    async def handle(self) -> None:
        text = (await self.request.receive_message()).decode()
        try:
            raise LookupError(text)
        except LookupError as exc:
            raise ValueError("cannot answer " + text) from exc


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--log-format", default="text")
    args = parser.parse_args()
    configure_logging(LogOptions(command="serve", log_format=args.log_format))
    server = MessageServer(Quoting, host="127.0.0.1", port=args.port, framing="len")
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            print(f"listening on 127.0.0.1:{listeners[0].socket.getsockname()[1]}", flush=True)
            async for _ in signals:
                server.shutdown()
                break


trio.run(main)
'''
# What a peer might send to forge a log line: a line break, a carriage return, a colour.
FORGING = "a\nb\rc\x1b[31md"
ESCAPED = "a\\nb\\rc\\x1b[31md"


def quoted_traceback(tmp_path: Path, log_format: str) -> tuple[Path, int, list[str]]:
    """The quoting server's stderr once it has served one client that sent
    ``FORGING`` (length-prefixed): the script, the client's port, the log."""
    script = tmp_path / "quoting_server.py"
    script.write_text(QUOTING_SERVER)
    server = ServerProcess("--log-format", log_format, program=str(script))
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            port = sock.getsockname()[1]
            sock.sendall(len(FORGING).to_bytes(4, "big") + FORGING.encode())
            assert sock.recv(100) == b""  # the handler failed: the server closed
        server.wait_for_log("ValueError")
        assert server.stop(signal.SIGTERM) == 0
        return script, port, server.log
    finally:
        server.close()


def test_a_traceback_quoting_peer_bytes_cannot_forge_log_lines(tmp_path: Path) -> None:
    script, port, log = quoted_traceback(tmp_path, "text")
    record = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")  # a record's first line
    start = next(n for n, line in enumerate(log) if "handler raised" in line)
    assert record.match(log[start]) and log[start].split(" ", 2)[2] == (
        f"ERROR trioecho.server: 127.0.0.1:{port}: handler raised; closing its connection"
    )
    end = next(n for n in range(start + 1, len(log)) if record.match(log[n]))
    lines = log[start + 1 : end]  # the traceback, up to the next record
    source = QUOTING_SERVER.splitlines()
    where = {  # the script's lines that raise
        name: f'  File "{script}", line {source.index(code) + 1}, in handle'
        for name, code in [
            ("lookup", "            raise LookupError(text)"),
            ("value", '            raise ValueError("cannot answer " + text) from exc'),
        ]
    }
    assert lines[:7] == [
        "Traceback (most recent call last):",
        where["lookup"],
        "    raise LookupError(text)",
        f"LookupError: {ESCAPED}",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
    ]
    assert lines[7] == "Traceback (most recent call last):"
    assert lines[-3:] == [
        where["value"],
        '    raise ValueError("cannot answer " + text) from exc',
        f"ValueError: cannot answer {ESCAPED}",
    ]
    frames = lines[8:-3]  # trioecho's, calling the handler: a file line, then its code
    assert frames and all(
        re.fullmatch(r'  File "[^"]+", line \d+, in \S+', line) or line.startswith("    ")
        for line in frames
    ), frames
    # No line of the log holds a control character (the reader split it at real "\n"s).
    assert all(line.isprintable() for line in log), [line for line in log if not line.isprintable()]


def test_a_json_traceback_keeps_the_peer_bytes_inside_one_record(tmp_path: Path) -> None:
    _, port, log = quoted_traceback(tmp_path, "json")
    (line,) = [line for line in log if "handler raised" in line]
    record = json.loads(line)
    assert record["message"] == f"127.0.0.1:{port}: handler raised; closing its connection"
    assert record["exception"].startswith("Traceback (most recent call last):\n")
    # JSON escapes the text: the field holds the exception's own message.
    assert record["exception"].endswith(f"\nValueError: cannot answer {FORGING}")
    assert all(entry.startswith("{") for entry in log)


def raise_quoting(text: str) -> None:
    """Raises a group holding a chained error and a note, each quoting ``text``."""
    try:
        try:
            raise LookupError(text)
        except LookupError as exc:
            error = ValueError("cannot answer " + text)
            error.__notes__ = ["note: " + text]  # add_note() from Python 3.11
            raise error from exc
    except ValueError as exc:
        raise BaseExceptionGroup("group " + text, [exc, RuntimeError(text)]) from None


def test_escaped_tracebacks_are_the_tracebacks_of_the_escaped_text() -> None:
    caught: list[BaseException] = []
    for text in (FORGING, ESCAPED):  # the same frames, lines and shape
        try:
            raise_quoting(text)
        except BaseException as exc:
            caught.append(exc)
    forged, escaped = caught
    plain = "".join(traceback.format_exception(type(escaped), escaped, escaped.__traceback__))
    assert format_exception_for_log(forged, forged.__traceback__) == plain.removesuffix("\n")
    assert ESCAPED in plain and "note: " + ESCAPED in plain  # what was compared
