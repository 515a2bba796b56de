"""The C pump forwarding for the relay, against its twin.

``MessageStream.forward_to(sink)`` on the readiness hub is served by the
C pump (a FORWARD connection: every header checked by the C framer's
forwarding scan, the bytes sent to the sink in C) where the hub has one,
and by the Python inline step (``serve_inline(run.step)``) where it does
not.  Both run here on the same traffic, both ways at once as the relay
runs them: peer A <-> S1 (the client's stream, opened as the server opens
it) and S2 (the upstream's, opened as the relay opens it) <-> peer B, with
``S1.forward_to(S2)`` and ``S2.forward_to(S1)`` concurrent.

Every socket's buffers are tiny and the peers read slowly at times, so
both ways come up short (SHORT_SEND: the task sends the rest with the
sink's send rule) while the other way is attached to the pump (a writer
waiting on a pumped socket hears its output edges only through
``want_output``: without it that way hangs, and ``trio.fail_after`` fails
it).  The peers write random splits and merges of frames of 0 and 1 byte,
at the read size -1/0/+1 (and the hub's turn, where a socket can hold
it), and larger than the socket buffers; then A's way ends as its case says: A's end of input, an
over-long or malformed header (the bytes before it reach B, then
``forward_to`` raises its error), an end inside a frame or a header
(IncompleteFrameError), or B's reset (the way down fails reading, then the
way up fails sending: SinkError).  Two profiles: the relay's read size and
the hub's turn, and a read of 7 bytes and a turn of 50 (headers split
across reads, turns used up: PUMP_AGAIN).

Each side's bytes received by A and B, what each ``forward_to`` raised,
and the eight counters must be what the pure-Python framer's forwarding
scan says, and the same on both paths; the pump's side must show the pump
forwarded (its FORWARD outcomes, by socket).  Without the C pump, or with
``TRIOECHO_PUREPYTHON=1`` (no C scanner to forward with), the twin's side
still runs and the pump's side is skipped.

Two cases are pinned down on their own, on both paths: a way waiting to
write a socket the other way's pump reads (its output edges reach it), and
a sink that closes while the pump forwards to it (the pump lets go first).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from test_pump import (
    PUMP_LIB,
    Inbox,
    assert_same_bytes,
    payload,
    read_replies,
    serving,
    split_writes,
)

from trioecho import FramingConfig
from trioecho.errors import FramingError, SinkError
from trioecho.framing import presets
from trioecho.io import hub as hub_module
from trioecho.io.budget import MemoryBudget
from trioecho.io.hub import DEFAULT_TURN_BYTES, MAX_EVENTS, ReadinessHub
from trioecho.io.opening import open_transport
from trioecho.io.pump import (
    END_OF_INPUT,
    ENDED,
    EVENT,
    PUMP_AGAIN,
    SHORT_SEND,
    SOCKET_ERROR,
    Pump,
    PumpedConnection,
)
from trioecho.server.server import DEFAULT_MIN_SEND_RATE
from trioecho.services.relay import RELAY_READ_SIZE
from trioecho.services.relay_config import DEFAULT_RELAY_SEND_TIMEOUT
from trioecho.stream.message_stream import MessageStream

BUFFER = 4096  # SO_SNDBUF / SO_RCVBUF of every socket (the kernel doubles it)
RUN_LIMIT = 30.0  # seconds one side of a case may take: a hang fails, it does not block CI
OUTPUT_EDGE = -1  # recorded for an output edge the pump reported for an attached socket


def forwarding_unavailable() -> str | None:
    """Why the C pump cannot forward here, or None."""
    if PUMP_LIB is None:
        return "the C pump (trioecho._pump_ffi) is not built"
    if os.environ.get("TRIOECHO_PUREPYTHON", "") not in ("", "0"):
        return "TRIOECHO_PUREPYTHON=1: the framers have no C scanner for the pump to forward with"
    framer: Any = FramingConfig("len").new_framer()
    if framer.forwarding_state() is None:
        return "the C framer (trioecho._framer_ffi) is not built: no scanner to forward with"
    return None


needs_pump_forwarding = pytest.mark.skipif(
    forwarding_unavailable() is not None, reason=f"the pump's side: {forwarding_unavailable()}"
)


# -- the cases ----------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """The streams' read size, the hub's turn, and ``max_frame``."""

    name: str
    read_size: int
    turn_bytes: int
    max_frame: int


RELAY = Profile("relay", RELAY_READ_SIZE, DEFAULT_TURN_BYTES, 150_000)
SMALL = Profile("small", 7, 50, 20_000)


@dataclass(frozen=True)
class Framing:
    """A length framing: its configuration for ``max_frame`` and how a
    frame of a body is written (its header's size, and a header of any
    length field, for the bad headers)."""

    name: str
    header_size: int

    def config(self, max_frame: int) -> FramingConfig:
        if self.name == "len":
            return FramingConfig("len", max_frame=max_frame)
        # PostgreSQL's messages (its second phase): a type byte, then a
        # length counting itself and the body.
        return presets.postgresql("server", max_frame=max_frame)

    def header(self, field: int) -> bytes:
        if self.name == "len":
            return field.to_bytes(4, "big")
        return b"D" + field.to_bytes(4, "big")

    def frame(self, body: bytes) -> bytes:
        return self.header(len(body) + (0 if self.name == "len" else 4)) + body


LEN = Framing("len", 4)
PG = Framing("pg", 5)

# How A's way ends (B's way ends with B's end of input, or B's reset).
ENDINGS = ("eof", "too-long", "bad-header", "eof-in-frame", "eof-in-header", "reset")


@dataclass(frozen=True)
class Case:
    framing: Framing
    profile: Profile
    ending: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.framing.name}-{self.profile.name}-{self.ending}"

    @property
    def config(self) -> FramingConfig:
        return self.framing.config(self.profile.max_frame)


def _cases() -> list[Case]:
    cases: list[Case] = []
    for framing in (LEN, PG):
        for profile in (RELAY, SMALL):
            for ending in ENDINGS:
                cases.append(Case(framing, profile, ending, len(cases) * 7919 + 11))
    return cases


CASES = _cases()


def body_sizes(case: Case, rng: random.Random) -> list[int]:
    """Bodies of 0 and 1 byte, small random ones, at the read size and the
    hub's turn -1/0/+1 (the frame's size, and the body's), larger than
    every socket buffer, and ``max_frame``; shuffled."""
    profile, header = case.profile, case.framing.header_size
    sizes = {0, 1, profile.max_frame}
    edges = [profile.read_size]
    if profile.turn_bytes < 4 * BUFFER:  # a socket never holds a larger turn's worth
        edges.append(profile.turn_bytes)
    for size in edges:
        sizes.update(size - header + d for d in (-1, 0, 1))
        sizes.update(size + d for d in (-1, 0, 1))
    sizes.update((3 * BUFFER, profile.max_frame // 3))
    top = 3000 if profile is RELAY else 200
    listed = sorted(s for s in sizes if 0 <= s <= profile.max_frame)
    listed += [rng.choice((0, 1, 2, 5, 60, rng.randint(0, top))) for _ in range(30)]
    rng.shuffle(listed)
    return listed


def frames(case: Case, rng: random.Random) -> bytes:
    return b"".join(case.framing.frame(payload(rng, n)) for n in body_sizes(case, rng))


def ending_tail(case: Case) -> bytes:
    """The bytes after A's frames that end A's way as ``case.ending`` says."""
    framing, limit = case.framing, case.profile.max_frame
    over = limit + 1 + (0 if framing is LEN else 4)  # a length field one over max_frame
    tails = {
        "too-long": framing.header(over),
        # A length field the framing refuses outright: 4 GiB - 1 for len,
        # below the length field's own 4 bytes for PostgreSQL.
        "bad-header": framing.header(0xFFFFFFFF if framing is LEN else 3),
        "eof-in-frame": framing.frame(b"0123456789")[:-7],
        "eof-in-header": framing.header(10)[:2],
    }
    return tails.get(case.ending, b"")


@dataclass(frozen=True)
class Traffic:
    """What the peers write: A's bytes up to its ending (its tail
    included), what A writes after B's reset, and B's bytes."""

    up: bytes
    after_reset: bytes
    down: bytes


def traffic(case: Case) -> Traffic:
    rng = random.Random(case.seed)
    up = frames(case, rng) + ending_tail(case)
    after = case.framing.frame(b"after the reset") if case.ending == "reset" else b""
    return Traffic(up, after, frames(case, rng))


# -- what the pure-Python forwarding scan says -----------------------------------


Ending = tuple[Any, ...]  # ("returned",) or ("raised", type, text[, cause type, cause text])


def ending_of(exc: Exception | None) -> Ending:
    if exc is None:
        return ("returned",)
    if isinstance(exc, SinkError):
        cause = exc.error
        return ("raised", type(exc).__name__, str(exc), type(cause).__name__, str(cause))
    return ("raised", type(exc).__name__, str(exc))


def forwarded(config: FramingConfig, data: bytes, *, eof: bool) -> tuple[bytes, int, Ending]:
    """What forwarding ``data`` passes on, the frames it completes, and how
    it ends (``eof``: the input ends after ``data``), by the pure-Python
    framer's forwarding scan."""
    framer: Any = dataclasses.replace(config, implementation="python").new_framer()
    chunk, count, error = framer.forward(data)
    if error is None and eof:
        try:
            framer.feed_eof()
        except FramingError as exc:
            error = exc
    return bytes(chunk), count, ending_of(error)


