"""Several hosts on one machine: network namespaces on a bridge, trioecho in
each, HAProxy in front of them and one Prometheus watching them all.

A :class:`Lan` is a Linux bridge in the root namespace with a random /24
``10.R.S.0/24`` that no route of this machine covers; the root namespace
is ``.1`` on it, so the test process, HAProxy's clients and Prometheus (all
in the root namespace) reach every host directly.  Each host (``.11``,
``.12``, ...) and the HAProxy namespace (``.5``) hang on the bridge by a veth
pair: ``eth0`` inside the namespace, the other end on the bridge.  Setting
that root-side end down is a partition: the host's packets vanish, nobody
gets a reset.

A :class:`TrioechoHost` is ``trioecho serve --workers 2`` in one host's
namespace, behind the PROXY protocol, with its metrics on the host's own
address.  :class:`HAProxy` runs ``docs/deploy/haproxy.cfg`` in the HAProxy
namespace, with an admin socket to read its view of the servers;
:class:`Prometheus` runs ``docs/deploy/prometheus.yml`` (copied beside the
targets file it reads).

What a host held when it died or was cut off is read from its kernel
(:class:`Probe`, :func:`held_through_death`): the ``trioecho_connections_open``
metric is a snapshot the workers send every 0.5 s, of the connections they
accepted, so it misses a short session begun a moment ago and the connections
still queued on the listening socket, which die with the host too.

Needs root and iproute2.  Names are random per Lan, so parallel runs and
leftovers of a killed run never collide.  Whatever runs in a namespace is
killed when the Lan is deleted: a trioecho host's workers run in sessions of
their own, so killing one process group is not enough, and
:meth:`Lan.kill_all` kills every process in the namespace instead.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import io
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from support.netns import why_no_namespaces

__all__ = [
    "DEPLOY",
    "METRICS_PORT",
    "SERVICE_PORT",
    "HAProxy",
    "Lan",
    "Netns",
    "Prometheus",
    "TrioechoHost",
    "why_no_namespaces",
]

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy"
SERVICE_PORT = 9999  # trioecho's port on every host, as in docs/deploy/haproxy.cfg
METRICS_PORT = 9100  # its --metrics port: /metrics, /readyz (HAProxy's check port)
HOST_OFFSET = 11  # the first host is .11
HAPROXY_OFFSET = 5


def run(*command: str, timeout: float = 30) -> str:
    """Run ``command``; its standard output.  RuntimeError (with its
    standard error) if it fails."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def free_subnet() -> str:
    """A random ``10.R.S`` (R in 64..250) whose /24 overlaps no IPv4 route
    of the root namespace (a Lan of another run has one)."""
    taken = []
    for line in run("ip", "-4", "route", "show", "table", "all").splitlines():
        for word in line.split()[:2]:  # "10.1.0.0/16 dev ...", "blackhole 10.2.0.0/16"
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.ip_network(word, strict=False))
                break
    for _ in range(1000):
        prefix = f"10.{secrets.choice(range(64, 251))}.{secrets.randbelow(256)}"
        network = ipaddress.ip_network(f"{prefix}.0/24")
        if not any(network.overlaps(route) for route in taken):
            return prefix
    raise RuntimeError("no free 10.R.S.0/24 subnet")


@dataclass(frozen=True)
class Netns:
    """One namespace on the Lan: its name, its address, and the name of its
    veth's root-side end (on the bridge)."""

    name: str
    address: str
    root_link: str

    def exec_prefix(self) -> list[str]:
        """The command line prefix that runs a program in this namespace."""
        return ["ip", "netns", "exec", self.name]


