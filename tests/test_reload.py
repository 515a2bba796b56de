"""``--workers N`` as operators run it: one listening socket shared by every
worker, rolling reloads on SIGHUP, SIGTTIN/SIGTTOU, and workers killed or
stopped during a connection storm (16 client threads), on real processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import trustme
from support.serverproc import Canary, ServerProcess, greeted_line_client, recv_exactly
from support.storm import Storm, accepted_connections

from trioecho.services.echo import GREETING, REPLY_SUFFIX

READY = re.compile(r"trioecho\.workers: worker (\d+) \(pid (\d+)\) ready$")


def serving_workers(server: ServerProcess) -> dict[int, int]:
    """Slot -> pid of the worker started last in it, from the supervisor's log."""
    pids: dict[int, int] = {}
    for line in list(server.log):
        if match := READY.search(line):
            pids[int(match.group(1))] = int(match.group(2))
    return pids


def children(pid: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return {int(child) for child in found.stdout.split()}


def wait_until(condition: object, timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.02)


def started(*options: str) -> ServerProcess:
    server = ServerProcess("--workers", "2", *options)
    server.wait_for_log("trioecho.workers: 2 workers listening on")
    return server


def test_the_workers_share_one_listening_socket() -> None:
    server = started()
    try:
        pids = serving_workers(server)
        assert server.log[-1].endswith(
            f"2 workers listening on 127.0.0.1:{server.port} (one shared socket)"
        )
        listening = subprocess.run(
            ["ss", "-ltnpH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert len(listening) == 1, listening  # one socket, held by all three processes
        for pid in (server.pid, *pids.values()):
            assert f"pid={pid}," in listening[0], listening
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_three_reloads_during_a_storm_refuse_and_reset_nothing() -> None:
    server = started("--grace", "30")
    try:
        before = serving_workers(server)
        long_lived = Canary(server.port)  # connected before the reloads, served by an old worker
        storm = Storm(server.port)
        time.sleep(0.5)
        for reload in (1, 2, 3):
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_log(f"trioecho.workers: reload {reload} done: 2 workers serving")
            time.sleep(0.3)
        time.sleep(0.5)
        storm.stop()
        print(f"3 reloads during the storm: {storm}")
        assert (storm.refused, storm.reset, storm.cut, storm.timed_out) == (0, 0, 0, 0), storm
        assert storm.errors == []
        assert storm.greeted > 100
        after = serving_workers(server)
        assert sorted(after) == [0, 1]
        assert not set(after.values()) & set(before.values())
        assert children(server.pid) >= set(after.values())
        long_lived.check()  # answered through all three reloads, then it leaves
        wait_until(lambda: sum("retired, exited with code 0" in line for line in server.log) == 6)
        assert children(server.pid) == set(after.values())
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_a_killed_worker_resets_only_the_connections_it_had_accepted() -> None:
    server = started()
    try:
        pids = serving_workers(server)
        storm = Storm(server.port)
        time.sleep(1)
        os.kill(pids[0], signal.SIGSTOP)  # frozen: it accepts nothing more
        accepted = accepted_connections(pids[0])
        os.kill(pids[0], signal.SIGKILL)
        server.wait_for_log(f"worker 0 (pid {pids[0]}) killed by SIGKILL")
        wait_until(lambda: serving_workers(server)[0] != pids[0], what="a new worker 0")
        time.sleep(0.5)
        storm.stop()
        print(f"SIGKILL of a worker holding {accepted} accepted connections: {storm}")
        assert storm.refused == 0
        assert storm.reset + storm.cut <= accepted, storm
        assert storm.timed_out == 0 and storm.errors == []
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_a_stopped_worker_leaves_the_other_accepting() -> None:
    server = started("--worker-timeout", "30")
    try:
        pids = serving_workers(server)
        storm = Storm(server.port)
        time.sleep(1)
        os.kill(pids[0], signal.SIGSTOP)
        time.sleep(3)
        os.kill(pids[0], signal.SIGCONT)
        time.sleep(0.5)
        storm.stop()
        print(f"SIGSTOP of one of two workers for 3 s: {storm}")
        assert storm.waited_longer_than(0.5) <= 2, storm
        assert (storm.refused, storm.reset, storm.cut, storm.timed_out) == (0, 0, 0, 0), storm
        assert serving_workers(server)[0] == pids[0]  # resumed, never replaced
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


def test_sigttin_adds_a_worker_and_sigttou_retires_it() -> None:
    """Real SIGTTIN and SIGTTOU: a third process serves, then retires and
    exits 0; a connection held throughout is answered.  Which slot retires,
    and never the last: tests/test_supervisor.py."""
    server = started()
    try:
        with greeted_line_client(server.port) as client:
            server.process.send_signal(signal.SIGTTIN)
            server.wait_for_log("SIGTTIN: adding worker 2 (3 workers)")
            wait_until(lambda: 2 in serving_workers(server), what="worker 2")
            wait_until(lambda: len(children(server.pid)) == 3)
            added = serving_workers(server)[2]
            server.process.send_signal(signal.SIGTTOU)
            server.wait_for_log("SIGTTOU: retiring worker 2 (2 workers)")
            server.wait_for_log(f"worker 2 (pid {added}), retired, exited with code 0")
            client.sendall(b"still here\n")  # whichever worker had it
            expected = b"still here" + REPLY_SUFFIX + b"\n"
            assert recv_exactly(client, len(expected)) == expected
        wait_until(lambda: len(children(server.pid)) == 2)
        assert server.stop(signal.SIGTERM) == 0
        assert server.log[-1].endswith("all 2 workers stopped")
    finally:
        server.close()


def _write_cert(ca: trustme.CA, directory: Path) -> tuple[str, str]:
    issued = ca.issue_cert("127.0.0.1")
    cert, key = directory / "cert.pem", directory / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def _greeted_over_tls(port: int, ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    tcp = socket.create_connection(("127.0.0.1", port), timeout=10)
    # wrap_socket raises if the certificate is not one ``ca`` issued
    with context.wrap_socket(tcp, server_hostname="127.0.0.1") as sock:
        assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"


def test_a_reload_reads_the_new_certificate_and_a_broken_one_keeps_the_old_workers(
    tmp_path: Path,
) -> None:
    old_ca, new_ca = trustme.CA(), trustme.CA()
    cert, key = _write_cert(old_ca, tmp_path)
    server = started("--tls-cert", cert, "--tls-key", key)
    try:
        _greeted_over_tls(server.port, old_ca)
        _write_cert(new_ca, tmp_path)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("reload 1 done: 2 workers serving")
        for _ in range(6):  # every worker serves the new certificate
            _greeted_over_tls(server.port, new_ca)
        serving = serving_workers(server)
        (tmp_path / "key.pem").write_text("not a key")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(
            "reload stopped: the new worker 0",
            "failed to start (exited with code 1)",
            "the old workers go on serving",
        )
        assert serving_workers(server) == serving
        for _ in range(6):
            _greeted_over_tls(server.port, new_ca)
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.close()


@pytest.mark.parametrize("reuse_port", [False, True])
def test_both_listening_modes_spread_connections_over_the_workers(reuse_port: bool) -> None:
    server = started(*(["--reuse-port"] if reuse_port else []))
    try:
        mode = "SO_REUSEPORT" if reuse_port else "one shared socket"
        assert server.log[-1].endswith(f"({mode})")
        storm = Storm(server.port, threads=8)
        time.sleep(1.5)
        storm.stop()
        assert server.stop(signal.SIGTERM) == 0
        served = [
            int(match.group(1))
            for line in server.log
            if (match := re.search(r"stopped after serving (\d+) connections?", line))
        ]
        print(f"{mode}: {storm.greeted} sessions, per worker {served}")
        assert sum(served) == storm.greeted
        assert len(served) == 2
    finally:
        server.close()