def first_sent_read(config: FramingConfig, data: bytes, read_size: int) -> bytes:
    """``data``, alone in the socket, up to the end of the first read of
    ``read_size`` that forwarding passes bytes on from (a read that ends
    inside the first header passes nothing on, and the next read follows)."""
    end = 0
    while end < len(data):
        end = min(end + read_size, len(data))
        if forwarded(config, data[:end], eof=False)[0]:
            break
    return data[:end]


@dataclass
class Relayed:
    """What one side of a case did: the bytes B and A received, how each
    ``forward_to`` ended (up: S1 to S2, down: S2 to S1), the counters
    (S1's, then S2's: messages received, sent; bytes received, sent), and
    the pump's outcomes by way (``"up"``: on S1's socket, ``"down"``: S2's)."""

    to_b: bytes
    to_a: bytes
    up: Ending
    down: Ending
    counters: tuple[int, ...]
    outcomes: Counter[tuple[str, int]] = field(default_factory=Counter)


def reset_text(code: str, doing: str) -> str:
    """The text of the transport's error for the errno named ``code``."""
    number = getattr(errno, code)
    return f"connection broken while {doing}: [Errno {number}] {os.strerror(number)}"


def expected(case: Case, sent: Traffic) -> Relayed:
    config = case.config
    reset = case.ending == "reset"
    to_b, up_frames, up = forwarded(config, sent.up, eof=not reset)
    to_a, down_frames, _ = forwarded(config, sent.down, eof=True)
    down: Ending = ("returned",)
    up_received, up_bytes = up_frames, len(sent.up)
    if reset:
        # B's reset: the way down fails reading it; then A's next frame is
        # read and counted, and sending it on fails.
        down = ("raised", "ConnectionClosedError", reset_text("ECONNRESET", "receiving or sending"))
        cause = reset_text("EPIPE", "sending")
        up = ("raised", "SinkError", f"sending on: ConnectionClosedError: {cause}")
        up += ("ConnectionClosedError", cause)
        read = first_sent_read(config, sent.after_reset, case.profile.read_size)
        up_received += forwarded(config, read, eof=False)[1]
        up_bytes += len(read)
    s1 = (up_received, down_frames, up_bytes, len(to_a))
    s2 = (down_frames, up_frames, len(sent.down), len(to_b))
    return Relayed(to_b, to_a, up, down, s1 + s2)


