"""Faults across hosts (#36): three trioecho hosts behind HAProxy, one
Prometheus watching them, while clients keep coming.

Every host is a network namespace on a bridge (:mod:`support.hosts`) running
``trioecho serve --workers 2`` behind the PROXY protocol; HAProxy runs
``docs/deploy/haproxy.cfg`` in a namespace of its own, Prometheus
``docs/deploy/prometheus.yml`` in the root namespace.  The load
(:mod:`support.hostload`) runs from the root namespace through HAProxy: a
storm of new sessions and a set of established ones, every reply checked.

One host at a time is reloaded (SIGHUP), drained (SIGTERM), killed
(SIGKILL) or cut off (its link down for 10 s); each test prints what its
fault cost (``pytest -s``) and puts the host back in service at its end.
The setup is slow (a few seconds), so the hosts are shared by the module.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest
from support.hostload import Load, LoadResult
from support.hosts import (
    DEPLOY,
    METRICS_PORT,
    SERVICE_PORT,
    HAProxy,
    Lan,
    Prometheus,
    TrioechoHost,
    why_no_namespaces,
)

pytestmark = pytest.mark.skipif(why_no_namespaces() is not None, reason=why_no_namespaces() or "")

GRACE = 8.0  # --grace: longer than an established session's lifetime (3 s)
DRAIN_DELAY = 3.0  # --drain-delay: at least fall x inter + timeout check (haproxy.cfg)
BEFORE = 1.5  # seconds of load before a fault
AFTER = 1.5  # and after it has run its course


def _haproxy_setting(pattern: str) -> float:
    """A number from docs/deploy/haproxy.cfg (the tests use what it says)."""
    match = re.search(pattern, (DEPLOY / "haproxy.cfg").read_text(), re.MULTILINE)
    assert match, pattern
    return float(match.group(1))


INTER = _haproxy_setting(r"^\s*default-server .*\binter (\d+)s\b")
FALL = _haproxy_setting(r"^\s*default-server .*\bfall (\d+)\b")
DETECTION = FALL * INTER  # HAProxy finds a dead host within this, plus a check's time


@dataclass
class Cluster:
    """The module's hosts, their HAProxy and their Prometheus."""

    lan: Lan
    hosts: list[TrioechoHost]
    haproxy: HAProxy
    prometheus: Prometheus

    def server(self, host: TrioechoHost) -> str:
        """The host's server name in haproxy.cfg."""
        return f"host{self.hosts.index(host) + 1}"

    def in_service(self, host: TrioechoHost) -> bool:
        """HAProxy sends it sessions: UP, its last check passed."""
        row = self.haproxy.servers()[self.server(host)]
        return row["status"] == "UP" and row["check_status"] == "L7OK"

    def wait_in_service(self, *hosts: TrioechoHost) -> None:
        for host in hosts or self.hosts:
            in_service = functools.partial(self.in_service, host)
            wait_until(in_service, f"{host.name} in service", 30)

    def load(self, *, established: int = 9) -> Load:
        """The load through HAProxy (:meth:`Load.start` it, or use ``with``)."""
        return Load(self.haproxy.address, established=established)


def wait_until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll ``condition`` until it holds; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("hosts")
    with ExitStack() as stack:
        lan = Lan(3)
        stack.callback(lan.delete)  # last: kills whatever still runs in a namespace
        lan.create()
        hosts = [
            TrioechoHost(lan, net, directory, grace=GRACE, drain_delay=DRAIN_DELAY)
            for net in lan.hosts
        ]
        for host in hosts:
            stack.callback(host.close)
            host.launch()
        for host in hosts:
            host.wait_listening()
        haproxy = HAProxy(lan, directory)
        stack.callback(haproxy.close)
        haproxy.start()
        prometheus = Prometheus(directory, [f"{host.address}:{METRICS_PORT}" for host in hosts])
        stack.callback(prometheus.close)
        prometheus.start()
        cluster = Cluster(lan, hosts, haproxy, prometheus)
        cluster.wait_in_service()
        # haproxy.cfg's "${TRIOECHO_HOST1}":9999 became the host's address.
        servers = haproxy.servers()
        for host in hosts:
            assert servers[cluster.server(host)]["addr"] == f"{host.address}:{SERVICE_PORT}"
        print(f"\nhosts on {lan.prefix}.0/24, logs in {directory}")
        yield cluster


@contextmanager
def restored(cluster: Cluster, host: TrioechoHost) -> Iterator[None]:
    """Whatever the test did to ``host``, it is serving and in HAProxy's
    service again at the end."""
    try:
        yield
    finally:
        cluster.lan.heal(host.net)
        if not host.running():
            host.restart()
        cluster.wait_in_service(host)


def report(fault: str, result: LoadResult, **figures: object) -> None:
    extra = "".join(f"; {name}={value}" for name, value in figures.items())
    print(f"\n{fault}: {result.summary()}{extra}")


def assert_nothing_lost(result: LoadResult) -> None:
    counts = result.counts()
    assert counts["served"] > 0, counts
    assert result.failures() == [], counts


def assert_rejoins(cluster: Cluster, host: TrioechoHost) -> None:
    """``host`` is in service, and new sessions reach it again."""
    cluster.wait_in_service(host)
    before = host.metric("trioecho_connections_total")
    with cluster.load(established=0) as load:
        wait_until(
            lambda: host.metric("trioecho_connections_total") > before,
            f"new sessions reach {host.name}",
            10,
        )
    assert_nothing_lost(load.result)


