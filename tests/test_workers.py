"""``--workers N``: real worker processes on one port, and their supervisor.

What the supervisor decides (restarts and their back-off, a failed first
start, hung workers, killing stragglers) is tested in-process on a fake
clock in tests/test_supervisor.py; here, that real processes, pipes and
signals do it: the port keeps answering, workers stop, no orphan is left."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from support.serverproc import ServerProcess, greeted_line_client, recv_exactly, server_process
from support.storm import accepted_connections, tcp_sockets

from trioecho.cli.options import build_parser
from trioecho.services.echo import REPLY_SUFFIX
from trioecho.workers import supervisor as workers
from trioecho.workers.supervisor import reserve_port

WORKER_READY = re.compile(r"trioecho\.workers: worker (\d+) \(pid (\d+)\) ready$")
WORKER_STOPPED = re.compile(
    r"INFO worker (\d+) \[(\d+)\] trioecho\.server: stopped after serving (\d+) connections?"
)


def exchange(port: int, message: bytes = b"hi") -> None:
    """One session: greeting, one echo, ``q``; asserts the exact bytes."""
    with greeted_line_client(port) as sock:
        sock.sendall(message + b"\nq\n")
        expected = message + REPLY_SUFFIX + b"\n"
        assert recv_exactly(sock, len(expected) + 1) == expected


def ready_workers(server: ServerProcess) -> dict[int, int]:
    """worker index -> pid of its latest start, from the supervisor's log."""
    server.wait_for_log("trioecho.workers: 2 workers listening on ")
    pids: dict[int, int] = {}
    for line in list(server.log):
        match = WORKER_READY.search(line)
        if match:
            pids[int(match.group(1))] = int(match.group(2))
    return pids


def connections_by_pid(log: list[str]) -> dict[int, int]:
    served: dict[int, int] = {}
    for line in log:
        match = WORKER_STOPPED.search(line)
        if match:
            served[int(match.group(2))] = int(match.group(3))
    return served


def listening_fds(pid: int) -> list[int]:
    """The supervisor's descriptors of listening TCP sockets (which its workers inherit)."""
    return sorted(fd for fd, state in tcp_sockets(pid).items() if state == "0A")


def gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie waiting for its new parent)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # gone while we read
        return True


