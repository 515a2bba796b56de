"""Started as systemd starts it: sockets from the real ``systemd-socket-activate``
(LISTEN_FDS, LISTEN_FDNAMES), ``--fd``, and notifications (READY, RELOADING,
STOPPING, WATCHDOG) read from a real ``NOTIFY_SOCKET`` datagram socket; the
command run is the one the shipped unit file shows."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.serverproc import recv_exactly

from trioecho.services.echo import GREETING, REPLY_SUFFIX
from trioecho.workers.systemd import Notifier, inherited_sockets

UNITS = Path(__file__).resolve().parent.parent / "docs" / "systemd"
ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(UNITS / name)
    return parser


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Notifications:
    """A NOTIFY_SOCKET: the datagrams a service sends, as dicts."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(self.path)
        self.socket.settimeout(15)

    def next(self) -> dict[str, str]:
        data = self.socket.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n") if line)

    def wait_for(self, key: str) -> dict[str, str]:
        while True:
            message = self.next()
            if key in message:
                return message


@contextmanager
def activated(
    tmp_path: Path, *options: str, port: int, fdname: str = "echo", watchdog_usec: int = 0
) -> Iterator[tuple[subprocess.Popen[bytes], Notifications]]:
    notifications = Notifications(tmp_path / "notify.sock")
    command = [ACTIVATE, "-l", f"127.0.0.1:{port}", f"--fdname={fdname}"]
    command += ["-E", f"NOTIFY_SOCKET={notifications.path}", "-E", "PYTHONPATH"]
    if watchdog_usec:
        command += ["-E", f"WATCHDOG_USEC={watchdog_usec}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [*command, sys.executable, "-m", "trioecho", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 10
        # The first connection makes systemd-socket-activate exec the service.
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
        yield process, notifications
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        notifications.socket.close()


def greeted_exchange(port: int, message: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert recv_exactly(sock, len(GREETING) + 1) == GREETING + b"\n"
        sock.sendall(message + b"\n")
        return recv_exactly(sock, len(message) + len(REPLY_SUFFIX) + 1)


def shipped_command() -> list[str]:
    """The trioecho options of the shipped unit's ExecStart."""
    exec_start = shlex.split(unit("trioecho.service")["Service"]["ExecStart"])
    assert exec_start[0].endswith("/trioecho"), exec_start
    return exec_start[1:]


def test_the_shipped_units_say_what_the_tests_run() -> None:
    service, sock = unit("trioecho.service"), unit("trioecho.socket")
    assert service["Service"]["Type"] == "notify"
    assert service["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "WatchdogSec" in service["Service"]
    assert sock["Socket"]["ListenStream"] == "127.0.0.1:9999"
    name = sock["Socket"]["FileDescriptorName"]
    options = shipped_command()
    assert options[options.index("--fd") + 1] == name


def test_systemd_socket_activate_serves_the_shipped_command(tmp_path: Path) -> None:
    port = free_port()
    name = unit("trioecho.socket")["Socket"]["FileDescriptorName"]
    with activated(tmp_path, *shipped_command(), port=port, fdname=name) as (process, notes):
        ready = notes.wait_for("READY")
        assert ready["READY"] == "1"
        assert ready["STATUS"] == "serving with 2 workers"
        assert int(ready["MAINPID"]) == process.pid  # the supervisor: exec'd in place
        for n in range(20):
            message = f"activated {n}".encode()
            assert greeted_exchange(port, message) == message + REPLY_SUFFIX + b"\n"
        process.send_signal(signal.SIGHUP)  # systemctl reload
        assert notes.wait_for("RELOADING")["RELOADING"] == "1"
        assert notes.wait_for("READY")["READY"] == "1"
        assert greeted_exchange(port, b"reloaded") == b"reloaded" + REPLY_SUFFIX + b"\n"
        process.send_signal(signal.SIGTERM)
        assert notes.wait_for("STOPPING")["STOPPING"] == "1"
        assert process.wait(timeout=30) == 0
        log = process.stderr.read().decode()  # type: ignore[union-attr]
    assert f"systemd socket {name} (fd 3): 127.0.0.1:{port}" in log
    assert "2 workers listening on" in log


def test_one_process_notifies_and_feeds_the_watchdog(tmp_path: Path) -> None:
    port = free_port()
    with activated(tmp_path, "serve", port=port, watchdog_usec=200_000) as (process, notes):
        assert notes.wait_for("READY")["STATUS"] == "serving"
        fed = []
        for _ in range(3):
            notes.wait_for("WATCHDOG")
            fed.append(time.monotonic())
        assert greeted_exchange(port, b"watched") == b"watched" + REPLY_SUFFIX + b"\n"
        process.send_signal(signal.SIGTERM)
        assert notes.wait_for("STOPPING")["STOPPING"] == "1"
        assert process.wait(timeout=30) == 0
    assert fed[2] - fed[0] < 2.0  # every 0.1 s (half WATCHDOG_USEC), not once


def test_fd_serves_an_inherited_socket(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with listener:
        process = subprocess.Popen(
            [sys.executable, "-m", "trioecho", "serve", "--fd", str(listener.fileno())],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(listener.fileno(),),
        )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().decode() == f"listening on 127.0.0.1:{port}\n"
        assert greeted_exchange(port, b"inherited") == b"inherited" + REPLY_SUFFIX + b"\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--fd", "0"], "--fd 0: file descriptor 0 is not a socket"),
        (["--fd", "97"], "--fd 97: Bad file descriptor"),
        (
            ["--fd", "web"],
            "--fd web: systemd passed no socket of that name (LISTEN_FDNAMES: none)",
        ),
        (
            ["--fd", "0", "--port", "8000"],
            "--host, --port and --uds do not apply: it serves on --fd",
        ),
    ],
)
def test_fd_mistakes(options: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioecho", "serve", *options],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"trioecho serve: error: {message}"


def test_fd_refuses_a_socket_that_is_not_listening() -> None:
    with socket.socket() as unbound:
        fd = unbound.fileno()
        result = subprocess.run(
            [sys.executable, "-m", "trioecho", "serve", "--fd", str(fd)],
            capture_output=True,
            text=True,
            timeout=30,
            pass_fds=(fd,),
        )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"trioecho serve: error: --fd {fd}: file descriptor {fd} is a socket that is not listening"
    )


def test_listen_fds_for_another_process_are_ignored_and_removed() -> None:
    environ = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "echo"}
    assert inherited_sockets(environ) == []
    assert environ == {}
    with pytest.raises(ValueError, match=r"^LISTEN_PID='x' and LISTEN_FDS='1' must be numbers$"):
        inherited_sockets({"LISTEN_PID": "x", "LISTEN_FDS": "1"})
    mismatch = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"}
    with pytest.raises(ValueError, match=r"^LISTEN_FDNAMES names 1 sockets, LISTEN_FDS=2$"):
        inherited_sockets(mismatch)


def test_a_notifier_without_notify_socket_does_nothing_and_honours_watchdog_pid() -> None:
    silent = Notifier({})
    assert not silent.enabled
    silent.ready("serving")  # nothing to send to: no error
    other = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.address == "\0x" and other.watchdog_interval is None
    ours = Notifier(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert ours.watchdog_interval == 0.5
    for notifier in (other, ours):
        notifier.close()
