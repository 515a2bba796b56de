"""PostgreSQL through proxies, one run: pgbench ``-S`` (select only) and
TPC-B against the server directly, through pgbouncer (session pooling,
Debian's), through a one-thread stdlib byte proxy, and through
``trioecho relay --preset postgresql``.

For each: transactions per second, failed transactions, and the proxy's CPU
time per transaction (utime + stime from ``/proc/PID/stat`` over the run,
divided by the transactions: pgbench, PostgreSQL and the proxy share the
machine's cores, so CPU per transaction is the steadier figure); then the
relay's ratios to pgbouncer.  Rounds are interleaved; the medians are
reported.  The servers come from ``tests/support/liveservers.py`` (the
same ones the live tests start).

    python benchmarks/relay.py                  # 32 clients, 10 s each, 2 rounds
    python benchmarks/relay.py --smoke          # a few seconds: that it all runs (CI)
    python benchmarks/relay.py --tls            # clients speak TLS to each target

With ``--tls`` every target ends the clients' TLS (pgbench with
``sslmode=require``): PostgreSQL with ``ssl = on``, pgbouncer with
``client_tls_sslmode = require``, and the relay with ``--tls-cert``; each
then speaks plain TCP to PostgreSQL.  The byte proxy, which cannot end TLS,
is replaced by a TLS byte proxy: the same loop over non-blocking
``ssl.SSLSocket`` objects, OpenSSL reading and writing the socket, and
nothing else in Python per event.  It is the floor for any relay that runs
Python on each message over TLS.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import selectors
import socket
import ssl
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.liveservers import (
    pgbouncer_server,
    postgresql_server,
)

TICKS = os.sysconf("SC_CLK_TCK")
SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class ByteProxy:
    """A one-thread stdlib proxy: selectors, non-blocking sockets, bytes
    passed on as they come (what a plain TCP proxy costs)."""

    def __init__(self, upstream_port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.upstream_port = upstream_port
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(0.2):
                if key.fileobj is self.listener:
                    self.accept()
                else:
                    self.forward(key.fileobj, key.data)  # type: ignore[arg-type]

    def accept(self) -> None:
        try:
            client = self.client_side(self.listener.accept()[0])
        except OSError:  # BlockingIOError: taken by now; else a client gone or wrong
            return
        if client is None:
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.selector.register(client, selectors.EVENT_READ, upstream)
        self.selector.register(upstream, selectors.EVENT_READ, client)

    def client_side(self, client: socket.socket) -> socket.socket | None:
        """The socket to forward the accepted ``client`` with (None: closed)."""
        return client

    def forward(self, source: socket.socket, sink: socket.socket) -> None:
        if source.fileno() < 0:
            return  # closed earlier in this same batch of events, with its other side
        data = self.receive(source)
        if data is None:
            return
        if not data:
            for sock in (source, sink):
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(sock)
                sock.close()
            return
        self.send(sink, data)

    def receive(self, source: socket.socket) -> bytes | None:
        """What ``source`` has: ``b""`` at its end (or on an error), None
        if nothing yet."""
        try:
            return source.recv(65536)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def send(self, sink: socket.socket, data: bytes) -> None:
        try:
            sent = sink.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError):
            sent = 0
        except OSError:
            return
        if sent == len(data):
            return
        sink.setblocking(True)  # rare: a full send buffer; keep it simple
        try:
            sink.sendall(data[sent:])  # over TLS: the same bytes again, as OpenSSL needs
        except OSError:
            pass
        finally:
            sink.setblocking(False)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(timeout=5)
        self.listener.close()


class TLSByteProxy(ByteProxy):
    """The byte proxy ending the clients' TLS as PostgreSQL does (an
    SSLRequest answered ``S``, then the handshake, blocking, in the proxy's
    thread), then forwarding the plain text with non-blocking
    ``ssl.SSLSocket`` calls: what Python costs when OpenSSL does every read
    and write on the socket and no more than that runs per event.  The floor
    for any relay driven from Python."""

    def __init__(self, upstream_port: int, files: tuple[str, str]) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*files)
        super().__init__(upstream_port)

    def client_side(self, client: socket.socket) -> socket.socket | None:
        client.settimeout(5)  # pgbench's clients answer at once; nothing else comes
        try:
            if client.recv(len(SSL_REQUEST), socket.MSG_WAITALL) != SSL_REQUEST:
                client.close()
                return None
            client.sendall(b"S")
            return self.context.wrap_socket(client, server_side=True)
        except OSError:
            client.close()
            return None

    def receive(self, source: socket.socket) -> bytes | None:
        if not isinstance(source, ssl.SSLSocket):
            return super().receive(source)
        # One record (at most 16 KiB) per read: OpenSSL keeps none of it
        # back, and the level-triggered selector reports records still in
        # the kernel.
        try:
            return source.recv(65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except OSError:
            return b""


@contextlib.contextmanager
def trioecho_relay(upstream_port: int, tls: tuple[str, str] | None) -> Iterator[tuple[int, int]]:
    command = [sys.executable, "-m", "trioecho", "relay", "--preset", "postgresql"]
    command += ["--upstream", f"127.0.0.1:{upstream_port}", "--port", "0", "-q"]
    if tls is not None:
        command += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        yield int(line.rsplit(":", 1)[1]), process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def pgbench(
    port: int, workload: str, clients: int, seconds: int, tls: bool
) -> tuple[float, int, int]:
    """TPS (without connection time), transactions, failed transactions;
    ``tls``: over TLS (``sslmode=require``), else in clear."""
    command = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    command += ["-c", str(clients), "-j", "2", "-T", str(seconds), "-n"]
    if workload == "-S":
        command.append("-S")
    command.append("postgres")
    environment = {**os.environ, "PGSSLMODE": "require"} if tls else None
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 120, env=environment
    )
    if result.returncode != 0:
        raise RuntimeError(f"pgbench failed on port {port}: {result.stderr[-2000:]}")
    tps = float(re.search(r"tps = ([\d.]+) \(without initial", result.stdout).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"transactions actually processed: (\d+)", result.stdout).group(1))  # type: ignore[union-attr]
    failed_match = re.search(r"number of failed transactions: (\d+)", result.stdout)
    failed = int(failed_match.group(1)) if failed_match else 0
    return tps, done, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10, help="each pgbench run (whole seconds)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="4 clients, 2 s, 1 round")
    parser.add_argument("--tls", action="store_true", help="clients speak TLS to each target")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.seconds, args.rounds = 4, 2, 1
    with contextlib.ExitStack() as stack:
        pems = files = None
        if args.tls:
            pems, files = certificate(stack)
        return run(args, pems, files)


def certificate(stack: contextlib.ExitStack) -> tuple[tuple[bytes, bytes], tuple[str, str]]:
    """A throwaway certificate for 127.0.0.1 (trustme, a test dependency):
    its PEM bytes, and files holding them (removed with ``stack``)."""
    import tempfile

    import trustme

    leaf = trustme.CA().issue_cert("127.0.0.1")
    pems = (leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())
    directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trioecho-bench-")))
    (directory / "cert.pem").write_bytes(pems[0])
    (directory / "key.pem").write_bytes(pems[1])
    return pems, (str(directory / "cert.pem"), str(directory / "key.pem"))


def run(
    args: argparse.Namespace,
    pems: tuple[bytes, bytes] | None,
    files: tuple[str, str] | None,
) -> int:
    """Run every target, print the table and the relay's ratios."""
    with postgresql_server(pems) as postgres:
        initialise = ["pgbench", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres"]
        subprocess.run(
            [*initialise, "-i", "-q", "-s", "1", "postgres"],
            check=True,
            capture_output=True,
        )
        results: dict[tuple[str, str], list[tuple[float, float | None, int]]] = {}
        with (
            pgbouncer_server(postgres.port, tls=pems) as bouncer,
            trioecho_relay(postgres.port, files) as (relay_port, relay_pid),
        ):
            proxy = ByteProxy(postgres.port)
            targets = {
                "direct": (postgres.port, None),
                "pgbouncer": (bouncer.port, bouncer.process.pid),
                "byte proxy": (proxy.port, os.getpid()),
                "trioecho relay": (relay_port, relay_pid),
            }
            if files is not None:
                proxy.close()
                proxy = TLSByteProxy(postgres.port, files)
                del targets["byte proxy"]
                targets["TLS byte proxy"] = (proxy.port, os.getpid())
            for _ in range(args.rounds):
                for workload in ("-S", "TPC-B"):
                    for name, (port, pid) in targets.items():
                        before = cpu_seconds(pid) if pid is not None else 0.0
                        tps, done, failed = pgbench(
                            port, workload, args.clients, args.seconds, args.tls
                        )
                        cpu = cpu_seconds(pid) - before if pid is not None else None
                        per = cpu / done * 1e6 if cpu is not None and done else None
                        results.setdefault((workload, name), []).append((tps, per, failed))
            proxy.close()
    over = "over TLS (sslmode=require), " if args.tls else ""
    print(f"pgbench, {over}{args.clients} clients, {args.seconds:g} s, median of {args.rounds}\n")
    print("| workload | target | TPS | failed | proxy CPU per transaction |")
    print("|---|---|---:|---:|---:|")
    medians: dict[tuple[str, str], tuple[float, float | None]] = {}
    for (workload, name), runs in results.items():
        tps = statistics.median(run[0] for run in runs)
        pers = [run[1] for run in runs if run[1] is not None]
        per = statistics.median(pers) if pers else None
        medians[workload, name] = (tps, per)
        failed = sum(run[2] for run in runs)
        shown = f"{per:.1f} µs" if per is not None else "—"
        print(f"| `{workload}` | {name} | {tps:,.0f} | {failed} | {shown} |")
    print()
    for workload in ("-S", "TPC-B"):
        bouncer_tps, bouncer_per = medians[workload, "pgbouncer"]
        for name in ("trioecho relay", "TLS byte proxy"):
            if (workload, name) not in medians:
                continue
            tps, per = medians[workload, name]
            ratio = f", CPU per transaction {per / bouncer_per:.2f}x" if per and bouncer_per else ""
            print(f"{workload}: {name} TPS {tps / bouncer_tps:.2f}x pgbouncer's{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