# -- one side: the hub, the sockets, the streams, the peers ---------------------


class RecordingPump(Pump):
    """A :class:`Pump` that records every outcome it returns, by socket,
    and tells the output edges it reports for a socket attached to it (a
    task waits to write it: ``want_output``) as OUTPUT_EDGE."""

    record: Counter[tuple[int, int]]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.record = Counter()
        self.attached: set[int] = set()  # the sockets attached now

    def attach(self, fd: int, conn: PumpedConnection) -> None:
        super().attach(fd, conn)
        self.attached.add(fd)

    def detach(self, fd: int) -> None:
        super().detach(fd)
        self.attached.discard(fd)

    def serve(self, fd: int) -> int:
        outcome = super().serve(fd)
        self.record[fd, outcome] += 1
        return outcome

    def turn(self, owed: list[int]) -> list[tuple[int, int, int]]:
        events = super().turn(owed)
        for fd, _, outcome in events:  # in the pump's order
            attached = fd in self.attached
            self.record[fd, OUTPUT_EDGE if outcome == EVENT and attached else outcome] += 1
            if outcome not in (EVENT, PUMP_AGAIN):
                self.attached.discard(fd)  # handed back: the pump detached it
        return events


def make_hub(pump: bool, profile: Profile, monkeypatch: pytest.MonkeyPatch) -> ReadinessHub:
    with monkeypatch.context() as patch:
        patch.setattr(hub_module, "Pump", RecordingPump)
        hub = ReadinessHub(MAX_EVENTS, profile.turn_bytes, pump=pump)
    assert hub.pumps == pump
    return hub


