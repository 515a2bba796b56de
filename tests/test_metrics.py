"""``--metrics``: Prometheus exposition checked by the real ``promtool``,
scraped while clients load a real server process (one process, and
``--workers`` aggregated by the supervisor), the figures against what the
clients counted; close reasons; ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.serverproc import ServerProcess, recv_exactly

from trioecho.reasons import CLOSE_REASONS
from trioecho.services.echo import GREETING, REPLY_SUFFIX
from trioecho.workers.link import HEARTBEAT_INTERVAL
from trioecho.workers.metrics import MAX_SCRAPERS, REQUEST_TIMEOUT, metrics_registry

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fetch(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(port: int) -> dict[str, float]:
    """``name{labels}`` -> value; the text must pass ``promtool check metrics``."""
    status, body = fetch(port, "/metrics")
    assert status == 200
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout + check.stderr == b"", check.stdout + check.stderr  # not even a warning
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return values


class Clients:
    """``threads`` clients, each running ``sessions`` sessions of
    ``messages`` echoes then ``q``, counting every message and byte each way
    as it goes.  In the middle of session ``pause_at`` (greeted, its echoes
    done, ``q`` not sent) each client waits for :meth:`resume`: the test
    scrapes a server under load, with every client's connection open."""

    def __init__(
        self,
        port: int,
        threads: int = 8,
        sessions: int = 40,
        messages: int = 5,
        pause_at: int | None = None,
    ):
        self.port, self.sessions, self.messages = port, sessions, messages
        self.pause_at = pause_at
        self.lock = threading.Lock()
        self.done_sessions = self.sent_messages = self.received_messages = 0
        self.sent_bytes = self.received_bytes = 0
        self.paused = threading.Semaphore(0)
        self._resume = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self, number: int) -> None:
        try:
            for session in range(self.sessions):
                self._session(f"client {number} session {session}", session == self.pause_at)
        except BaseException as exc:
            self.errors.append(exc)
            self.paused.release()

    def _count(self, sent: bytes = b"", received: bytes = b"") -> None:
        with self.lock:
            self.sent_messages += bool(sent)
            self.sent_bytes += len(sent)
            self.received_messages += bool(received)
            self.received_bytes += len(received)

    def _session(self, name: str, pause: bool) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            self._count(received=recv_exactly(sock, len(GREETING) + 1))
            for n in range(self.messages):
                message = f"{name} message {n}".encode() + b"\n"
                sock.sendall(message)
                self._count(sent=message)
                expected = message[:-1] + REPLY_SUFFIX + b"\n"
                assert recv_exactly(sock, len(expected)) == expected
                self._count(received=expected)
            if pause:
                self.paused.release()
                assert self._resume.wait(30)
            sock.sendall(b"q\n")
            self._count(sent=b"q\n")
            assert sock.recv(10) == b""
        with self.lock:
            self.done_sessions += 1

    def wait_paused(self) -> None:
        for _ in self.threads:
            assert self.paused.acquire(timeout=30)
        assert self.errors == []

    def resume(self) -> None:
        self._resume.set()

    def join(self) -> Clients:
        self.resume()
        for thread in self.threads:
            thread.join(timeout=60)
        assert self.errors == []
        return self


def settled(port: int, clients: Clients, open_connections: int = 0) -> dict[str, float]:
    """Scrape until the figures match the clients' (workers report theirs
    with their heartbeats, every HEARTBEAT_INTERVAL); the last scrape."""
    deadline = time.monotonic() + 10 * HEARTBEAT_INTERVAL + 5
    while True:
        values = scrape(port)
        if (
            values["trioecho_sent_bytes_total"] == clients.received_bytes
            and values["trioecho_received_bytes_total"] == clients.sent_bytes
            and values["trioecho_connections_open"] == open_connections
        ) or time.monotonic() > deadline:
            return values
        time.sleep(0.1)