def first_readyz_change(host: TrioechoHost) -> int:
    """The first status other than 200 that ``/readyz`` answers (a signal
    just sent takes a moment to arrive); 0 if nothing answers."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            status = host.readyz()
        except OSError:
            return 0
        if status != 200:
            return status
        time.sleep(0.005)
    return 200


def test_rolling_reload_of_one_host_loses_nothing(cluster: Cluster) -> None:
    host = cluster.hosts[0]
    with restored(cluster, host):
        reloads = host.metric("trioecho_reloads_total")
        with cluster.load() as load:
            time.sleep(BEFORE)
            host.reload()
            wait_until(
                lambda: host.metric("trioecho_reloads_total") == reloads + 1, "the reload", 30
            )
            time.sleep(AFTER)
        report("SIGHUP", load.result, haproxy=cluster.haproxy.status(cluster.server(host)))
        assert_nothing_lost(load.result)
        assert host.running()


def test_sigterm_drain_of_one_host_loses_nothing(cluster: Cluster) -> None:
    host = cluster.hosts[1]
    server = cluster.server(host)
    with restored(cluster, host):
        with cluster.load() as load:
            time.sleep(BEFORE)
            host.terminate()
            stopped = time.monotonic()
            ready = first_readyz_change(host)
            listening_at_503 = host.listening()
            # HAProxy takes it out on its health check while it still accepts.
            wait_until(lambda: cluster.haproxy.status(server).startswith("DOWN"), "DOWN", 30)
            out = time.monotonic() - stopped
            listening_when_out = host.listening()
            check = cluster.haproxy.servers()[server]
            code = host.wait(timeout=GRACE + 10)
            exited = time.monotonic() - stopped
            time.sleep(AFTER)
        report(
            "SIGTERM",
            load.result,
            readyz=ready,
            out_of_haproxy_after=f"{out:.2f}s",
            listening_then=listening_when_out,
            check=f"{check['check_status']} {check['check_code']}",
            exit=code,
            exited_after=f"{exited:.2f}s",
        )
        assert ready == 503
        assert listening_at_503
        assert (check["check_status"], check["check_code"]) == ("L7STS", "503")
        assert listening_when_out, "the host stopped accepting before HAProxy took it out"
        assert_nothing_lost(load.result)
        assert code == 0, host.log()[-3000:]
        host.start()
        assert_rejoins(cluster, host)


def assert_only_its_sessions_failed(result: LoadResult, held: int, *, since: float) -> int:
    """At most the ``held`` sessions of the host lost ``since`` then failed,
    none that started once HAProxy had taken it out (``DETECTION`` + 1 s
    later), and sessions were served; returns how many failed late (0)."""
    failed = result.failures()
    late = result.failures(started_after=since + DETECTION + 1)
    assert len(failed) <= held, [(session.kind, session.detail) for session in failed]
    assert late == [], late
    assert result.counts()["served"] > 0
    return len(late)


def test_sigkill_of_one_host_cuts_only_its_own_sessions(cluster: Cluster) -> None:
    host = cluster.hosts[2]
    with restored(cluster, host):
        with cluster.load() as load:
            time.sleep(BEFORE)
            metric = host.metric("trioecho_connections_open")
            killed = time.monotonic()
            held = host.kill()
            time.sleep(DETECTION + 1 + AFTER)
        late = assert_only_its_sessions_failed(load.result, held, since=killed)
        report("SIGKILL", load.result, held=held, open_metric=int(metric), late_failures=late)
        host.start()
        assert_rejoins(cluster, host)


def test_partition_of_one_host(cluster: Cluster) -> None:
    host = cluster.hosts[0]
    with restored(cluster, host):
        with cluster.load() as load:
            time.sleep(BEFORE)
            metric = host.metric("trioecho_connections_open")
            cut_off = time.monotonic()
            cluster.lan.partition(host.net)
            # Read after the link went down: none can come or go any more
            # (a close's FIN is lost: the socket stays), so this counts
            # every session the partition caught.
            held = host.held_connections()
            time.sleep(10)
            status = cluster.haproxy.status(cluster.server(host))
            cluster.lan.heal(host.net)
            time.sleep(AFTER)
        late = assert_only_its_sessions_failed(load.result, held, since=cut_off)
        report(
            "partition",
            load.result,
            held=held,
            open_metric=int(metric),
            late_failures=late,
            haproxy=status,
        )
        assert status == "DOWN"
        assert host.running()
        assert_rejoins(cluster, host)


def settled_total(cluster: Cluster, metric: str) -> float:
    """The hosts' sum of ``metric`` once it stands still (the workers report
    every 0.5 s) and Prometheus has scraped that same sum."""
    last = -1.0
    deadline = time.monotonic() + 30
    while True:
        total = sum(host.metric(metric) for host in cluster.hosts)
        scraped = cluster.prometheus.query(f"sum({metric})")
        if total == last and scraped and scraped[0][1] == total:
            return total
        assert time.monotonic() < deadline, (total, last, scraped)
        last = total
        time.sleep(1)


def test_one_prometheus_sums_every_host(cluster: Cluster) -> None:
    cluster.wait_in_service()
    metric = "trioecho_messages_received_total"
    before = settled_total(cluster, metric)
    with cluster.load() as load:
        time.sleep(2)
    assert_nothing_lost(load.result)
    sent = load.result.messages()
    after = settled_total(cluster, metric)
    report("Prometheus", load.result, sum_before=int(before), sum_after=int(after))
    assert after == before + sent  # Prometheus' sum and the hosts' own
    # A killed host: its scrape fails, `up` says so.
    host = cluster.hosts[1]
    instance = f'up{{instance="{host.address}:{METRICS_PORT}"}}'
    with restored(cluster, host):
        assert cluster.prometheus.query(instance)[0][1] == 1
        host.kill()
        wait_until(lambda: cluster.prometheus.query(instance)[0][1] == 0, "up == 0", 30)