async def small_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A loopback TCP connection, (connecting side, accepted side), every
    send and receive buffer tiny."""
    with trio.socket.socket() as listener:
        connecting = trio.socket.socket()
        for sock in (listener, connecting):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        await connecting.connect(listener.getsockname())
        accepted, _ = await listener.accept()
    return trio.SocketStream(connecting), trio.SocketStream(accepted)


def relay_streams(
    client: trio.SocketStream, upstream: trio.SocketStream, case: Case
) -> tuple[MessageStream, MessageStream]:
    """(S1, S2) as ``relay_server`` opens them: the client's stream as
    ``MessageServer._open_stream`` does (no idle timeout: the relay's own;
    the relay's send rule; deadlines handed over; an account), its read
    size set by ``_relay_connection``; the upstream's as
    ``_relay_connection`` opens it (an account of the same budget).  Both
    on the hub, whatever ``TRIOECHO_READINESS`` says."""
    budget = MemoryBudget()
    send_rule: dict[str, Any] = {
        "send_timeout": DEFAULT_RELAY_SEND_TIMEOUT,
        "min_send_rate": DEFAULT_MIN_SEND_RATE,
    }
    transport = open_transport(client, idle_timeout=None, readiness="hub", **send_rule)
    transport.hand_over_deadlines()
    s1 = MessageStream(transport, case.config, account=budget.open_account())
    s1.receive_size = case.profile.read_size
    s2 = MessageStream(
        upstream,
        case.config,
        receive_size=case.profile.read_size,
        readiness="hub",
        account=budget.open_account(),
        **send_rule,
    )
    return s1, s2


async def forward(
    source: MessageStream, sink: MessageStream, way: str, endings: dict[str, Ending]
) -> None:
    """``source.forward_to(sink)``, how it ended in ``endings[way]``; then,
    as the relay's pump, the end of ``sink``'s sending side (unless
    sending to it failed, or it is closed)."""
    error: Exception | None = None
    try:
        await source.forward_to(sink)
    except Exception as exc:
        error = exc
    endings[way] = ending_of(error)
    if not (isinstance(error, SinkError) or sink.transport.closed):
        await sink.send_eof()


async def write(peer: trio.SocketStream, data: bytes, rng: random.Random) -> None:
    """``data`` in random writes, at times after every other task blocked."""
    for chunk in split_writes(rng, data) if data else []:
        await peer.send_all(chunk)
        if rng.random() < 0.3:
            await trio.testing.wait_all_tasks_blocked()


@dataclass
class Rig:
    """One side's relay: its hub, peer A and S1 (the client's connection),
    S2 and peer B (the upstream's)."""

    hub: ReadinessHub
    peer_a: trio.SocketStream
    s1: MessageStream
    s2: MessageStream
    peer_b: trio.SocketStream
    ways: dict[int, str]  # the socket of S1 ("up": its way reads it), of S2 ("down")

    def counters(self) -> tuple[int, ...]:
        """S1's, then S2's: messages received, sent; bytes received, sent."""
        return tuple(
            getattr(stream, name)
            for stream in (self.s1, self.s2)
            for name in ("messages_received", "messages_sent", "bytes_received", "bytes_sent")
        )

    def outcomes(self) -> Counter[tuple[str, int]]:
        """What the pump returned, by way (none without a pump)."""
        by_way: Counter[tuple[str, int]] = Counter()
        pump = self.hub._pump
        if isinstance(pump, RecordingPump):
            for (fd, outcome), count in pump.record.items():
                by_way[self.ways[fd], outcome] += count
        return by_way

    def attached(self, way: str) -> bool:
        """Whether the pump serves ``way``'s source now."""
        pump = self.hub._pump
        fd = next(fd for fd, name in self.ways.items() if name == way)
        return isinstance(pump, RecordingPump) and fd in pump.attached


@asynccontextmanager
async def relay_rig(case: Case, pump: bool, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    """A relay's two connections on a hub with the pump or without, every
    stream and socket closed after the block."""
    hub = make_hub(pump, case.profile, monkeypatch)
    async with serving(hub):
        peer_a, client = await small_pair()
        upstream, peer_b = await small_pair()
        s1, s2 = relay_streams(client, upstream, case)
        for stream in (s1, s2):
            assert stream.transport.can_pump == pump
            assert stream.transport.can_serve_inline
        ways = {client.socket.fileno(): "up", upstream.socket.fileno(): "down"}
        try:
            yield Rig(hub, peer_a, s1, s2, peer_b, ways)
        finally:
            for stream in (s1, s2):
                await stream.aclose()
            for peer in (peer_a, peer_b):
                await peer.aclose()


async def run_side(
    case: Case, sent: Traffic, want: Relayed, pump: bool, monkeypatch: pytest.MonkeyPatch
) -> Relayed:
    """Relay ``sent`` with the pump or its twin; what the peers and the streams saw."""
    to_a, to_b = Inbox(), Inbox()
    endings: dict[str, Ending] = {}
    reset = case.ending == "reset"
    up_done, down_done = trio.Event(), trio.Event()
    async with relay_rig(case, pump, monkeypatch) as rig:
        peer_a, peer_b = rig.peer_a, rig.peer_b

        async def way(
            source: MessageStream, sink: MessageStream, name: str, done: trio.Event
        ) -> None:
            await forward(source, sink, name, endings)
            done.set()

        async def a_writes() -> None:
            await write(peer_a, sent.up, random.Random(case.seed + 2))
            if reset:
                await down_done.wait()  # B's reset was read: sending to it now fails
                await peer_a.send_all(sent.after_reset)
            elif case.ending.startswith("eof"):
                await peer_a.send_eof()

        async def b_writes() -> None:
            await write(peer_b, sent.down, random.Random(case.seed + 3))
            if reset:
                await to_a.wait_for(len(want.to_a))
                await to_b.wait_for(len(want.to_b))
                await trio.testing.wait_all_tasks_blocked()  # both ways wait for input
                await reset_connection(peer_b)
            else:
                await up_done.wait()  # A's way ends first, with this one open
                await peer_b.send_eof()

        with trio.fail_after(RUN_LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(way, rig.s1, rig.s2, "up", up_done)
                nursery.start_soon(way, rig.s2, rig.s1, "down", down_done)
                b_until = len(want.to_b) if reset else None
                nursery.start_soon(
                    read_replies, peer_b, to_b, random.Random(case.seed + 1), b_until
                )
                nursery.start_soon(read_replies, peer_a, to_a, random.Random(case.seed + 4), None)
                nursery.start_soon(a_writes)
                nursery.start_soon(b_writes)
        counters = rig.counters()
    return Relayed(
        bytes(to_b.data), bytes(to_a.data), endings["up"], endings["down"], counters, rig.outcomes()
    )


async def reset_connection(peer: trio.SocketStream) -> None:
    """Close ``peer`` with a reset (SO_LINGER 0)."""
    peer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await peer.aclose()


def assert_same(got: Relayed, want: Relayed, what: str) -> None:
    assert_same_bytes(got.to_b, want.to_b, f"{what}: the bytes B received")
    assert_same_bytes(got.to_a, want.to_a, f"{what}: the bytes A received")
    assert got.up == want.up, f"{what}: how S1.forward_to(S2) ended"
    assert got.down == want.down, f"{what}: how S2.forward_to(S1) ended"
    assert got.counters == want.counters, f"{what}: the counters (S1's, then S2's)"


def pump_must_have_seen(case: Case) -> set[tuple[str, int]]:
    """The (way, outcome) every run of ``case`` returns from the pump."""
    up = {
        "eof": END_OF_INPUT,
        "too-long": ENDED,
        "bad-header": ENDED,
        "eof-in-frame": END_OF_INPUT,
        "eof-in-header": END_OF_INPUT,
        "reset": SOCKET_ERROR,
    }[case.ending]
    down = SOCKET_ERROR if case.ending == "reset" else END_OF_INPUT
    must = {("up", up), ("down", down), ("up", SHORT_SEND), ("down", SHORT_SEND)}
    if case.profile is SMALL:
        must |= {("up", PUMP_AGAIN), ("down", PUMP_AGAIN)}
    return must


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_the_twin_forwards_what_the_framer_says(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The twin's side of the differential, in every environment."""
    sent = traffic(case)
    want = expected(case, sent)
    twin = await run_side(case, sent, want, False, monkeypatch)
    assert_same(twin, want, "the twin against the pure-Python forwarding scan")


@needs_pump_forwarding
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_the_pump_forwards_what_its_twin_does(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sides of the differential, on the same traffic."""
    sent = traffic(case)
    want = expected(case, sent)
    twin = await run_side(case, sent, want, False, monkeypatch)
    assert_same(twin, want, "the twin against the pure-Python forwarding scan")
    pumped = await run_side(case, sent, want, True, monkeypatch)
    assert_same(pumped, twin, "the pump against its twin")
    missing = pump_must_have_seen(case) - set(pumped.outcomes)
    assert not missing, f"the pump never returned {sorted(missing)}: {pumped.outcomes}"


# -- a writer waiting on a pumped socket; a sink that closes ---------------------


ONE_FRAME = Case(LEN, RELAY, "eof", seed=5)
BOTH = [pytest.param(True, marks=needs_pump_forwarding), False]


async def receive_exactly(peer: trio.SocketStream, size: int) -> bytes:
    """``size`` bytes from ``peer`` (fewer if it ends first)."""
    data = bytearray()
    while len(data) < size:
        chunk = await peer.receive_some(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


@pytest.mark.parametrize("pump", BOTH, ids=["pump", "twin"])
async def test_a_way_waiting_to_write_a_pumped_socket_hears_its_output_edges(
    pump: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The way up waits to send S2 a frame larger than every buffer while
    the way down is attached to the pump, reading S2 (B sends nothing):
    the pump reports S2's output edges to the waiting task
    (``want_output``), so the frame goes through as B reads (without them
    the way up would wait until the time limit)."""
    frame = LEN.frame(payload(random.Random(3), RELAY.max_frame))
    endings: dict[str, Ending] = {}
    async with relay_rig(ONE_FRAME, pump, monkeypatch) as rig:

        async def a_writes() -> None:
            await rig.peer_a.send_all(frame)
            await rig.peer_a.send_eof()

        with trio.fail_after(RUN_LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward, rig.s1, rig.s2, "up", endings)
                nursery.start_soon(forward, rig.s2, rig.s1, "down", endings)
                nursery.start_soon(a_writes)
                await trio.testing.wait_all_tasks_blocked()
                assert rig.attached("down") == pump  # S2, which the way up waits to write
                assert not rig.attached("up")  # its task waits
                got = await receive_exactly(rig.peer_b, len(frame) + 1)
                await rig.peer_b.send_eof()
                assert await receive_exactly(rig.peer_a, 1) == b""
        counters = rig.counters()
    assert_same_bytes(got, frame, "what B received")
    assert endings == {"up": ("returned",), "down": ("returned",)}
    assert counters == (1, 0, len(frame), 0, 0, 1, 0, len(frame))
    if pump:
        outcomes = rig.outcomes()
        assert outcomes["up", SHORT_SEND] and outcomes["down", OUTPUT_EDGE], outcomes


@pytest.mark.parametrize("pump", BOTH, ids=["pump", "twin"])
async def test_a_sink_that_closes_detaches_its_source_first(
    pump: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S2 closes while the way up is attached to the pump, forwarding to it:
    the pump lets go of S1 first (a closed socket's number may be reused at
    once), and A's next frame finds the sink closed (ClosedResourceError)
    on both paths, its bytes sent nowhere."""
    first, then = LEN.frame(b"before"), LEN.frame(b"after the close")
    endings: dict[str, Ending] = {}
    async with relay_rig(ONE_FRAME, pump, monkeypatch) as rig:
        with trio.fail_after(RUN_LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward, rig.s1, rig.s2, "up", endings)
                await rig.peer_a.send_all(first)
                got = await receive_exactly(rig.peer_b, len(first))
                await trio.testing.wait_all_tasks_blocked()
                assert rig.attached("up") == pump
                await rig.s2.aclose()
                assert not rig.attached("up")
                await rig.peer_a.send_all(then)
            assert await receive_exactly(rig.peer_b, 1) == b""  # nothing after the close
        counters = rig.counters()
    assert got == first
    assert endings == {"up": ("raised", "ClosedResourceError", "the message stream was closed")}
    assert counters == (2, 0, len(first) + len(then), 0, 0, 1, 0, len(first))
    if pump:
        assert rig.outcomes()["up", SHORT_SEND] == 0
