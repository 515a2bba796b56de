"""Real protocol servers for the live tests: PostgreSQL and mosquitto (MQTT),
from the Debian packages ``tools/install-system-deps.sh`` installs, each
started in a temporary directory on a free loopback port and stopped after.
Also a byte tap: a TCP forwarder that records what passes each way."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import trio

INSTALL_HINT = "run `sh tools/install-system-deps.sh` (Debian: postgresql, mosquitto)"


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(command: list[str], log_path: str, **options: Any) -> subprocess.Popen[bytes]:
    """Start a server logging to a file (a pipe nobody reads would fill up)."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=log, **options)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log_path: str) -> None:
    what = os.path.basename(log_path).removesuffix(".log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path, errors="replace") as log:
                output = log.read()
            raise RuntimeError(f"{what} exited with {process.returncode}: {output[-2000:]}")
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within 30 s")


def _stop(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found: {INSTALL_HINT}")
    return found[-1]  # the newest version


@dataclass
class LiveServer:
    port: int
    process: subprocess.Popen[bytes]


@contextmanager
def postgresql_server(tls: tuple[bytes, bytes] | None = None) -> Iterator[LiveServer]:
    """A PostgreSQL server (initdb, trust authentication, user ``postgres``)
    on a free loopback port; as the ``postgres`` system user when run as root,
    since the server refuses to run as root.  ``tls``: its certificate and
    key (PEM bytes): ``ssl = on`` with them."""
    user: dict[str, Any] = {}
    directory = tempfile.mkdtemp(prefix="trioecho-pg-")
    if os.geteuid() == 0:
        user = {"user": "postgres", "group": "postgres", "extra_groups": []}
        shutil.chown(directory, "postgres", "postgres")
    data = os.path.join(directory, "data")
    try:
        subprocess.run(
            [
                _postgres_bin("initdb"),
                "-D",
                data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=directory,
            **user,
        )
        port = free_port()
        log_path = os.path.join(directory, "postgres.log")
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        if tls is not None:
            settings += _postgres_tls(data, *tls)
        process = _start(
            [_postgres_bin("postgres"), "-D", data, "-p", str(port), "-k", directory, *settings],
            log_path,
            cwd=directory,
            **user,
        )
        try:
            _wait_for_port(port, process, log_path)
            yield LiveServer(port, process)
        finally:
            _stop(process, signal.SIGINT)  # fast shutdown
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _pgbouncer_tls(directory: str, cert: bytes, key: bytes) -> str:
    """pgbouncer's client TLS settings, with its files in ``directory``."""
    for name, pem in (("client.crt", cert), ("client.key", key)):
        path = os.path.join(directory, name)
        with open(path, "wb") as file:
            file.write(pem)
        os.chmod(path, 0o600)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")
    return (
        "client_tls_sslmode = require\n"
        f"client_tls_cert_file = {os.path.join(directory, 'client.crt')}\n"
        f"client_tls_key_file = {os.path.join(directory, 'client.key')}\n"
    )


def _postgres_tls(data: str, cert: bytes, key: bytes) -> list[str]:
    """Put the certificate and key in the data directory, owned by the server's
    user, the key readable by it alone (PostgreSQL insists); its settings."""
    for name, pem, mode in (("server.crt", cert, 0o644), ("server.key", key, 0o600)):
        path = os.path.join(data, name)
        with open(path, "wb") as file:
            file.write(pem)
        os.chmod(path, mode)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")
    return ["-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key"]


@contextmanager
def mosquitto_server() -> Iterator[LiveServer]:
    """A mosquitto broker (anonymous, no persistence) on a free loopback port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(binary):
        raise RuntimeError(f"mosquitto not found: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="trioecho-mqtt-") as directory:
        port = free_port()
        config = os.path.join(directory, "mosquitto.conf")
        with open(config, "w") as file:
            file.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        os.chmod(directory, 0o755)
        log_path = os.path.join(directory, "mosquitto.log")
        process = _start([binary, "-c", config], log_path)
        try:
            _wait_for_port(port, process, log_path)
            yield LiveServer(port, process)
        finally:
            _stop(process, signal.SIGTERM)


@dataclass
class TappedConnection:
    up: bytearray = field(default_factory=bytearray)  # client to server
    down: bytearray = field(default_factory=bytearray)
    closed: trio.Event = field(default_factory=trio.Event)  # both ways ended


class ByteTap:
    """Forwards each loopback TCP connection to ``target_port`` byte for byte,
    recording both directions (``connections``, in the order they came)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections: list[TappedConnection] = []

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._forward, listeners)

    async def _forward(self, client: trio.SocketStream) -> None:
        tapped = TappedConnection()
        self.connections.append(tapped)
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
            async with client, server, trio.open_nursery() as nursery:
                nursery.start_soon(self._copy, client, server, tapped.up)
                nursery.start_soon(self._copy, server, client, tapped.down)
        finally:
            tapped.closed.set()

    async def wait_closed(self, count: int) -> None:
        """Wait until ``count`` connections came and all have ended both ways."""
        while len(self.connections) < count:
            await trio.sleep(0.01)
        for tapped in self.connections:
            await tapped.closed.wait()

    @staticmethod
    async def _copy(source: trio.SocketStream, sink: trio.SocketStream, record: bytearray) -> None:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(65536):
                record += data
                await sink.send_all(data)
            await sink.send_eof()


@contextmanager
def pgbouncer_server(
    upstream_port: int, *, pool_size: int = 64, tls: tuple[bytes, bytes] | None = None
) -> Iterator[LiveServer]:
    """pgbouncer (Debian's) in session pooling in front of a PostgreSQL on
    ``upstream_port``, trust authentication, on a free loopback port; as the
    ``postgres`` system user when run as root (pgbouncer refuses root).
    ``tls``: its certificate and key (PEM bytes), and clients must use TLS
    (``client_tls_sslmode = require``)."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        raise RuntimeError("pgbouncer not found: run `sh tools/install-system-deps.sh`")
    user: dict[str, Any] = {}
    directory = tempfile.mkdtemp(prefix="trioecho-pgbouncer-")
    if os.geteuid() == 0:
        user = {"user": "postgres", "group": "postgres", "extra_groups": []}
        shutil.chown(directory, "postgres", "postgres")
    try:
        port = free_port()
        config = os.path.join(directory, "pgbouncer.ini")
        users = os.path.join(directory, "userlist.txt")
        with open(users, "w") as file:
            file.write('"postgres" ""\n')
        with open(config, "w") as file:
            file.write(
                "[databases]\n"
                f"* = host=127.0.0.1 port={upstream_port}\n"
                "[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
                f"unix_socket_dir = {directory}\n"
                f"auth_type = trust\nauth_file = {users}\n"
                "pool_mode = session\n"
                f"default_pool_size = {pool_size}\nmax_client_conn = 1000\n"
                "ignore_startup_parameters = extra_float_digits\n"
            )
            if tls is not None:
                file.write(_pgbouncer_tls(directory, *tls))
        if user:
            shutil.chown(config, "postgres", "postgres")
            shutil.chown(users, "postgres", "postgres")
        log_path = os.path.join(directory, "pgbouncer.log")
        process = _start([binary, config], log_path, cwd=directory, **user)
        try:
            _wait_for_port(port, process, log_path)
            yield LiveServer(port, process)
        finally:
            _stop(process, signal.SIGINT)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