def wait_until(condition: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_two_workers_share_the_port_and_drain_on_a_signal(signum: signal.Signals) -> None:
    with server_process("--workers", "2") as server:
        workers = ready_workers(server)
        assert sorted(workers) == [0, 1]
        for index, pid in workers.items():  # started through the Python entry point
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")[:-1]
            assert argv[1:3] == [b"-m", b"trioecho.cli.worker"], argv
            listening = [str(fd).encode() for fd in listening_fds(server.pid)]
            assert argv[4:] == [str(index).encode(), b"0", *listening], argv  # the shared socket
        for number in range(40):
            exchange(server.port, f"message {number}".encode())
        # An open connection with a message in flight when the signal comes.
        sock = greeted_line_client(server.port)
        sock.sendall(b"last\n")
        assert recv_exactly(sock, len(b"last" + REPLY_SUFFIX) + 1) == b"last" + REPLY_SUFFIX + b"\n"
        assert server.stop(signum) == 0
        assert sock.recv(100) == b""  # closed by the worker's graceful shutdown
        sock.close()
    log = "\n".join(server.log)
    served = connections_by_pid(server.log)
    # Both processes served: the kernel spread 41 connections over them.
    assert sorted(served) == sorted(workers.values()), log
    assert all(count >= 1 for count in served.values()), served
    assert sum(served.values()) == 41
    assert f"{signum.name}: stopping all 2 workers" in log
    assert "all 2 workers stopped" in log


def test_killing_a_worker_does_not_interrupt_service() -> None:
    with server_process("--workers", "2") as server:
        victim = ready_workers(server)[0]
        survivor = ready_workers(server)[1]
        # At least 20 connections, and until both workers hold some: the
        # kernel may give a run of them to one worker (accepting is a race).
        held: list[socket.socket] = []
        while len(held) < 20 or not (
            accepted_connections(victim) and accepted_connections(survivor)
        ):
            assert len(held) < 400, "every connection went to one worker"
            held.append(greeted_line_client(server.port))
        on_survivor = accepted_connections(survivor)
        os.kill(victim, signal.SIGKILL)
        server.wait_for_log(f"worker 0 (pid {victim}) killed by SIGKILL", "restarting")
        # The port never stops answering: every new session is served.
        for number in range(30):
            exchange(server.port, f"after {number}".encode())
        # Connections on the survivor go on; the victim's were cut.
        alive = 0
        for sock in held:
            try:
                sock.sendall(b"still\n")
                reply = recv_exactly(sock, len(b"still" + REPLY_SUFFIX) + 1)
            except ConnectionResetError:
                reply = b""
            if reply:
                assert reply == b"still" + REPLY_SUFFIX + b"\n"
                alive += 1
            sock.close()
        assert alive == on_survivor, (alive, on_survivor)  # exactly the survivor's went on
        # The supervisor restarted worker 0, and the new one takes connections.
        wait_until(lambda: ready_workers(server).get(0, victim) != victim)
        replacement = ready_workers(server)[0]
        for number in range(40):
            exchange(server.port, f"later {number}".encode())
        assert server.stop(signal.SIGTERM) == 0
    served = connections_by_pid(server.log)
    assert victim not in served  # it never got to say goodbye
    assert served.get(replacement, 0) >= 1, served
    assert served.get(survivor, 0) >= 1, served


def test_workers_stop_when_the_supervisor_is_killed() -> None:
    with server_process("--workers", "2") as server:
        workers = list(ready_workers(server).values())
        exchange(server.port)
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        for pid in workers:
            wait_until(lambda pid=pid: gone(pid))
    log = "\n".join(server.log)
    assert log.count("the supervisor is gone: shutting down") == 2, log


def test_port_taken_without_reuse_port_is_a_clear_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OSError):
            reserve_port("127.0.0.1", port)
        result = subprocess.run(
            [sys.executable, "-m", "trioecho", "--workers", "2", "--port", str(port)],
            capture_output=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr.decode()


def test_reserve_port_picks_one_port_for_every_address() -> None:
    sockets, port = reserve_port("127.0.0.1", 0)
    try:
        assert port > 0
        assert [s.getsockname() for s in sockets] == [("127.0.0.1", port)]
        # A second reservation joins the same port: that is what workers do.
        again, same = reserve_port("127.0.0.1", port)
        assert same == port
        for sock in again:
            sock.close()
    finally:
        for sock in sockets:
            sock.close()


def test_workers_auto_is_the_cpu_count() -> None:
    args = build_parser().parse_args(["serve", "--workers", "auto"])
    assert args.workers == workers.cpu_count() == len(os.sched_getaffinity(0))


# -- liveness: a stuck worker is replaced, no orphan is left ------------------

FREEZER = {"PYTHONPATH": os.path.join(os.path.dirname(__file__), "support", "freezer")}


def time_until(condition: object, timeout: float, what: str) -> float:
    """Poll ``condition()`` until true; return the seconds it took."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, f"not within {timeout}s: {what}"
        time.sleep(0.02)
    return time.monotonic() - start


def replaced(server: ServerProcess, index: int, old_pid: int) -> bool:
    pids = [
        int(match.group(2))
        for line in list(server.log)
        if (match := WORKER_READY.search(line)) and int(match.group(1)) == index
    ]
    return bool(pids) and pids[-1] != old_pid


def test_a_worker_frozen_in_a_busy_loop_is_killed_and_replaced() -> None:
    with server_process("--workers", "2", "--worker-timeout", "1.5", env=FREEZER) as server:
        pids = ready_workers(server)
        with greeted_line_client(server.port) as sock:
            sock.sendall(b"freeze\n")
            detected = time_until(
                lambda: any("silent for 1.5 s" in line for line in server.log), 10, "detection"
            )
            assert sock.recv(100) == b""  # its connection died with it
        frozen = next(index for index, pid in pids.items() if gone(pid))
        restarted = time_until(lambda: replaced(server, frozen, pids[frozen]), 10, "restart")
        print(f"busy loop: detected after {detected:.2f} s, replaced after {restarted:.2f} s more")
        for n in range(20):
            exchange(server.port, f"after {n}".encode())
        assert server.stop(signal.SIGTERM) == 0


def test_no_worker_outlives_a_killed_supervisor_frozen_or_not() -> None:
    with server_process("--workers", "2", "--grace", "1", env=FREEZER) as server:
        pids = ready_workers(server)
        sock = greeted_line_client(server.port)
        sock.sendall(b"freeze\n")
        time.sleep(0.3)  # one worker is now spinning
        server.process.kill()
        server.process.wait()
        took = time_until(lambda: all(gone(pid) for pid in pids.values()), 10, "orphans gone")
        print(f"supervisor killed: both workers gone after {took:.2f} s")
        sock.close()


def test_a_second_instance_on_a_served_port_is_refused() -> None:
    with server_process("--workers", "2") as server:
        ready_workers(server)
        for options in (["--workers", "2"], []):
            second = subprocess.run(
                [sys.executable, "-m", "trioecho", "--port", str(server.port), *options],
                capture_output=True,
                timeout=30,
            )
            assert second.returncode == 1, options
            assert b"Address already in use" in second.stderr
        exchange(server.port)  # the first is untouched
        assert server.stop(signal.SIGTERM) == 0


def test_the_worker_entry_point_refuses_to_start_without_its_supervisor() -> None:
    """``python -m trioecho.cli.worker`` by hand: a usage line (exit 2); with
    a link that brings no configuration, one line saying so (exit 1)."""
    by_hand = subprocess.run(
        [sys.executable, "-m", "trioecho.cli.worker"], capture_output=True, text=True, timeout=30
    )
    assert by_hand.returncode == 2
    assert by_hand.stderr == (
        "usage: python -m trioecho.cli.worker FD INDEX PORT [LISTEN_FD...] "
        "(started by trioecho serve --workers N)\n"
    )
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall((5).to_bytes(8, "big") + b"junk!")
        ours.shutdown(socket.SHUT_WR)
        bad = subprocess.run(
            [sys.executable, "-m", "trioecho.cli.worker", str(theirs.fileno()), "0", "1"],
            pass_fds=(theirs.fileno(),),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert bad.returncode == 1
    assert bad.stderr.startswith("trioecho worker 0: the supervisor sent no worker configuration: ")
    assert bad.stderr.count("\n") == 1, bad.stderr


def test_the_old_hidden_worker_flags_are_gone() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioecho", "serve", "--worker-index", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --worker-index 0" in result.stderr
