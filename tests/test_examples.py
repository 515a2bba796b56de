"""The examples in examples/ run as the docs show them (the tutorial includes them)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from support.serverproc import server_process

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def start_server(port: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / "shout_server.py"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_server_and_client_examples() -> None:
    server = start_server()
    try:
        assert server.stdout is not None
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", server.stdout.readline())
        assert match, "the server example did not start"
        port = match.group(1)
        client = subprocess.run(
            [sys.executable, str(EXAMPLES / "shout_client.py"), port, "hello", "wörld"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout == "你好欢迎你\nhello -> HELLO\nwörld -> WöRLD\n"
        # trioecho's own client talks to it too
        trioecho_client = subprocess.run(
            [sys.executable, "-m", "trioecho", "client", "--framing", "len", "--port", port],
            input="abc\nq\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert trioecho_client.returncode == 0, trioecho_client.stderr
        assert trioecho_client.stdout == "你好欢迎你\nABC\n"
        server.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop, no traceback
        out, err = server.communicate(timeout=30)
        assert server.returncode == 0
        assert "connected: ('127.0.0.1'," in out
        assert "Traceback" not in err
    finally:
        server.kill()
        server.wait()


def test_client_example_over_tls(tls_files: dict[str, str]) -> None:
    with server_process(
        "--framing", "len", "--tls-cert", tls_files["cert"], "--tls-key", tls_files["key"]
    ) as server:
        client = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "shout_client.py"),
                str(server.port),
                "x",
                "--tls",
                tls_files["ca"],
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert client.returncode == 0, client.stderr
    assert client.stdout == "你好欢迎你\nx -> x好\n"


def test_server_example_on_a_busy_port_is_one_line_and_exit_1() -> None:
    with server_process() as busy:
        server = start_server(busy.port)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 1
    assert err == f"shout_server: cannot listen on port {busy.port}: Address already in use\n"
