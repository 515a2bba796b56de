"""Instructions per exchange, counted by valgrind's callgrind: where the time goes.

Starts ``python -m trioecho`` under ``valgrind --tool=callgrind`` twice, and
each time makes N request/reply exchanges (64-byte ``len`` messages, one in
flight) on one connection from this process, N and then 2N; the difference
between the two runs' counts, divided by N, is what one exchange costs, start-up
and shut-down cancelled out.  Prints the total and the functions that take the
most of it (self cost, per exchange).  Steadier than any timer on a shared
machine.

    python benchmarks/instructions.py                       # the default server
    python benchmarks/instructions.py --env TRIOECHO_PUMP=0 # its twin, for comparison
    python benchmarks/instructions.py --handler respond     # a Python respond()

Needs valgrind (Debian: apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

MESSAGE = b"x" * 64
_LINE = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(.*)$|^\s*([\d,]+)\s+(.*)$")


def exchange(port: int, count: int) -> None:
    """``count`` ping-pong exchanges on one connection, each reply checked."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        greeting = _receive_frame(sock)
        assert greeting, "no greeting"
        frame = struct.pack(">I", len(MESSAGE)) + MESSAGE
        for _ in range(count):
            sock.sendall(frame)
            reply = _receive_frame(sock)
            assert reply.startswith(MESSAGE), reply
        sock.sendall(struct.pack(">I", 1) + b"q")
        assert sock.recv(1) == b""


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def _receive_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">I", _receive_exactly(sock, 4))
    return _receive_exactly(sock, size)


def counted_run(count: int, env: dict[str, str], handler: str, out: Path) -> None:
    """Serve ``count`` exchanges under callgrind, writing its counts to ``out``."""
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "-q"]
    command += [sys.executable, "-m", "trioecho", "--port", "0", "--framing", "len", "-q"]
    command += ["--handler", handler, "--idle-timeout", "0"]
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, **env}
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the server did not start: {line!r}")
        exchange(int(line.rsplit(":", 1)[1]), count)
        time.sleep(0.5)
        server.send_signal(signal.SIGINT)
        server.wait(timeout=300)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def self_costs(path: Path) -> Counter[str]:
    """Each function's self cost (instructions) in a callgrind output."""
    report = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs: Counter[str] = Counter()
    for line in report.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        number = match.group(1) or match.group(3)
        name = (match.group(2) or match.group(4)).strip()
        if name.startswith(("PROGRAM TOTALS", "Ir")) or "file:function" in name:
            continue
        costs[name] += int(number.replace(",", ""))
    return costs


def total(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchanges", type=int, default=2000, help="N (the runs make N and 2N)")
    parser.add_argument("--handler", default="session", choices=["session", "respond", "handle"])
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--top", type=int, default=20, help="functions to list")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        print("instructions.py: valgrind is not installed", file=sys.stderr)
        return 2
    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as folder:
        small, large = Path(folder) / "small.out", Path(folder) / "large.out"
        counted_run(args.exchanges, env, args.handler, small)
        counted_run(2 * args.exchanges, env, args.handler, large)
        per_exchange = (total(large) - total(small)) / args.exchanges
        difference = self_costs(large)
        difference.subtract(self_costs(small))
    setting = " ".join(args.env) or "defaults"
    print(f"--handler {args.handler}, {setting}: {per_exchange:,.0f} instructions per exchange")
    print("\n| self instructions per exchange | function |\n|---:|---|")
    for name, cost in difference.most_common(args.top):
        print(f"| {cost / args.exchanges:,.0f} | `{name[:100]}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
