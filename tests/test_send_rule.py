"""The send rule (``trioecho.io.send_deadline``) on both transports and the
lossless close, with paced readers on Trio's mock clock: a send is cut when
its peer has taken nothing for ``send_timeout`` seconds (the deadline
restarts at each progress), or reads below ``min_send_rate`` once past it;
a slow but steady reader is served in full.

The process-level tests (real servers, the relay) are in
``test_slow_readers.py``.
"""

from __future__ import annotations

import re
import socket

import pytest
import trio
import trio.testing
from support.helpers import socket_stream_pair

from trioecho import SlowReaderError
from trioecho.io.opening import open_transport
from trioecho.io.readiness import Readiness
from trioecho.io.send_deadline import SendDeadline
from trioecho.io.socket_transport import SocketTransport
from trioecho.io.stream_transport import SEND_CHUNK, StreamTransport
from trioecho.io.transport import Transport

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class PacedReader:
    """Reads ``step`` bytes every ``interval`` seconds (mock time) until
    ``stop_after`` bytes (then reads no more) or the end of the stream."""

    def __init__(self, stream: trio.abc.Stream, step: int, interval: float) -> None:
        self.stream = stream
        self.step = step
        self.interval = interval
        self.received = bytearray()
        self.last_read = trio.current_time()
        self.ended = False

    async def run(self, stop_after: int | None = None) -> None:
        while stop_after is None or len(self.received) < stop_after:
            await trio.sleep(self.interval)
            wanted = self.step
            if stop_after is not None:
                wanted = min(wanted, stop_after - len(self.received))
            data = await self.stream.receive_some(wanted)
            if not data:
                self.ended = True
                return
            self.received += data
            self.last_read = trio.current_time()
        await trio.sleep_forever()


async def _send_while_reading(
    transport: Transport, reader: PacedReader, payload: bytes, stop_after: int | None = None
) -> tuple[float, SlowReaderError | None]:
    """Send ``payload`` while ``reader`` reads: the mock time the send
    took, and the SlowReaderError that cut it, if one did."""
    start = trio.current_time()
    cut = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.run, stop_after)
        try:
            await transport.send_all(payload)
        except SlowReaderError as exc:
            cut = exc
        nursery.cancel_scope.cancel()
    return trio.current_time() - start, cut


# -- the rule itself -----------------------------------------------------------


def test_the_deadline_restarts_at_each_progress_and_the_floor_bounds_it() -> None:
    rule = SendDeadline(5.0, 1000.0, 100.0)
    assert rule.deadline == 105.0
    assert rule.took(0, 103.0) == 105.0  # no progress: no move
    # 8000 bytes by 104: the floor allows until 100 + 8 (+5), the stall until 104 (+5).
    assert rule.took(8000, 104.0) == 109.0
    assert not rule.below_floor
    assert str(rule.error(109.0)) == (
        "peer did not read its replies: the send stalled for send_timeout=5.0s"
    )
    # 2000 more by 112: 10 s of credit, less than the 12 s gone: the floor decides.
    assert rule.took(2000, 112.0) == 115.0
    assert rule.below_floor
    assert str(rule.error(115.0)) == (
        "peer read its replies too slowly: 10000 bytes in 15.0 s of a blocked send, "
        "below min_send_rate=1000 bytes/s"
    )


def test_without_a_floor_only_stalls_count() -> None:
    rule = SendDeadline(2.5, None, 0.0)
    assert rule.took(1, 1000.0) == 1002.5
    assert not rule.below_floor


# -- StreamTransport: a lockstep stream, whose send_all returns once read -------


def _lockstep(
    send_timeout: float, min_send_rate: float | None, interval: float = 0.1
) -> tuple[Transport, PacedReader]:
    reader_end, sender_end = trio.testing.lockstep_stream_pair()
    transport = open_transport(sender_end, send_timeout=send_timeout, min_send_rate=min_send_rate)
    assert isinstance(transport, StreamTransport)
    return transport, PacedReader(reader_end, 2048, interval)


async def test_stream_transport_serves_a_steady_reader_in_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """20 KB/s for a 1 MiB send with send_timeout=5: 51.2 s, every byte (the
    first release cut it at 5 s)."""
    transport, reader = _lockstep(5.0, 1024.0)
    took, cut = await _send_while_reading(transport, reader, PAYLOAD)
    assert cut is None
    assert reader.received == PAYLOAD
    assert took == pytest.approx(len(PAYLOAD) / 2048 * 0.1)
    assert transport.bytes_sent == len(PAYLOAD)