def assert_figures_match(values: dict[str, float], clients: Clients, open_now: int = 0) -> None:
    assert values["trioecho_connections_total"] == clients.done_sessions + open_now
    assert values['trioecho_connections_closed_total{reason="stop_message"}'] == (
        clients.done_sessions
    )
    assert values["trioecho_connections_open"] == open_now
    assert values["trioecho_messages_received_total"] == clients.sent_messages
    assert values["trioecho_messages_sent_total"] == clients.received_messages
    assert values["trioecho_received_bytes_total"] == clients.sent_bytes
    assert values["trioecho_sent_bytes_total"] == clients.received_bytes
    if not open_now:
        assert values["trioecho_memory_budget_used_bytes"] == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_scraped_during_load_the_figures_match_the_clients(workers: str) -> None:
    metrics = free_port()
    server = ServerProcess("--workers", workers, "--metrics", str(metrics))
    try:
        server.wait_for_log("metrics on http://127.0.0.1:")
        clients = Clients(server.port, pause_at=20)
        clients.wait_paused()  # under load: 8 connections open, 20 sessions each done
        during = settled(metrics, clients, open_connections=8)  # promtool checks each scrape
        assert_figures_match(during, clients, open_now=8)
        assert during["trioecho_connections_total"] == 8 * 21
        clients.join()
        values = settled(metrics, clients)
        assert_figures_match(values, clients)
        assert values["trioecho_connections_total"] == 8 * 40
        assert values["trioecho_memory_budget_limit_bytes"] == int(workers) * (192 << 20)
        if workers == "2":
            assert values["trioecho_workers"] == 2
            assert values["trioecho_reloads_total"] == 0
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_the_supervisor_keeps_the_totals_of_workers_reloaded_or_killed() -> None:
    metrics = free_port()
    server = ServerProcess("--workers", "2", "--metrics", str(metrics))
    try:
        server.wait_for_log("2 workers listening on")
        first = Clients(server.port, threads=4, sessions=20).join()
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("reload 1 done")
        values = settled(metrics, first)
        assert_figures_match(values, first)  # the retired workers' figures stayed
        assert values["trioecho_reloads_total"] == 1
        ready_lines = [line for line in server.log if line.endswith(") ready")]
        victim = int(ready_lines[-1].split("(pid ")[1].split(")")[0])
        time.sleep(2 * HEARTBEAT_INTERVAL)  # every live worker has reported its figures
        subprocess.run(["kill", "-KILL", str(victim)], check=True)
        server.wait_for_log(f"(pid {victim}) killed by SIGKILL", "restarting")
        deadline = time.monotonic() + 10
        while scrape(metrics)["trioecho_worker_restarts_total"] < 1:
            assert time.monotonic() < deadline, "no restart counted"
            time.sleep(0.1)
        values = scrape(metrics)
        assert values["trioecho_connections_total"] == first.done_sessions  # nothing lost
        assert values["trioecho_worker_restarts_total"] == 1
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_closes_are_counted_by_reason() -> None:
    metrics = free_port()
    server = ServerProcess(
        "--metrics", str(metrics), "--idle-timeout", "0.3", "--framing", "len", "--max-frame", "64"
    )
    greeting = len(GREETING) + 4
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as peer_closes:
            recv_exactly(peer_closes, greeting)
        with socket.create_connection(("127.0.0.1", server.port)) as idle:
            recv_exactly(idle, greeting)
            assert idle.recv(10) == b""  # closed after 0.3 s without a message
        with socket.create_connection(("127.0.0.1", server.port)) as too_long:
            recv_exactly(too_long, greeting)
            too_long.sendall((1000).to_bytes(4, "big"))  # over --max-frame 64
            assert too_long.recv(1000) == b""  # closed at once
        deadline = time.monotonic() + 10
        while True:
            values = scrape(metrics)
            closed = {
                key.split('"')[1]: value
                for key, value in values.items()
                if key.startswith("trioecho_connections_closed_total")
            }
            if sum(closed.values()) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert {reason for reason, count in closed.items() if count} == {
            "peer_closed",
            "idle",
            "framing_error",
        }
        assert closed["peer_closed"] == closed["idle"] == closed["framing_error"] == 1
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_every_close_reason_is_a_label_and_a_handlers_own_is_other() -> None:
    """Every CloseReason is a ``reason`` label, ``other`` (a handler's own
    reasons) included, 0 until counted; promtool accepts the text."""
    body = generate_latest(metrics_registry(lambda: {"closed": {"other": 2, "idle": 1}}))
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert (check.returncode, check.stdout + check.stderr) == (0, b"")
    closed = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "trioecho_connections_closed_total"
    }
    assert list(closed) == list(CLOSE_REASONS)
    assert {reason: count for reason, count in closed.items() if count} == {"idle": 1, "other": 2}


