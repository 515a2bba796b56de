"""``--metrics HOST:PORT``: the service's figures in Prometheus text
exposition, ``/healthz`` and ``/readyz``, served from the event loop.

The figures are read when scraped, not kept in a second set of counters: a
:class:`MetricsCollector` turns a *snapshot* (the plain dict of
:meth:`MessageServer.stats`, summed over the workers by the supervisor) into
metric families with ``prometheus_client``.  Names follow Prometheus's
conventions (``_total`` counters, ``_bytes`` units, one ``reason`` label).

The endpoint speaks HTTP/1.1 through ``h11``: one request per connection, a
request head of at most 16 KiB within ``REQUEST_TIMEOUT`` seconds, and at
most ``MAX_SCRAPERS`` connections open at once (one more is closed at once):
a scraper that sends nothing holds neither the endpoint nor a descriptor for
long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trioecho.logtext import format_address
from trioecho.reasons import CLOSE_REASONS
from trioecho.workers.link import Snapshot

__all__ = [
    "MAX_SCRAPERS",
    "REQUEST_TIMEOUT",
    "MetricsCollector",
    "metrics_registry",
    "open_metrics",
    "serve_metrics",
]

logger = logging.getLogger("trioecho.metrics")

REQUEST_TIMEOUT = 5.0  # seconds a scraper has to send its request
MAX_SCRAPERS = 64  # connections open at once; one more is closed at once
MAX_REQUEST_HEAD = 16 * 1024

_REASONS = {
    200: b"OK",
    404: b"Not Found",
    405: b"Method Not Allowed",
    503: b"Service Unavailable",
}

# Counters of a snapshot: name, help, snapshot key.
_COUNTERS = (
    ("trioecho_connections", "Connections accepted and set up.", "connections_total"),
    ("trioecho_messages_received", "Messages received from peers.", "messages_received"),
    ("trioecho_messages_sent", "Messages sent to peers.", "messages_sent"),
    ("trioecho_received_bytes", "Bytes received from peers.", "bytes_received"),
    ("trioecho_sent_bytes", "Bytes sent to peers.", "bytes_sent"),
    ("trioecho_accept_pauses", "Times accepting paused for want of a resource.", "accept_pauses"),
)
_GAUGES = (
    ("trioecho_connections_open", "Connections open now.", "connections_open"),
    ("trioecho_memory_budget_used_bytes", "Memory budget in use.", "memory_budget_used"),
    ("trioecho_memory_budget_limit_bytes", "The memory budget.", "memory_budget_limit"),
    (
        "trioecho_accepting_paused",
        "Listeners (workers) whose accepting waits now: at max_connections or out of a resource.",
        "accepting_paused",
    ),
)
# The supervisor's own, with --workers.
_SUPERVISOR_COUNTERS = (
    ("trioecho_worker_restarts", "Workers restarted after they died or were killed.", "restarts"),
    ("trioecho_reloads", "Rolling reloads completed (SIGHUP).", "reloads"),
)
_SUPERVISOR_GAUGES = (("trioecho_workers", "Worker processes serving.", "workers"),)


class MetricsCollector(Collector):
    """Metric families from ``snapshot()``, called at each scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        figures = self._snapshot()
        for name, help_text, key in _COUNTERS + _SUPERVISOR_COUNTERS:
            if key in figures:
                yield CounterMetricFamily(name, help_text, value=figures[key])
        for name, help_text, key in _GAUGES + _SUPERVISOR_GAUGES:
            if key in figures:
                yield GaugeMetricFamily(name, help_text, value=figures[key])
        closed = CounterMetricFamily(
            "trioecho_connections_closed", "Connections closed, by reason.", labels=["reason"]
        )
        by_reason = figures.get("closed", {})
        for reason in CLOSE_REASONS:
            closed.add_metric([reason], by_reason.get(reason, 0))
        yield closed


def metrics_registry(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """A registry with trioecho's figures (and none of the default process ones)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(snapshot))
    return registry


async def open_metrics(
    nursery: trio.Nursery,
    address: tuple[str, int],
    registry: CollectorRegistry,
    ready: Callable[[], bool],
) -> list[trio.SocketListener]:
    """Listen on ``address`` and serve the endpoint in ``nursery``; returns the
    listeners (``OSError`` if it cannot listen)."""
    host, port = address
    listeners = await trio.open_tcp_listeners(port, host=host)
    for listener in listeners:
        where = format_address(listener.socket.getsockname())
        logger.info("metrics on http://%s/metrics (and /healthz, /readyz)", where)
    nursery.start_soon(serve_metrics, listeners, registry, ready)
    return listeners


async def serve_metrics(
    listeners: list[trio.SocketListener],
    registry: CollectorRegistry,
    ready: Callable[[], bool],
) -> None:
    """Serve ``/metrics``, ``/healthz`` (200 while this event loop turns) and
    ``/readyz`` (200 while ``ready()``: serving, not draining; else 503) on
    ``listeners`` until cancelled."""
    open_now = 0

    async def serve_one(stream: trio.SocketStream) -> None:
        nonlocal open_now
        if open_now >= MAX_SCRAPERS:
            logger.warning("metrics: %d scrapers connected already: closing one more", open_now)
            await trio.aclose_forcefully(stream)
            return
        open_now += 1
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                await _answer(stream, registry, ready)
        except (trio.BrokenResourceError, h11.RemoteProtocolError) as exc:
            logger.info("metrics: a scraper's request failed: %s", exc)
        finally:
            open_now -= 1
            await trio.aclose_forcefully(stream)

    await trio.serve_listeners(serve_one, listeners)


async def _answer(
    stream: trio.SocketStream, registry: CollectorRegistry, ready: Callable[[], bool]
) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            connection.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            break
        if isinstance(event, h11.ConnectionClosed):
            return
    target = event.target.split(b"?", 1)[0]
    status, body, content_type = 200, b"", b"text/plain; charset=utf-8"
    if event.method not in (b"GET", b"HEAD"):
        status, body = 405, b"method not allowed\n"
    elif target == b"/metrics":
        body, content_type = generate_latest(registry), CONTENT_TYPE_LATEST.encode()
    elif target == b"/healthz":
        body = b"ok\n"
    elif target == b"/readyz":
        status, body = (200, b"ready\n") if ready() else (503, b"not ready: draining\n")
    else:
        status, body = 404, b"not found: try /metrics, /healthz or /readyz\n"
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    reason = _REASONS[status]
    wire = connection.send(h11.Response(status_code=status, headers=headers, reason=reason))
    if event.method != b"HEAD":
        wire += connection.send(h11.Data(data=body))
    wire += connection.send(h11.EndOfMessage())
    await stream.send_all(wire)