async def test_stream_transport_cuts_a_stopped_reader_one_send_timeout_after_its_last_chunk(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, reader = _lockstep(5.0, 1024.0)
    start = trio.current_time()
    stop_after = 5 * SEND_CHUNK  # 40 reads: the fifth chunk is taken at 4.0 s
    _, cut = await _send_while_reading(transport, reader, PAYLOAD, stop_after)
    assert str(cut) == "peer did not read its replies: the send stalled for send_timeout=5.0s"
    assert reader.received == PAYLOAD[:stop_after]
    assert reader.last_read - start == pytest.approx(4.0)
    assert trio.current_time() - reader.last_read == pytest.approx(5.0)
    assert transport.closed


async def test_stream_transport_cuts_a_reader_below_the_floor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """4 KB/s against a floor of 10,000 bytes/s: the first chunk (taken at
    4 s) buys 1.6384 s, so the send is cut at 6.6384 s, by the floor."""
    transport, reader = _lockstep(5.0, 10_000.0, interval=0.5)
    took, cut = await _send_while_reading(transport, reader, PAYLOAD)
    assert str(cut) == (
        "peer read its replies too slowly: 16384 bytes in 6.6 s of a blocked send, "
        "below min_send_rate=10000 bytes/s"
    )
    assert took == pytest.approx(5 + SEND_CHUNK / 10_000)


async def test_stream_transport_sends_up_to_a_chunk_in_one_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Up to SEND_CHUNK bytes go to the stream's send_all whole, as before;
    more go a chunk at a time."""
    sizes: list[int] = []
    sender = trio.testing.MemorySendStream()

    class Counting(trio.abc.SendStream):
        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            sizes.append(memoryview(data).nbytes)
            await sender.send_all(data)

        async def wait_send_all_might_not_block(self) -> None:
            await sender.wait_send_all_might_not_block()

        async def aclose(self) -> None:
            await sender.aclose()

    transport = StreamTransport(Counting(), send_timeout=1.0)  # type: ignore[arg-type]
    await transport.send_all(b"w" * (SEND_CHUNK - 1))
    await transport.send_all(b"x" * SEND_CHUNK)
    await transport.send_all(b"y" * (SEND_CHUNK + 1))
    await transport.send_all(b"z" * (2 * SEND_CHUNK + 1))
    assert sizes == [SEND_CHUNK - 1, SEND_CHUNK, SEND_CHUNK, 1, SEND_CHUNK, SEND_CHUNK, 1]
    assert sender.get_data_nowait() == (
        b"w" * (SEND_CHUNK - 1)
        + b"x" * SEND_CHUNK
        + b"y" * (SEND_CHUNK + 1)
        + b"z" * (2 * SEND_CHUNK + 1)
    )
    assert transport.bytes_sent == 5 * SEND_CHUNK + 1


# -- SocketTransport: a socket pair with a small send buffer --------------------


def _socket_pair(
    readiness: Readiness, send_timeout: float, min_send_rate: float | None
) -> tuple[Transport, trio.SocketStream]:
    reader_end, sender_end = socket_stream_pair()
    # The smallest buffer: the kernel shows the reader's progress every
    # couple of KiB (a unix socket wakes its writer once it is nearly empty).
    sender_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2048)
    transport = open_transport(
        sender_end, send_timeout=send_timeout, min_send_rate=min_send_rate, readiness=readiness
    )
    assert isinstance(transport, SocketTransport)
    return transport, reader_end


@pytest.mark.parametrize("readiness", ["hub", "trio"])
async def test_socket_transport_serves_a_steady_reader_in_full(
    readiness: Readiness, autojump_clock: trio.testing.MockClock
) -> None:
    """Up to 20 KB/s (2 KiB reads every 0.1 s, fewer bytes when the kernel
    has not refilled the socket yet) for 256 KiB with send_timeout=1: over
    12.8 s, every byte (the first release cut it at 1 s)."""
    transport, reader_end = _socket_pair(readiness, 1.0, 1024.0)
    reader = PacedReader(reader_end, 2048, 0.1)
    took, cut = await _send_while_reading(transport, reader, PAYLOAD[: 256 * 1024])
    assert cut is None
    while len(reader.received) < 256 * 1024:  # what the kernel still holds
        reader.received += await reader_end.receive_some(65536)
    assert reader.received == PAYLOAD[: 256 * 1024]
    assert 12 < took < 30


@pytest.mark.parametrize("readiness", ["hub", "trio"])
async def test_socket_transport_cuts_a_stopped_reader_one_send_timeout_after(
    readiness: Readiness, autojump_clock: trio.testing.MockClock
) -> None:
    transport, reader_end = _socket_pair(readiness, 1.0, 1024.0)
    reader = PacedReader(reader_end, 2048, 0.1)
    _, cut = await _send_while_reading(transport, reader, PAYLOAD, stop_after=64 * 1024)
    assert str(cut) == "peer did not read its replies: the send stalled for send_timeout=1.0s"
    assert reader.received == PAYLOAD[: 64 * 1024]
    # The kernel shows the last progress at the last read, or a read or two before.
    assert 0.6 <= trio.current_time() - reader.last_read <= 1.0 + 1e-9
    assert transport.closed


@pytest.mark.parametrize("readiness", ["hub", "trio"])
async def test_socket_transport_cuts_a_reader_below_the_floor(
    readiness: Readiness, autojump_clock: trio.testing.MockClock
) -> None:
    """At most 4 KB/s against a floor of 10,000 bytes/s with send_timeout=2:
    cut by the floor after 2 s (the grace) and before 2 / (1 - 0.41) = 3.4 s;
    it never stalls that long."""
    transport, reader_end = _socket_pair(readiness, 2.0, 10_000.0)
    reader = PacedReader(reader_end, 2048, 0.5)
    took, cut = await _send_while_reading(transport, reader, PAYLOAD)
    assert cut is not None
    assert re.fullmatch(
        r"peer read its replies too slowly: \d+ bytes in \d+\.\d s of a blocked send, "
        r"below min_send_rate=10000 bytes/s",
        str(cut),
    ), str(cut)
    assert 2.0 < took < 3.5


# -- the lossless close ------------------------------------------------------

CLOSE_QUEUED = 200 * 1024


async def _close_while_reading(
    stop_after: int | None, send_timeout: float | None
) -> tuple[float, float, PacedReader]:
    """Queue 200 KiB in a socket, then close it gracefully (linger 2 s)
    while a 20 KB/s reader reads (until ``stop_after`` bytes, else to the
    end).  Returns when the close began and ended, and the reader."""
    reader_end, sender_end = socket_stream_pair()
    sender_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    transport = open_transport(sender_end, send_timeout=send_timeout, min_send_rate=1024.0)
    await transport.send_all(PAYLOAD[:CLOSE_QUEUED])  # the kernel takes it all at once
    reader = PacedReader(reader_end, 2048, 0.1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.run, stop_after)
        began = trio.current_time()
        await transport.close_gracefully(2.0)
        ended = trio.current_time()
        if stop_after is None:
            with trio.fail_after(60):
                while not reader.ended:
                    await trio.sleep(1)
        nursery.cancel_scope.cancel()
    return began, ended, reader


async def test_the_lossless_close_waits_for_a_steady_reader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """200 KiB at 20 KB/s takes 10 s: with send_timeout=3 the close goes on
    while the reader reads (the first release gave up after 3 s), then
    waits ``linger`` (2 s) for its end."""
    began, ended, reader = await _close_while_reading(None, 3.0)
    assert reader.received == PAYLOAD[:CLOSE_QUEUED]
    assert reader.ended
    assert reader.last_read < ended
    # All delivered by about 10 s, seen within a look (0.75 s), then the linger.
    assert 10 + 2 <= ended - began <= 10 + 0.75 + 2 + 0.1


async def test_the_lossless_close_ends_a_stalled_reader_by_the_send_rule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The reader stops after 2 s: the close ends one send_timeout (3 s)
    after the last progress it saw, which came at its last read or before
    (it looks every 0.75 s)."""
    began, ended, reader = await _close_while_reading(40 * 1024, 3.0)
    assert reader.received == PAYLOAD[: 40 * 1024]
    assert reader.last_read - began == pytest.approx(2.0)
    assert ended - began >= 3.0
    assert ended - reader.last_read <= 3.0 + 0.75 + 1e-9


async def test_without_a_send_timeout_the_close_waits_linger_for_progress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No send_timeout: the reader must show progress every ``linger``
    seconds (2; looked at every 0.5 s)."""
    began, ended, reader = await _close_while_reading(40 * 1024, None)
    assert reader.received == PAYLOAD[: 40 * 1024]
    assert ended - began >= 2.0
    assert ended - reader.last_read <= 2.0 + 0.5 + 1e-9
