"""The load generator of ``trioecho bench --tls``: Trio and ``trio.SSLStream``.

The C load generator speaks plain TCP only, so over TLS the load comes from
Python: one Trio task pair per connection (a sender keeping ``depth``
messages in flight, a receiver checking every reply), in a Trio loop on a
background thread.  It has the interface of ``_cloadgen.LoadGenerator`` and
fills the same :class:`BenchStats` (same histogram), but it is much slower
per message than the C generator: it measures TLS servers, not raw speed.
"""

from __future__ import annotations

import collections
import contextlib
import ssl
import threading
import time
from collections.abc import Awaitable, Callable

import trio

from trioecho.cli._cloadgen import BenchStats, LoadShape
from trioecho.errors import LoadGeneratorError, TLSHandshakeError, TrioEchoError
from trioecho.framing.config import FramingConfig
from trioecho.services.echo import REPLY_SUFFIX
from trioecho.services.greeting import expect_greeting
from trioecho.stream.connect import open_message_stream
from trioecho.stream.message_stream import MessageStream

__all__ = ["TLSLoadGenerator"]

_HEX = b"0123456789abcdef"
_CLOSE_SECONDS = 2.0  # for the connections to end cleanly at close()
_CONNECTING_AT_ONCE = 64  # TLS handshakes in flight while connecting


def _payload(seq: int, size: int) -> bytes:
    """The C generator's payload: hex digits of the sequence number, repeated."""
    return bytes(_HEX[(seq >> (4 * (i % 16))) & 15] for i in range(size))


class TLSLoadGenerator:
    """The ``shape``'s load over TLS connections (line or len framing), every
    reply checked; ``run(seconds)`` returns the statistics of that stretch."""

    def __init__(
        self,
        host: str,
        port: int,
        shape: LoadShape,
        *,
        ssl_context: ssl.SSLContext,
        server_name: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if shape.framing not in ("line", "len"):
            raise ValueError("over TLS, bench supports line and len framing")
        self._host, self._port = host, port
        self._connections, self._depth, self._size = shape.connections, shape.depth, shape.size
        self._framing = FramingConfig(shape.framing)
        self._ssl_context = ssl_context
        self._server_name = server_name or host
        self._connect_timeout = connect_timeout
        self._stats = BenchStats.empty()
        self._open = 0
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            if isinstance(self._error, LoadGeneratorError):
                raise self._error
            raise LoadGeneratorError(f"{type(self._error).__name__}: {self._error}")

    # -- the caller's thread ---------------------------------------------------

    def run(self, seconds: float) -> BenchStats:
        assert self._token is not None
        return trio.from_thread.run(self._collect, seconds, trio_token=self._token)

    def close(self) -> None:
        """Close every connection and stop the loop's thread."""
        if self._stop is not None and self._thread.is_alive():
            assert self._token is not None
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()

    def __enter__(self) -> TLSLoadGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the Trio thread ---------------------------------------------------------

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        streams: list[MessageStream] = []
        with trio.move_on_after(self._connect_timeout) as timeout:
            limit = trio.CapacityLimiter(_CONNECTING_AT_ONCE)
            async with trio.open_nursery() as nursery:
                for _ in range(self._connections):
                    nursery.start_soon(self._connect, limit, streams, nursery.cancel_scope)
        if timeout.cancelled_caught and self._error is None:
            self._error = TimeoutError(f"not connected within {self._connect_timeout:g} s")
        if self._error is not None:
            for stream in streams:
                await trio.aclose_forcefully(stream)
            self._ready.set()
            return
        self._open = len(streams)
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(self._drive, stream)
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()
        # End each connection as a client should (close_notify, FIN, the rest
        # read), so the server logs no resets; at most _CLOSE_SECONDS.
        with trio.move_on_after(_CLOSE_SECONDS):
            async with trio.open_nursery() as closing:
                for stream in streams:
                    closing.start_soon(_close_cleanly, stream)
        for stream in streams:
            await trio.aclose_forcefully(stream)

    async def _connect(
        self,
        limit: trio.CapacityLimiter,
        streams: list[MessageStream],
        connecting: trio.CancelScope,
    ) -> None:
        try:
            async with limit:
                try:
                    stream = await open_message_stream(
                        self._host,
                        self._port,
                        framing=self._framing,
                        ssl_context=self._ssl_context,
                        server_hostname=self._server_name,
                    )
                except TLSHandshakeError as exc:
                    raise LoadGeneratorError(str(exc)) from exc
                streams.append(stream)
                await expect_greeting(stream, self._framing)
        except trio.EndOfChannel:
            self._error = self._error or LoadGeneratorError("closed before the greeting")
            connecting.cancel()
        except (OSError, trio.BrokenResourceError, TrioEchoError, LoadGeneratorError) as exc:
            self._error = self._error or exc
            connecting.cancel()

    async def _collect(self, seconds: float) -> BenchStats:
        self._stats = BenchStats.empty()
        await trio.sleep(seconds)
        stats, self._stats = self._stats, BenchStats.empty()
        stats.open_connections = self._open
        return stats

    async def _drive(self, stream: MessageStream) -> None:
        in_flight: collections.deque[tuple[int, bytes]] = collections.deque()
        slots = trio.Semaphore(self._depth)
        overhead = 1 if self._framing.framing == "line" else 4

        async def send() -> None:
            seq = 0
            while True:
                await slots.acquire()
                batch = [_payload(seq, self._size)]
                while True:  # every free slot in one write
                    try:
                        slots.acquire_nowait()
                    except trio.WouldBlock:
                        break
                    batch.append(_payload(seq + len(batch), self._size))
                seq += len(batch)
                now = time.perf_counter_ns()
                in_flight.extend((now, payload) for payload in batch)
                await stream.send_messages(batch)
                self._stats.sent += len(batch)
                self._stats.bytes_sent += len(batch) * (self._size + overhead)

        async def receive() -> None:
            async for reply in stream:
                sent_at, payload = in_flight.popleft()
                stats = self._stats
                if reply == payload + REPLY_SUFFIX:
                    stats.received += 1
                    stats.bytes_received += len(reply) + overhead
                    stats.record_latency(time.perf_counter_ns() - sent_at)
                else:
                    stats.errors += 1
                    stats.last_error = f"wrong reply {reply[:40]!r}"
                slots.release()
            raise trio.EndOfChannel

        async def until_broken(
            part: Callable[[], Awaitable[None]], scope: trio.CancelScope
        ) -> None:
            try:
                await part()
            except (trio.EndOfChannel, TrioEchoError, trio.BrokenResourceError) as exc:
                if not scope.cancel_called:
                    self._open -= 1
                    self._stats.errors += 1
                    self._stats.last_error = (
                        "connection closed by the server"
                        if isinstance(exc, trio.EndOfChannel)
                        else f"{type(exc).__name__}: {exc}"
                    )
                scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_broken, send, nursery.cancel_scope)
            nursery.start_soon(until_broken, receive, nursery.cancel_scope)


async def _close_cleanly(stream: MessageStream) -> None:
    """Close ``stream`` without losing or resetting anything; a peer that
    breaks it meanwhile only ends it sooner."""
    with contextlib.suppress(
        TrioEchoError, trio.BrokenResourceError, trio.ClosedResourceError, OSError
    ):
        await stream.close_gracefully(_CLOSE_SECONDS, _CLOSE_SECONDS)
