"""How evenly ``serve --workers N`` spreads connections over its workers:
one shared listening socket (the default) against one ``SO_REUSEPORT``
socket per worker (``--reuse-port``), in the same run.

Two loads per mode:

* ``storm``: client threads that connect, read the greeting, send ``q`` and
  wait for the close, over and over (short connections);
* ``held``: ``--held`` connections opened as fast as possible and kept open
  (long-lived clients arriving in a burst); each worker's share is read from
  ``/proc`` (its established sockets) while they are all open.

For each, the connections each worker served, and the busiest worker's
share against a perfect ``1/N``::

    python benchmarks/spread.py                      # 2 workers
    python benchmarks/spread.py --workers 2 --seconds 3 --held 1000
"""

from __future__ import annotations

import argparse
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.storm import accepted_connections

GREETED = "你好欢迎你\n".encode()
READY = re.compile(r"worker (\d+) \(pid (\d+)\) ready$")
SERVED = re.compile(r"\[(\d+)\] trioecho\.server: stopped after serving (\d+) connections?")


def start(workers: int, reuse_port: bool) -> tuple[subprocess.Popen[bytes], int, list[str]]:
    command = [sys.executable, "-m", "trioecho", "serve", "--port", "0", "--workers", str(workers)]
    command += ["--max-connections", "20000"] + (["--reuse-port"] if reuse_port else [])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    port = int(process.stdout.readline().decode().rsplit(":", 1)[1])
    log: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line.decode(errors="replace").rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    while sum(bool(READY.search(line)) for line in list(log)) < workers:
        time.sleep(0.02)
    return process, port, log


def storm(port: int, seconds: float, threads: int = 8) -> int:
    stop = time.monotonic() + seconds
    count = [0]
    lock = threading.Lock()

    def run() -> None:
        while time.monotonic() < stop:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                data = b""
                while len(data) < len(GREETED):
                    data += sock.recv(64)
                sock.sendall(b"q\n")
                while sock.recv(64):
                    pass
            with lock:
                count[0] += 1

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return count[0]


def held(port: int, pids: list[int], number: int) -> list[int]:
    sockets = []
    for _ in range(number):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sockets.append(sock)
    for sock in sockets:  # every one accepted and greeted
        data = b""
        while len(data) < len(GREETED):
            data += sock.recv(64)
    shares = [accepted_connections(pid) for pid in pids]  # all held open: each one's share
    for sock in sockets:
        sock.close()
    return shares


def describe(shares: list[int]) -> str:
    total = sum(shares) or 1
    busiest = max(shares) / total
    return f"{shares} (busiest {busiest:.0%}; even would be {1 / len(shares):.0%})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--held", type=int, default=1000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.held)), hard))
    print("| mode | load | connections | per worker |\n|---|---|---:|---|")
    for reuse_port in (False, True):
        mode = "SO_REUSEPORT per worker" if reuse_port else "one shared socket"
        process, port, log = start(args.workers, reuse_port)
        try:
            pids = [int(match.group(2)) for line in list(log) if (match := READY.search(line))]
            sharing = held(port, pids, args.held)
            sessions = storm(port, args.seconds)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            time.sleep(0.2)
            served = {
                int(m.group(1)): int(m.group(2)) for line in log if (m := SERVED.search(line))
            }
            storm_shares = [served.get(pid, 0) - n for pid, n in zip(pids, sharing, strict=True)]
            print(f"| {mode} | held | {sum(sharing)} | {describe(sharing)} |")
            print(f"| {mode} | storm {args.seconds:g} s | {sessions} | {describe(storm_shares)} |")
        finally:
            if process.poll() is None:
                process.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