class Lan:
    """A bridge, ``hosts`` host namespaces and one HAProxy namespace;
    :meth:`create` makes them, :meth:`delete` removes them."""

    def __init__(self, hosts: int) -> None:
        self.token = secrets.token_hex(3)
        self.bridge = f"tebr{self.token}"  # at most 15 characters
        self.prefix = ""  # 10.R.S, chosen by create()
        self.size = hosts
        self.hosts: list[Netns] = []
        self.haproxy: Netns | None = None
        self._namespaces: list[str] = []
        self._links: list[str] = []

    @property
    def root_address(self) -> str:
        """The root namespace's address on the bridge."""
        return f"{self.prefix}.1"

    def create(self) -> None:
        """Make the bridge and every namespace, link and address them, bring
        everything up.  RuntimeError (with ``ip``'s message) if the kernel
        refuses; whatever was made is removed by :meth:`delete`."""
        self.prefix = free_subnet()
        run("ip", "link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        run("ip", "addr", "add", f"{self.root_address}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        self.haproxy = self._join(f"trioecho-lb-{self.token}", f"te{self.token}lb", HAPROXY_OFFSET)
        for index in range(self.size):
            self.hosts.append(
                self._join(
                    f"trioecho-h{index + 1}-{self.token}",
                    f"te{self.token}h{index + 1}",
                    HOST_OFFSET + index,
                )
            )

    def _join(self, namespace: str, root_link: str, offset: int) -> Netns:
        run("ip", "netns", "add", namespace)
        self._namespaces.append(namespace)
        run(
            "ip", "link", "add", root_link, "type", "veth",
            "peer", "name", "eth0", "netns", namespace,
        )  # fmt: skip
        self._links.append(root_link)
        address = f"{self.prefix}.{offset}"
        run("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "-n", namespace, "link", "set", "eth0", "up")
        run("ip", "-n", namespace, "link", "set", "lo", "up")
        run("ip", "link", "set", root_link, "master", self.bridge, "up")
        return Netns(namespace, address, root_link)

    def partition(self, host: Netns) -> None:
        """Cut ``host`` off: its bridge port goes down, its packets vanish."""
        run("ip", "link", "set", host.root_link, "down")

    def heal(self, host: Netns) -> None:
        """Join ``host`` again after :meth:`partition`."""
        run("ip", "link", "set", host.root_link, "up")

    @staticmethod
    def pids(namespace: str) -> list[int]:
        """The processes running in ``namespace`` (none if it is gone)."""
        done = subprocess.run(
            ["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=30
        )
        return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []

    @classmethod
    def kill_all(cls, namespace: str, spare: Collection[int] = ()) -> None:
        """SIGKILL every process in ``namespace`` but those in ``spare``;
        never raises."""
        for pid in cls.pids(namespace):
            if pid not in spare:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def delete(self) -> None:
        """Kill whatever runs in the namespaces, remove them, their links and
        the bridge; never raises."""
        for namespace in self._namespaces:
            self.kill_all(namespace)
        for namespace in self._namespaces:  # a namespace's end of a veth goes with it
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        for link in reversed(self._links):  # gone already unless a namespace stayed
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)
        self._namespaces.clear()
        self._links.clear()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition as ``{'name{labels}': value}``."""
    figures = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            figures[name] = float(value)
    return figures


def http_get(address: str, port: int, path: str, timeout: float = 2) -> tuple[int, bytes]:
    """GET ``path`` from ``address``:``port``: the status and body (OSError
    if it cannot connect).  No proxy, whatever the environment says."""
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _wait_for_line(
    path: Path, pattern: re.Pattern[str], process: subprocess.Popen[bytes], timeout: float
) -> re.Match[str]:
    """The first match of ``pattern`` in the file ``path`` (written by
    ``process``); RuntimeError if the process exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        match = pattern.search(path.read_text(errors="replace"))
        if match:
            return match
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args!r} did not start: exit {process.poll()}")
        time.sleep(0.05)


# Run in a namespace by Probe: make a sock_diag netlink socket there, pass it
# back over the inherited unix socket (SCM_RIGHTS), then idle: the process
# keeps /proc/PID/net (the namespace's counters) readable.
_PROBE = """
import socket, sys, time
diag = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4)  # NETLINK_SOCK_DIAG
socket.send_fds(socket.socket(fileno=int(sys.argv[1])), [b"d"], [diag.fileno()])
while True:
    time.sleep(3600)
"""
# TCP states (include/net/tcp_states.h) and the sock_diag request.
_SYN_RECV, _TIME_WAIT, _CLOSE, _LISTEN = 3, 6, 7, 10
_HELD_STATES = sum(1 << state for state in range(1, 13)) & ~(
    (1 << _TIME_WAIT) | (1 << _CLOSE) | (1 << _LISTEN)
)  # every state of a connection, SYN_RECV (12: NEW_SYN_RECV, a request) included
_SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, _NLM_F_DUMP = 20, 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3

Connection = tuple[bytes, int, bytes, int]  # local address, port, remote address, port


class Probe:
    """A view into one namespace's TCP sockets, from this process: a
    ``sock_diag`` netlink socket made in the namespace, and an idle process
    there for ``/proc/PID/net/snmp``.

    ``sock_diag`` (what ``ss`` uses) filters by state in the kernel, so a
    read stays quick however many TIME_WAIT sockets a storm leaves, and the
    few dozen connections it returns come in one message, from one pass over
    the kernel's table.  ``/proc/net/tcp`` took 50 ms a read here, and,
    read in pieces while the table changes, missed a connection present
    throughout."""

    def __init__(self, net: Netns) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self.process = subprocess.Popen(
                [*net.exec_prefix(), sys.executable, "-c", _PROBE, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                start_new_session=True,
            )
            ours.settimeout(30)
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        self.pid = self.process.pid
        self.diag = socket.socket(fileno=fds[0])
        self._sequence = 0

    def _dump(self, family: int, states: int) -> list[tuple[int, Connection]]:
        """Every TCP socket of ``family`` in one of ``states`` (a bit mask):
        its state and addresses."""
        self._sequence += 1
        request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, states) + bytes(48)
        header = struct.pack(
            "=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY,
            _NLM_F_REQUEST | _NLM_F_DUMP, self._sequence, 0,
        )  # fmt: skip
        self.diag.send(header + request)
        found: list[tuple[int, Connection]] = []
        while True:
            data = self.diag.recv(1 << 20)
            offset = 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    raise OSError(-struct.unpack_from("=i", data, offset + 16)[0], "sock_diag")
                body = offset + 16  # struct inet_diag_msg
                state = data[body + 1]
                local_port, remote_port = struct.unpack_from(">HH", data, body + 4)
                local, remote = data[body + 8 : body + 24], data[body + 24 : body + 40]
                found.append((state, (local, local_port, remote, remote_port)))
                offset += (length + 3) & ~3

    def connections(self) -> dict[Connection, int]:
        """Every TCP connection, listeners and closed ones left out: its state."""
        return {
            connection: state
            for family in (socket.AF_INET, socket.AF_INET6)
            for state, connection in self._dump(family, _HELD_STATES)
        }

    def listening(self, port: int) -> bool:
        """Whether a socket listens on ``port``."""
        return any(
            connection[1] == port
            for family in (socket.AF_INET, socket.AF_INET6)
            for _, connection in self._dump(family, 1 << _LISTEN)
        )

    def passive_opens(self) -> int:
        """TCP ``PassiveOpens``: the connections listeners have taken (every
        port), counted when the handshake completes."""
        text = Path(f"/proc/{self.pid}/net/snmp").read_text()
        names, values = (line.split() for line in text.splitlines() if line.startswith("Tcp:"))
        return int(values[names.index("PassiveOpens")])

    def close(self) -> None:
        self.diag.close()
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.process.wait(timeout=10)


def held_through_death(probe: Probe, port: int, kill: Callable[[], None]) -> int:
    """Call ``kill`` (which ends every process holding the socket that listens
    on ``port``) and count the connections on ``port`` held in the meantime:
    those open just before, and every one that came until the listener was
    gone (it takes the connections queued on it along).

    The table is read again and again until then; a connection that came
    and went between two reads is caught by the ``PassiveOpens`` counter
    (a completed handshake not seen: counted as held, whatever its port; one
    completed between the counter's first reading and the table's is
    counted twice).  The bound is thus never too low, and seldom high."""
    opens = probe.passive_opens()  # first: a handshake done after it is in the delta
    before = probe.connections()
    kill()
    seen = dict(before)
    completed = set()  # handshakes completed since: each one is a passive open
    deadline = time.monotonic() + 10
    while probe.listening(port) and time.monotonic() < deadline:
        for connection, state in probe.connections().items():
            seen.setdefault(connection, state)
            if state != _SYN_RECV and before.get(connection, _SYN_RECV) == _SYN_RECV:
                completed.add(connection)
        time.sleep(0.0005)
    unseen = max(0, probe.passive_opens() - opens - len(completed))
    return sum(connection[1] == port for connection in seen) + unseen


class TrioechoHost:
    """``trioecho serve`` in one host's namespace: ``--workers 2``, the
    PROXY protocol v2 from HAProxy only, metrics on ``ADDRESS:9100``.

    ``drain_delay`` None leaves ``--drain-delay`` out.  Each run's standard
    output and error go to ``DIRECTORY/NAME-RUN.out`` and ``.err``."""

    def __init__(
        self,
        lan: Lan,
        net: Netns,
        directory: Path,
        *,
        grace: float,
        drain_delay: float | None,
        workers: int = 2,
    ) -> None:
        assert lan.haproxy is not None, "create() the Lan first"
        self.net = net
        self.address = net.address
        self.name = net.name.split("-")[1]  # h1, h2, ...
        self.directory = directory
        self.options = [
            "--host", "0.0.0.0", "--port", str(SERVICE_PORT), "--workers", str(workers),
            "--metrics", f"{net.address}:{METRICS_PORT}",
            "--proxy-protocol", "v2", "--proxy-allow-from", f"{lan.haproxy.address}/32",
            "--grace", str(grace), "-v",
        ]  # fmt: skip
        if drain_delay is not None:
            self.options += ["--drain-delay", str(drain_delay)]
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.probe = Probe(net)

    @property
    def pid(self) -> int:
        """The supervisor's process id."""
        assert self.process is not None, "not started"
        return self.process.pid

    def start(self, timeout: float = 30) -> None:
        """Start it and wait until it prints ``listening on``."""
        self.launch()
        self.wait_listening(timeout)

    def launch(self) -> None:
        """Start it, in a session of its own (:meth:`wait_listening` next)."""
        self.runs += 1
        command = [*self.net.exec_prefix(), sys.executable, "-m", "trioecho", "serve"]
        with open(self._stem() + ".out", "wb") as out, open(self._stem() + ".err", "wb") as err:
            self.process = subprocess.Popen(
                [*command, *self.options], stdout=out, stderr=err, start_new_session=True
            )

    def wait_listening(self, timeout: float = 30) -> None:
        """Wait until the run :meth:`launch` began prints ``listening on``."""
        assert self.process is not None, "not started"
        listening = re.compile(r"listening on \S+")
        _wait_for_line(Path(self._stem() + ".out"), listening, self.process, timeout)

    def _stem(self) -> str:
        return str(self.directory / f"{self.name}-{self.runs}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the supervisor."""
        assert self.process is not None, "not started"
        self.process.send_signal(signum)

    def reload(self) -> None:
        """SIGHUP: a rolling reload, the workers replaced one at a time."""
        self.signal(signal.SIGHUP)

    def terminate(self) -> None:
        """SIGTERM: drain and exit."""
        self.signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """Wait for the supervisor to exit; its exit code."""
        assert self.process is not None, "not started"
        return self.process.wait(timeout=timeout)

    def kill(self) -> int:
        """SIGKILL every process in the host's namespace (the supervisor and
        its workers, which run in sessions of their own), as if the host had
        died; returns once they are all gone, with the connections on the
        service's port the host held as it died (:func:`held_through_death`:
        open just before the signals, or come until its listening socket
        was gone)."""
        pids = [pid for pid in Lan.pids(self.net.name) if pid != self.probe.pid]

        def signals() -> None:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

        held = held_through_death(self.probe, SERVICE_PORT, signals)
        Lan.kill_all(self.net.name, spare=[self.probe.pid])  # started since: nothing should be
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # if its namespace is gone
            self.process.wait(timeout=10)
        return held

    def held_connections(self) -> int:
        """The TCP connections on the service's port in the host's namespace,
        read from its kernel: the accepted ones and those queued for
        accepting (unlike the ``trioecho_connections_open`` metric, a
        snapshot of accepted ones the workers send every 0.5 s)."""
        return sum(connection[1] == SERVICE_PORT for connection in self.probe.connections())

    def restart(self) -> None:
        """Start it again (killing what is left of the last run first)."""
        self.kill()
        self.start()

    def metrics(self) -> dict[str, float]:
        """Its ``/metrics`` now, ``{'name{labels}': value}``."""
        status, body = http_get(self.address, METRICS_PORT, "/metrics")
        assert status == 200, (status, body)
        return parse_metrics(body.decode())

    def metric(self, name: str) -> float:
        return self.metrics()[name]

    def readyz(self) -> int:
        """The status ``/readyz`` answers (OSError if nothing answers)."""
        return http_get(self.address, METRICS_PORT, "/readyz")[0]

    def listening(self) -> bool:
        """Whether a socket in the host's namespace listens on the service's port."""
        return self.probe.listening(SERVICE_PORT)

    def log(self) -> str:
        """The standard error of its last run."""
        return Path(self._stem() + ".err").read_text(errors="replace")

    def close(self) -> None:
        """Kill it if it runs, and its probe; never raises."""
        with contextlib.suppress(Exception):
            self.kill()
        self.probe.close()


def _binary(name: str) -> str:
    """The path of a Debian package's program (``/usr/sbin`` included)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise RuntimeError(f"{name} is not installed: run sh tools/install-system-deps.sh")
    return path


def haproxy_environment(frontend: str, hosts: Sequence[str]) -> dict[str, str]:
    """The variables ``docs/deploy/haproxy.cfg`` reads."""
    variables = {"TRIOECHO_FRONTEND": frontend}
    variables.update({f"TRIOECHO_HOST{n}": address for n, address in enumerate(hosts, 1)})
    return variables


def check_haproxy_config(environment: Mapping[str, str], *files: Path) -> None:
    """``haproxy -c`` on ``files``; AssertionError with its output if invalid."""
    done = subprocess.run(
        [_binary("haproxy"), "-c", *(arg for path in files for arg in ("-f", str(path)))],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr


class HAProxy:
    """``docs/deploy/haproxy.cfg`` run in the Lan's HAProxy namespace, its
    frontend on ``ADDRESS:port``, plus an admin socket in ``directory``
    (a second ``-f`` file) to read its servers' states."""

    def __init__(self, lan: Lan, directory: Path, port: int = 8000) -> None:
        assert lan.haproxy is not None, "create() the Lan first"
        self.net = lan.haproxy
        self.address = (lan.haproxy.address, port)
        self.socket_path = directory / "haproxy-admin.sock"
        self.admin_config = directory / "haproxy-admin.cfg"
        self.admin_config.write_text(
            f"global\n    stats socket {self.socket_path} mode 600 level admin\n"
        )
        self.log_path = directory / "haproxy.log"
        self.environment = haproxy_environment(
            f"{lan.haproxy.address}:{port}", [host.address for host in lan.hosts]
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> None:
        """Check the configuration, start HAProxy, wait for its admin socket."""
        files = (DEPLOY / "haproxy.cfg", self.admin_config)
        check_haproxy_config(self.environment, *files)
        command = [*self.net.exec_prefix(), _binary("haproxy"), "-db"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*command, *(arg for path in files for arg in ("-f", str(path)))],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.environment},
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.servers()
                return
            except OSError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    said = self.log_path.read_text()
                    raise RuntimeError(f"haproxy did not start: {said}") from exc
                time.sleep(0.05)

    def command(self, line: str) -> str:
        """One admin socket command's answer."""
        with socket.socket(socket.AF_UNIX) as admin:
            admin.settimeout(5)
            admin.connect(str(self.socket_path))
            admin.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := admin.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """``show stat`` for the backend's servers: ``{svname: row}`` (row
        fields: ``status`` such as ``UP``, ``DOWN``, ``UP 1/2``;
        ``check_status`` such as ``L7OK``, ``L7STS``, ``L4CON``,
        ``L4TOUT``; ``check_code``; ``addr``; ...)."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == "trioecho" and row["svname"] not in ("BACKEND", "FRONTEND")
        }

    def status(self, server: str) -> str:
        """``UP``, ``DOWN``, ``UP 1/2`` (going down), ``DOWN 1/2`` (going up), ..."""
        return self.servers()[server]["status"]

    def close(self) -> None:
        """Stop it; never raises."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    """Debian's ``prometheus`` in the root namespace, on 127.0.0.1, with
    ``docs/deploy/prometheus.yml`` and its rules copied into ``directory``
    beside the targets file that lists ``targets``."""

    def __init__(self, directory: Path, targets: Sequence[str]) -> None:
        self.directory = directory
        for name in ("prometheus.yml", "trioecho-alerts.yml"):
            shutil.copyfile(DEPLOY / name, directory / name)
        (directory / "trioecho-hosts.json").write_text(json.dumps([{"targets": list(targets)}]))
        self.port = free_port()
        self.log_path = directory / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        """Start it and wait until ``/-/ready`` answers 200."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    _binary("prometheus"),
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if http_get("127.0.0.1", self.port, "/-/ready")[0] == 200:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def query(self, expression: str) -> list[tuple[dict[str, str], float]]:
        """An instant query through ``/api/v1/query``: each series' labels and value."""
        path = "/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        status, body = http_get("127.0.0.1", self.port, path, timeout=5)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", answer
        return [(item["metric"], float(item["value"][1])) for item in answer["data"]["result"]]

    def close(self) -> None:
        """Stop it; never raises."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                with contextlib.suppress(Exception):
                    self.process.wait(timeout=10)