def test_healthz_and_readyz_and_a_draining_server() -> None:
    """On SIGTERM /readyz answers 503 at once while the server goes on
    accepting for --drain-delay; then it stops accepting, and the connection
    it holds is served on until its client ends it (within --grace)."""
    metrics = free_port()
    server = ServerProcess("--metrics", str(metrics), "--grace", "30", "--drain-delay", "1")
    try:
        assert fetch(metrics, "/healthz") == (200, b"ok\n")
        assert fetch(metrics, "/readyz") == (200, b"ready\n")
        assert fetch(metrics, "/metrics", "HEAD")[1] == b""
        assert fetch(metrics, "/nothing") == (
            404,
            b"not found: try /metrics, /healthz or /readyz\n",
        )
        assert fetch(metrics, "/metrics", "POST") == (405, b"method not allowed\n")
        held = socket.create_connection(("127.0.0.1", server.port))
        recv_exactly(held, len(GREETING) + 1)
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_log(
            "draining: not ready; accepting for 1.0 s more, "
            "then 1 connections may run on for 30.0 s"
        )
        assert fetch(metrics, "/readyz") == (503, b"not ready: draining\n")
        assert fetch(metrics, "/healthz") == (200, b"ok\n")
        with socket.create_connection(("127.0.0.1", server.port)) as late:  # still accepting
            assert recv_exactly(late, len(GREETING) + 1) == GREETING + b"\n"
            late.sendall(b"q\n")
        with pytest.raises(ConnectionRefusedError):  # after the delay: closed
            for _ in range(100):
                socket.create_connection(("127.0.0.1", server.port)).close()
                time.sleep(0.05)
        held.sendall(b"still here\n")  # idle through the delay, served on
        assert recv_exactly(held, 14) == "still here好\n".encode()
        held.sendall(b"q\n")
        assert server.wait() == 0
        server.wait_for_log("shutting down: 0 connections finishing")
    finally:
        server.close()


def test_silent_scrapers_do_not_hold_the_endpoint() -> None:
    metrics = free_port()
    server = ServerProcess("--metrics", str(metrics))
    try:
        silent = [socket.create_connection(("127.0.0.1", metrics)) for _ in range(MAX_SCRAPERS)]
        extra = socket.create_connection(("127.0.0.1", metrics))
        extra.settimeout(10)
        assert extra.recv(10) == b""  # over MAX_SCRAPERS: closed at once
        server.wait_for_log(f"metrics: {MAX_SCRAPERS} scrapers connected already")
        silent[0].settimeout(REQUEST_TIMEOUT + 5)
        started = time.monotonic()
        assert silent[0].recv(10) == b""  # no request within REQUEST_TIMEOUT: closed
        assert time.monotonic() - started < REQUEST_TIMEOUT + 2
        assert fetch(metrics, "/healthz") == (200, b"ok\n")  # the endpoint serves again
        for sock in [*silent, extra]:
            sock.close()
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "argument --metrics: not [HOST:]PORT: 'x'"),
        ("host:", "argument --metrics: not [HOST:]PORT: 'host:'"),
    ],
)
def test_metrics_option_mistakes(value: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioecho", "serve", "--metrics", value],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(f"trioecho serve: error: {message}")


def test_metrics_on_the_service_port_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioecho", "serve", "--port", "9100", "--metrics", "9100"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "trioecho serve: error: --metrics 127.0.0.1:9100: that is the service's own port"
    )
