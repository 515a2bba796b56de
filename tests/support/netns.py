"""Two network namespaces joined by a veth pair, and a way to make one side
vanish: what a peer behind a dead link looks like from the other side.

The server side is ``10.200.0.1`` in :attr:`NetnsPair.server`, the client
side ``10.200.0.2`` in :attr:`NetnsPair.client`.  :meth:`NetnsPair.silence`
drops every packet the client's namespace sends (its veth's egress): no
FIN, no reset, no ACK, no answer to a keepalive probe ever reaches the
server again, while the server's packets still arrive.  This kernel has no
netem and no iptables, and ``tc filter ... action drop`` did not drop; an
HTB root qdisc whose only class has a ``pfifo limit 0`` leaf drops them all.

Needs root and iproute2 (``ip``, ``tc``).  Names are random per pair, so
parallel runs and leftovers of a killed run never collide.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys

SERVER_ADDRESS = "10.200.0.1"
CLIENT_ADDRESS = "10.200.0.2"

# Run in a namespace: connect, then pass the connected socket back over the
# inherited unix socket (SCM_RIGHTS): the socket keeps its namespace.
_DIAL = """
import socket, sys
host, port, channel_fd, rcvbuf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sock = socket.socket()
if rcvbuf:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
sock.settimeout(10)
sock.connect((host, port))
socket.send_fds(socket.socket(fileno=channel_fd), [b"s"], [sock.fileno()])
"""


def why_no_namespaces() -> str | None:
    """Why namespaces cannot be made here (the reason to skip), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"iproute2's {tool} is not installed (tools/install-system-deps.sh installs it)"
    return None


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()}")


class NetnsPair:
    """Two new namespaces and their veth pair; :meth:`delete` removes them."""

    def __init__(self) -> None:
        token = secrets.token_hex(4)
        self.server = f"trioecho-s-{token}"
        self.client = f"trioecho-c-{token}"
        self.server_link = f"tes{token}"  # at most 15 characters
        self.client_link = f"tec{token}"
        self._made: list[str] = []

    def create(self) -> None:
        """Make both namespaces, link them, bring everything up.  Raises
        RuntimeError (with ``ip``'s message) if the kernel refuses."""
        for namespace in (self.server, self.client):
            _run("ip", "netns", "add", namespace)
            self._made.append(namespace)
        _run(
            "ip", "link", "add", self.server_link, "netns", self.server,
            "type", "veth", "peer", "name", self.client_link, "netns", self.client,
        )  # fmt: skip
        for namespace, link, address in (
            (self.server, self.server_link, SERVER_ADDRESS),
            (self.client, self.client_link, CLIENT_ADDRESS),
        ):
            _run("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", link)
            _run("ip", "-n", namespace, "link", "set", link, "up")
            _run("ip", "-n", namespace, "link", "set", "lo", "up")

    def exec_prefix(self, namespace: str) -> list[str]:
        """The command line prefix that runs a program in ``namespace``."""
        return ["ip", "netns", "exec", namespace]

    def dial(
        self, namespace: str, host: str, port: int, *, rcvbuf: int = 0, timeout: float = 10
    ) -> socket.socket:
        """A TCP socket connected to ``host``:``port`` from ``namespace``
        (blocking, with ``timeout``); ``rcvbuf``: its ``SO_RCVBUF``, set
        before it connects (0: the system's)."""
        ours, theirs = socket.socketpair()
        try:
            done = subprocess.run(
                [
                    *self.exec_prefix(namespace),
                    sys.executable,
                    "-c",
                    _DIAL,
                    host,
                    str(port),
                    str(theirs.fileno()),
                    str(rcvbuf),
                ],
                pass_fds=[theirs.fileno()],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
                raise ConnectionError(f"cannot connect to {host}:{port} from {namespace}: {last}")
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        finally:
            ours.close()
            theirs.close()
        sock = socket.socket(fileno=fds[0])
        sock.settimeout(timeout)
        return sock

    def silence(self) -> None:
        """Drop every packet the client's namespace sends from now on."""
        link = self.client_link
        tc = ("tc", "-n", self.client)
        _run(*tc, "qdisc", "add", "dev", link, "root", "handle", "1:", "htb", "default", "10")
        _run(
            *tc, "class", "add", "dev", link, "parent", "1:", "classid", "1:10",
            "htb", "rate", "1gbit", "quantum", "1514",
        )  # fmt: skip
        _run(
            *tc,
            "qdisc",
            "add",
            "dev",
            link,
            "parent",
            "1:10",
            "handle",
            "10:",
            "pfifo",
            "limit",
            "0",
        )

    def delete(self) -> None:
        """Remove the namespaces (and with them the veth pair); never raises."""
        for namespace in self._made:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        self._made.clear()
