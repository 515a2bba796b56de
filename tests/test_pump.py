"""The C pump (``csrc/pump.c``, :mod:`trioecho.io.pump`) and its twin, the
Python inline step (``SocketTransport.serve_inline`` with the session's step).

* Differential: the same traffic, over loopback TCP with tiny socket
  buffers, through ``MessageStream.run_session(EchoSession(...))`` on a
  stream opened as the server opens it, served once by a hub with the pump
  and once by a hub without: the same bytes on the wire, the same ending,
  the same counters, and both as the pure-Python echo session says.
* Descriptor reuse: a descriptor number closed and reused between two turns
  is never served with the old connection's state (at the pump's level,
  through the hub, and after a task cancelled while the pump served it).
* The pump's edges, through :mod:`trioecho.io.pump` on a real epoll set:
  read sizes, the input buffer, output larger than the pump's buffer, each
  outcome, and ``te_pump_turn``'s refusal of a short ``out`` array.

The differential tests build their hubs themselves (``ReadinessHub(pump=...)``
installed as the run's hub) so that both paths run whatever
``TRIOECHO_PUMP`` says; without the C pump, or with ``TRIOECHO_PUREPYTHON=1``
(echo sessions then have no C engine to pump), the twin side still runs and
the pump side is skipped.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import random
import select
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import trio
import trio.testing

from trioecho import FramingConfig
from trioecho.io import hub as hub_module
from trioecho.io import pump as pump_module
from trioecho.io.budget import MemoryBudget
from trioecho.io.hub import DEFAULT_TURN_BYTES, MAX_EVENTS, PUMP_OUTPUT_BYTES, ReadinessHub
from trioecho.io.opening import open_transport
from trioecho.io.pump import (
    ACCOUNT,
    END_OF_INPUT,
    ENDED,
    EVENT,
    PUMP_AGAIN,
    SHORT_SEND,
    SOCKET_ERROR,
    Pump,
    PumpedConnection,
)
from trioecho.reasons import CloseReason
from trioecho.services._pyecho import STOP, TOO_LONG
from trioecho.services.echo_session import REPLY_SUFFIX, EchoSession
from trioecho.stream.message_stream import MessageStream, receive_size_for
from trioecho.stream.session import Session

H = REPLY_SUFFIX
BUFFER = 4096  # SO_SNDBUF / SO_RCVBUF asked for (the kernel doubles it)
LINGER = 10.0  # the server's lossless close waits this long for the client's end
RUN_LIMIT = 60.0  # seconds one side of a case may take: a hang fails, it does not block CI
# What the hub registers a socket with.
REGISTER = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET


# The pump's cffi objects, None where it is not built (the tests that poke
# at its C directly: the input buffer, te_pump_turn's refusal).
PUMP_FFI: Any = vars(pump_module)["ffi"]
PUMP_LIB: Any = vars(pump_module)["lib"]


def pump_unavailable() -> str | None:
    """Why this environment cannot serve echo sessions with the C pump, or None."""
    if PUMP_LIB is None:
        return "the C pump (trioecho._pump_ffi) is not built"
    if os.environ.get("TRIOECHO_PUREPYTHON", "") not in ("", "0"):
        return "TRIOECHO_PUREPYTHON=1: echo sessions have no C engine for the pump to serve"
    return None


# The pump's side of the differential tests (the twin's side runs anyway).
needs_pump_sessions = pytest.mark.skipif(
    pump_unavailable() is not None, reason=f"the pump's side: {pump_unavailable()}"
)
# The tests of the pump itself (their echo sessions use the C engine by name).
needs_pump = pytest.mark.skipif(
    PUMP_LIB is None, reason="the C pump (trioecho._pump_ffi) is not built"
)


# -- the differential: the pump and its twin on the same traffic --------------


@dataclass(frozen=True)
class Profile:
    """The buffer sizes a case is served with: the stream's read size
    (None: the server's, ``receive_size_for``), the hub's ``turn_bytes``,
    the pump's output buffer, and ``max_frame``."""

    name: str
    receive_size: int | None
    turn_bytes: int
    out_bytes: int
    max_frame: int

    def read_size(self, framing: str) -> int:
        return receive_size_for(framing) if self.receive_size is None else self.receive_size


SERVER = Profile("server", None, DEFAULT_TURN_BYTES, PUMP_OUTPUT_BYTES, 300_000)
SMALL = Profile("small", 7, 50, 100, 120)

# How much a frame and its reply add to the payload (4-byte length, suffix).
FRAME_OVERHEAD = {"len": 4, "line": 1}
REPLY_OVERHEAD = {"len": 4 + len(H), "line": len(H) + 1}
ALPHABET = b"abcdefghijklmnopABCDEFGHIJKLMNOP0123456789-_"  # no q, \n or \r
READ_SIZES = (1, 3, 1000, 65536, 65536, 65536)  # what the client asks of each read


Framing = Literal["len", "line", "raw"]


@dataclass(frozen=True)
class Case:
    framing: Framing
    profile: Profile
    ending: str  # eof, stop, too-long, huge-header, eof-in-frame, reset
    edges: bool  # include the frames at each buffer size -1/0/+1
    seed: int

    @property
    def id(self) -> str:
        return f"{self.framing}-{self.profile.name}-{self.ending}"

    @property
    def config(self) -> FramingConfig:
        if self.framing == "raw":
            return FramingConfig("raw")
        return FramingConfig(self.framing, max_frame=self.profile.max_frame)


def _cases() -> list[Case]:
    endings: dict[Framing, list[str]] = {
        "len": ["eof", "stop", "too-long", "huge-header", "eof-in-frame", "reset"],
        "line": ["eof", "stop", "too-long", "eof-in-frame", "reset"],
        "raw": ["eof", "stop", "reset"],
    }
    cases: list[Case] = []
    for framing, names in endings.items():
        for profile in (SERVER, SMALL):
            for ending in names:
                # The server's sizes make megabytes: only its EOF case has them.
                edges = profile is SMALL or ending == "eof" or framing == "raw"
                seed = len(cases) * 7919 + 1
                cases.append(Case(framing, profile, ending, edges, seed))
    return cases


CASES = _cases()


def payload(rng: random.Random, size: int) -> bytes:
    """``size`` bytes that are no delimiter, no ``\\r`` and no stop message."""
    pattern = bytes(rng.choices(ALPHABET, k=997))
    return (pattern * (size // len(pattern) + 1))[:size]


def framed(framing: str, body: bytes) -> bytes:
    if framing == "len":
        return len(body).to_bytes(4, "big") + body
    return body + b"\n"


def edge_sizes(case: Case) -> list[int]:
    """Payload sizes at each relevant buffer size -1/0/+1: the read size and
    ``turn_bytes`` (the frame's size, and the payload's), the pump's output
    buffer (the reply's size, and the payload's), ``max_frame`` (-1 and 0;
    +1 is an ending), and 0 and 1."""
    profile = case.profile
    frame_over, reply_over = FRAME_OVERHEAD[case.framing], REPLY_OVERHEAD[case.framing]
    sizes = {0, 1, profile.max_frame - 1, profile.max_frame}
    for size in (profile.read_size(case.framing), profile.turn_bytes):
        sizes.update(size - frame_over + d for d in (-1, 0, 1))
        sizes.update(size + d for d in (-1, 0, 1))
    sizes.update(profile.out_bytes - reply_over + d for d in (-1, 0, 1))
    sizes.update(profile.out_bytes + d for d in (-1, 0, 1))
    return sorted(s for s in sizes if 0 <= s <= profile.max_frame)


def ending_tail(case: Case) -> bytes:
    """The bytes that end a length or line stream as ``case.ending`` says."""
    limit = case.profile.max_frame
    tails = {
        "len": {
            "stop": framed("len", b"q"),
            "too-long": (limit + 1).to_bytes(4, "big"),  # a header over the limit, alone
            "huge-header": b"\xff\xff\xff\xff",  # garbage: a header of 4 GiB - 1
            "eof-in-frame": (10).to_bytes(4, "big") + b"abc",
        },
        "line": {
            "stop": b"q\n",
            "too-long": b"x" * (limit + 1),  # one byte over, and no delimiter
            "eof-in-frame": b"abc",
        },
    }
    return tails[case.framing].get(case.ending, b"")


def framed_traffic(case: Case) -> bytes:
    """The client's bytes for a length or line case: random frames (sizes
    0 and 1 among them), the buffer-size edges, then the ending's tail."""
    rng = random.Random(case.seed)
    top = 3000 if case.profile is SERVER else case.profile.max_frame
    sizes = [rng.choice((0, 1, 2, 5, 60, rng.randint(0, top))) for _ in range(40)]
    if case.edges:
        sizes += edge_sizes(case)
    rng.shuffle(sizes)
    return b"".join(framed(case.framing, payload(rng, n)) for n in sizes) + ending_tail(case)


def split_writes(rng: random.Random, data: bytes) -> list[bytes]:
    """``data`` cut into writes at random places, small and large: a write
    may end inside a header, a frame or a delimiter, or hold many frames."""
    cuts = {rng.randrange(len(data) + 1) for _ in range(min(len(data), 60))}
    for _ in range(20):  # a few cuts one to three bytes apart
        at = rng.randrange(len(data) + 1)
        cuts.update(at + d for d in (1, 2, 3))
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def raw_reads(size: int, read_size: int, turn_bytes: int) -> list[int]:
    """The reads that take a write of ``size`` bytes, found alone in the
    socket: ``read_size`` at most each, ``turn_bytes`` at most per turn."""
    reads = []
    while size:
        budget = turn_bytes
        while size and budget:
            want = min(read_size, budget)
            got = min(want, size)
            reads.append(got)
            size -= got
            budget -= got
    return reads


def raw_writes(case: Case) -> list[bytes]:
    """The client's writes for a raw case, each answered before the next goes
    (a raw message is one read): sizes at the read size and the turn's
    bytes -1/0/+1, random ones, then the stop message alone if it ends so."""
    rng = random.Random(case.seed)
    read_size, turn = case.profile.read_size("raw"), case.profile.turn_bytes
    sizes = [1, 2, *(b + d for b in (read_size, 2 * read_size) for d in (-1, 0, 1))]
    if turn <= 2100:
        sizes += [turn + d for d in (-1, 0, 1)] + [2 * turn + 1]
    # At most ~2 KiB a write: it arrives whole, and its replies fit the
    # socket buffers (no send comes up short).
    sizes += [rng.randint(1, min(2000, 3 * turn)) for _ in range(30)]
    rng.shuffle(sizes)
    writes = [payload(rng, n) for n in sizes]
    if case.ending == "stop":
        writes.append(b"q")
    return writes


@dataclass
class Outcome:
    """What one side of a case did, as the client and the server saw it."""

    wire: bytes  # what the client received, until the server's end (or its reset)
    ending: tuple[Any, ...]  # run_session's: ("returned", stopped) or ("raised", type, text)
    close_reason: CloseReason | str | None
    counters: tuple[int, int, int, int]  # messages received, sent; bytes received, sent
    outcomes: Counter[int] = field(default_factory=Counter)  # the pump's, by outcome


def reset_error() -> tuple[str, str, str]:
    code = errno.ECONNRESET
    text = f"connection broken while receiving or sending: [Errno {code}] {os.strerror(code)}"
    return ("raised", "ConnectionClosedError", text)


def expected(case: Case, writes: list[bytes]) -> Outcome:
    """What the pure-Python echo session says of ``writes``."""
    session = EchoSession(case.config, implementation="python")
    if case.framing == "raw":
        read_size, turn = case.profile.read_size("raw"), case.profile.turn_bytes
        reads = []
        for write in writes:
            at = 0
            for size in raw_reads(len(write), read_size, turn):
                reads.append(write[at : at + size])
                at += size
    else:
        reads = [b"".join(writes)]
    wire = bytearray()
    received = replies = 0
    output = None
    for data in reads:
        output = session.feed(data)
        wire += output.data
        received += output.received
        replies += output.replies
    assert output is not None
    ending: tuple[Any, ...]
    reason: CloseReason | None = None
    if case.ending == "reset":
        ending = reset_error()
    else:
        if not (output.stopped or output.error):
            output = session.feed_eof()
        if output.error is not None:
            ending = ("raised", type(output.error).__name__, str(output.error))
        else:
            ending = ("returned", output.stopped)
            reason = CloseReason.STOP_MESSAGE if output.stopped else CloseReason.PEER_CLOSED
    sent = sum(len(w) for w in writes)
    return Outcome(bytes(wire), ending, reason, (received, replies, sent, len(wire)))


def recording_pump(outcomes: Counter[int]) -> type[Pump]:
    """A :class:`Pump` that counts every outcome it returns to the hub."""

    class RecordingPump(Pump):
        def serve(self, fd: int) -> int:
            outcome = super().serve(fd)
            outcomes[outcome] += 1
            return outcome

        def turn(self, owed: list[int]) -> list[tuple[int, int, int]]:
            events = super().turn(owed)
            outcomes.update(outcome for _, _, outcome in events)
            return events

    return RecordingPump


def make_hub(
    pump: bool, profile: Profile, outcomes: Counter[int], monkeypatch: pytest.MonkeyPatch
) -> ReadinessHub:
    """A hub with ``profile``'s turn and output buffer, with the pump or
    without, whose pump counts its outcomes in ``outcomes``."""
    with monkeypatch.context() as patch:
        patch.setattr(hub_module, "PUMP_OUTPUT_BYTES", profile.out_bytes)
        patch.setattr(hub_module, "Pump", recording_pump(outcomes))
        hub = ReadinessHub(MAX_EVENTS, profile.turn_bytes, pump=pump)
    assert hub.pumps == pump
    return hub


@asynccontextmanager
async def serving(hub: ReadinessHub) -> AsyncIterator[None]:
    """``hub`` as the run's hub (what ``current_hub()`` returns), running
    for the block, then closed."""
    hub_module._hub_var.set(hub)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


async def tcp_pair(framing: str) -> tuple[trio.SocketStream, trio.SocketStream]:
    """A loopback TCP connection, (client, server): tiny send and receive
    buffers on the server's socket and a tiny receive buffer on the
    client's, so that the server's sends come up short.  Not in raw
    framing, where a message is one read: a short send there moves the
    reads that follow by the kernel's timing, so the default buffers."""
    with trio.socket.socket() as listener:
        client = trio.socket.socket()
        if framing != "raw":
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        await client.connect(listener.getsockname())
        server, _ = await listener.accept()
    return trio.SocketStream(client), trio.SocketStream(server)


def server_stream(
    connection: trio.SocketStream, config: FramingConfig, receive_size: int
) -> MessageStream:
    """The connection's message stream, opened as ``MessageServer._open_stream``
    opens it: the direct socket transport on the hub, the deadlines handed
    over, a memory account."""
    transport = open_transport(
        connection, idle_timeout=60.0, send_timeout=None, min_send_rate=None, readiness="hub"
    )
    transport.hand_over_deadlines()
    return MessageStream(
        transport, config, receive_size=receive_size, account=MemoryBudget().open_account()
    )


class Inbox:
    """What the client received, and a wait for more of it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended = False
        self._changed = trio.Event()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        self._changed.set()
        self._changed = trio.Event()

    def end(self) -> None:
        self.ended = True
        self._changed.set()

    async def wait_for(self, size: int) -> None:
        while len(self.data) < size:
            if self.ended:
                raise AssertionError(f"the connection ended after {len(self.data)} of {size} bytes")
            await self._changed.wait()


async def read_replies(
    client: trio.SocketStream, inbox: Inbox, rng: random.Random, until: int | None
) -> None:
    """Read until the end (or ``until`` bytes), slowly at times: before a
    read, wait until every other task is blocked, the server's on a full
    socket buffer if it has more to send."""
    try:
        while until is None or len(inbox.data) < until:
            if rng.random() < 0.25:
                await trio.testing.wait_all_tasks_blocked()
            data = await client.receive_some(rng.choice(READ_SIZES))
            if not data:
                return
            inbox.add(data)
    finally:
        inbox.end()


async def serve_session(stream: MessageStream, session: Session, out: dict[str, Any]) -> None:
    """A handler's life after its greeting: run its session, then the
    server's lossless close; what it ended with and its counters in ``out``."""
    try:
        output = await stream.run_session(session)
    except Exception as exc:
        out["ending"] = ("raised", type(exc).__name__, str(exc))
    else:
        out["ending"] = ("returned", None if output is None else output.stopped)
    out["close_reason"] = stream.close_reason
    await stream.close_gracefully(LINGER)
    out["counters"] = (
        stream.messages_received,
        stream.messages_sent,
        stream.bytes_received,
        stream.bytes_sent,
    )


async def run_side(
    case: Case, writes: list[bytes], want: Outcome, pump: bool, monkeypatch: pytest.MonkeyPatch
) -> Outcome:
    """Serve ``writes`` with the pump or its twin; what the client and the server saw."""
    outcomes: Counter[int] = Counter()
    hub = make_hub(pump, case.profile, outcomes, monkeypatch)
    rng_write, rng_read = random.Random(case.seed + 1), random.Random(case.seed + 2)
    lockstep = None
    if case.framing == "raw":  # the replies' total after each write
        lockstep = [len(expected(case, writes[: i + 1]).wire) for i in range(len(writes))]
    result: dict[str, Any] = {}
    inbox = Inbox()
    async with serving(hub):
        client, connection = await tcp_pair(case.framing)
        stream = server_stream(connection, case.config, case.profile.read_size(case.framing))
        session = EchoSession(case.config)
        assert stream.transport.can_serve_inline  # the hub's path, not Trio's waits
        assert stream.transport.can_pump == pump
        if pump:
            assert session.pump_handle() is not None
        with trio.fail_after(RUN_LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve_session, stream, session, result)
                until = len(want.wire) if case.ending == "reset" else None
                nursery.start_soon(read_replies, client, inbox, rng_read, until)
                for i, write in enumerate(writes):
                    await client.send_all(write)
                    if lockstep is not None:
                        await inbox.wait_for(lockstep[i])
                    elif rng_write.random() < 0.3:
                        await trio.testing.wait_all_tasks_blocked()
                if case.ending == "reset":
                    await inbox.wait_for(len(want.wire))
                    await trio.testing.wait_all_tasks_blocked()  # the server waits for input
                    linger = struct.pack("ii", 1, 0)
                    client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    await client.aclose()  # a reset
                else:
                    await client.send_eof()
        await client.aclose()
    return Outcome(
        bytes(inbox.data), result["ending"], result["close_reason"], result["counters"], outcomes
    )


def assert_same_bytes(got: bytes, want: bytes, what: str) -> None:
    """``got == want``, or where they first differ (not megabytes of diff)."""
    if got == want:
        return
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if at is None:
        at = min(len(got), len(want))
    raise AssertionError(
        f"{what}: {len(got)} bytes, expected {len(want)}; first difference at {at}: "
        f"{got[max(0, at - 20) : at + 20]!r} != {want[max(0, at - 20) : at + 20]!r}"
    )


def assert_same(got: Outcome, want: Outcome, what: str) -> None:
    assert_same_bytes(got.wire, want.wire, f"{what}: the bytes the client received")
    assert got.ending == want.ending, what
    assert got.close_reason == want.close_reason, what
    assert got.counters == want.counters, what


def pump_must_have_seen(case: Case) -> set[int]:
    """Outcomes the pump returns on every run of ``case``, whatever the timing."""
    seen = {
        "eof": END_OF_INPUT,
        "eof-in-frame": END_OF_INPUT,
        "stop": ENDED,
        "too-long": ENDED,
        "huge-header": ENDED,
        "reset": SOCKET_ERROR,
    }
    must = {seen[case.ending]}
    if case.framing != "raw" and case.edges:
        must.add(ACCOUNT)  # frames longer than a read
    if case.profile is SERVER and case.edges and case.framing != "raw":
        must.add(SHORT_SEND)  # replies of 256 KiB to a socket that holds 8
    if case.profile is SMALL and case.edges and case.framing == "raw":
        # writes of more than 50 bytes (framed ones stop at ACCOUNT first,
        # as reads leave unfinished frames)
        must.add(PUMP_AGAIN)
    return must


def client_writes(case: Case) -> list[bytes]:
    if case.framing == "raw":
        return raw_writes(case)
    return split_writes(random.Random(case.seed + 3), framed_traffic(case))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_the_twin_puts_on_the_wire_what_the_echo_session_says(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The twin's side of the differential, in every environment."""
    writes = client_writes(case)
    want = expected(case, writes)
    twin = await run_side(case, writes, want, False, monkeypatch)
    assert_same(twin, want, "the twin against the pure-Python echo session")


@needs_pump_sessions
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_the_pump_puts_on_the_wire_what_its_twin_does(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sides of the differential, on the same traffic."""
    writes = client_writes(case)
    want = expected(case, writes)
    twin = await run_side(case, writes, want, False, monkeypatch)
    assert_same(twin, want, "the twin against the pure-Python echo session")
    pumped = await run_side(case, writes, want, True, monkeypatch)
    assert_same(pumped, twin, "the pump against its twin")
    missing = pump_must_have_seen(case) - set(pumped.outcomes)
    assert not missing, f"the pump never returned {sorted(missing)}: {pumped.outcomes}"


def test_the_cases_cover_the_edges() -> None:
    """The traffic holds what the differential claims: frames of 0 and 1
    byte and at each buffer size -1/0/+1 (the read size, the pump's output
    buffer, the turn's bytes: frame, reply and payload sizes), max_frame -1
    and 0 (+1 is an ending), and writes that split and merge frames."""
    case = next(c for c in CASES if c.framing == "len" and c.profile is SERVER and c.edges)
    sizes = set(edge_sizes(case))
    for size in (65536 - 4, 65536, PUMP_OUTPUT_BYTES - 7, PUMP_OUTPUT_BYTES, 262144 - 4):
        assert {size - 1, size, size + 1} <= sizes, size
    assert {0, 1, 299_999, 300_000} <= sizes
    too_long = next(c for c in CASES if c.framing == "len" and c.ending == "too-long")
    assert ending_tail(too_long) == (too_long.profile.max_frame + 1).to_bytes(4, "big")
    writes = split_writes(random.Random(case.seed + 3), framed_traffic(case))
    assert min(map(len, writes)) == 1 and max(map(len, writes)) > 65536
    for small in (c for c in CASES if c.profile is SMALL):  # each has a write the turn cannot take
        assert max(map(len, client_writes(small))) > SMALL.turn_bytes, small.id
    assert raw_reads(60, 7, 50) == [7] * 7 + [1, 7, 3]
    assert raw_reads(1025, 1024, 262144) == [1024, 1]


# -- a pump on a real epoll set; descriptor reuse --------------------------------


class Rig:
    """A :class:`Pump` over a real epoll set, as a hub has, and the sockets
    it serves (closed with it)."""

    def __init__(
        self, *, max_events: int = 16, turn_bytes: int = 1 << 20, out_cap: int = 4096
    ) -> None:
        self.epoll = select.epoll()
        self.pump = Pump(self.epoll.fileno(), max_events, turn_bytes, out_cap)
        self.sockets: list[socket.socket] = []

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.epoll.close()

    def keep(self, *socks: socket.socket) -> None:
        for sock in socks:
            sock.setblocking(False)
            self.sockets.append(sock)

    def register(self, sock: socket.socket) -> None:
        self.epoll.register(sock.fileno(), REGISTER)

    def turn(self, owed: list[int] | None = None) -> list[tuple[int, int]]:
        """One turn: the ``(fd, outcome)`` returned."""
        return [(fd, outcome) for fd, _, outcome in self.pump.turn(owed or [])]

    def settle(self, served: Served) -> list[int]:
        """Turns until the pump has nothing more to say about ``served``, doing
        what the hub does: update its account (ACCOUNT), owe it a turn
        (ACCOUNT, AGAIN).  The outcomes returned, in order."""
        outcomes: list[int] = []
        owed: list[int] = []
        for _ in range(100_000):
            events = self.turn(owed)
            if not events and not owed:
                return outcomes
            owed = []
            for fd, outcome in events:
                assert fd == served.fd, (fd, outcome)
                outcomes.append(outcome)
                if outcome == ACCOUNT:
                    served.conn.accounted = served.conn.buffered
                if outcome in (ACCOUNT, PUMP_AGAIN):
                    owed.append(fd)
        raise AssertionError("the pump never settled")


@dataclass
class Served:
    """One connection the rig's pump serves: the server's socket (at ``fd``)
    and the client's, its echo session (C engine), its state in C."""

    server: socket.socket
    client: socket.socket
    session: EchoSession
    conn: PumpedConnection

    @property
    def fd(self) -> int:
        return self.server.fileno()


def attach_new(
    rig: Rig,
    config: FramingConfig | str = "line",
    read_size: int = 65536,
    pair: tuple[socket.socket, socket.socket] | None = None,
) -> Served:
    """A new connection (a socket pair unless ``pair``), registered and attached."""
    server, client = pair or socket.socketpair()
    rig.keep(server, client)
    rig.register(server)
    session = EchoSession(config, implementation="c")
    handle = session.pump_handle()
    assert handle is not None
    address, owner, raw = handle
    conn = PumpedConnection(address, owner, raw, read_size)
    rig.pump.attach(server.fileno(), conn)
    served = Served(server, client, session, conn)
    assert rig.settle(served) == []  # the registration's output edge: nothing to do
    return served


@contextmanager
def rig_for_test(**options: int) -> Iterator[Rig]:
    rig = Rig(**options)
    try:
        yield rig
    finally:
        rig.close()


def received(sock: socket.socket) -> bytes:
    """Everything ``sock`` can read now (b"" if nothing)."""
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def at_descriptor(sock: socket.socket, fd: int) -> socket.socket:
    """``sock`` moved to the descriptor number ``fd`` (free: just closed)."""
    if sock.fileno() == fd:
        return sock
    os.dup2(sock.fileno(), fd, inheritable=False)
    moved = socket.socket(fileno=fd)
    sock.close()
    return moved


@needs_pump
def test_a_reused_descriptor_is_an_event_never_served_with_the_old_state() -> None:
    """A is detached and closed with input pending; a new socket gets A's
    number and is registered, not attached, before the next turn (A's owed
    turn included): the turn reports the new socket as an EVENT, serves
    nothing, and A's state does not change."""
    with rig_for_test() as rig:
        a = attach_new(rig)
        fd = a.fd
        a.client.send(b"one\n")
        assert rig.settle(a) == []
        assert received(a.client) == b"one" + H + b"\n"
        assert a.conn.take_message_counts() == (1, 1)
        a.conn.take_byte_counts()
        a.client.send(b"two\npar")  # an edge on fd, not served yet
        rig.pump.detach(fd)  # the task's part: detach, then close
        a.server.close()
        b_server, b_client = socket.socketpair()
        b_server = at_descriptor(b_server, fd)
        rig.keep(b_server, b_client)
        rig.register(b_server)
        b_client.send(b"three\n")
        events = rig.pump.turn([fd])  # A was owed a turn, too
        assert [(got_fd, outcome) for got_fd, _, outcome in events] == [(fd, EVENT)]
        assert events[0][1] & select.EPOLLIN
        assert a.conn.take_message_counts() == (0, 0)
        assert a.conn.take_byte_counts() == (0, 0)
        assert a.conn.buffered == 0
        assert received(b_client) == b""  # nothing was sent on the new socket
        assert b_server.recv(100) == b"three\n"  # nor read from it
        assert rig.turn() == []


@needs_pump
def test_a_reused_descriptor_attached_anew_is_served_with_the_new_state() -> None:
    """A holds an unfinished message in C when it is detached and closed;
    the new socket at its number is attached with B's state: B answers its
    own bytes, and A's unfinished message stays A's."""
    with rig_for_test() as rig:
        a = attach_new(rig)
        fd = a.fd
        a.client.send(b"par")
        assert rig.settle(a) == [ACCOUNT]
        assert a.conn.buffered == 3
        rig.pump.detach(fd)
        a.server.close()
        b_server, b_client = socket.socketpair()
        b = attach_new(rig, pair=(at_descriptor(b_server, fd), b_client))
        assert b.fd == fd
        b.client.send(b"tial\n")
        assert rig.settle(b) == []
        assert received(b.client) == b"tial" + H + b"\n"
        assert b.conn.take_message_counts() == (1, 1)
        assert a.conn.take_input() == b"par"
        assert a.conn.take_message_counts() == (0, 0)


async def receive_until_end(stream: trio.SocketStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    return bytes(data)


@needs_pump_sessions
async def test_a_cancelled_pumped_session_leaves_nothing_attached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A's task is cancelled while the pump serves it, with half a line held
    in C; A's socket closes and B's takes its number, and B's line arrives
    before B's session runs: the hub sees an event (nothing attached), and
    B's session answers B's line alone, never A's half."""
    config = FramingConfig("line")
    outcomes: Counter[int] = Counter()
    hub = make_hub(True, SERVER, outcomes, monkeypatch)
    async with serving(hub):
        with trio.fail_after(RUN_LIMIT):
            client_a, server_a = await tcp_pair("line")
            fd = server_a.socket.fileno()
            stream_a = server_stream(server_a, config, receive_size_for("line"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream_a.run_session, EchoSession(config))
                await client_a.send_all(b"one\npar")
                reply = b"one" + H + b"\n"
                got = b""
                while len(got) < len(reply):
                    got += await client_a.receive_some(65536)
                assert got == reply
                await trio.testing.wait_all_tasks_blocked()
                assert outcomes[ACCOUNT] >= 1  # "par" is held in C
                nursery.cancel_scope.cancel()  # cancelled while parked on the pump
            await stream_a.aclose()
            await client_a.aclose()
            client_b, server_b = await tcp_pair("line")
            raw = at_descriptor(socket.socket(fileno=server_b.socket.detach()), fd)
            server_b = trio.SocketStream(trio.socket.from_stdlib_socket(raw))
            stream_b = server_stream(server_b, config, receive_size_for("line"))
            events, accounts = outcomes[EVENT], outcomes[ACCOUNT]
            await client_b.send_all(b"tial\n")
            # A turn of the hub sees B's line: as an event (nothing attached),
            # not served with A's state (which would answer "partial").
            while outcomes[EVENT] == events and outcomes[ACCOUNT] == accounts:
                await trio.sleep(0.001)
            assert outcomes[ACCOUNT] == accounts

            async def serve_b() -> None:
                await stream_b.run_session(EchoSession(config))
                await stream_b.close_gracefully(LINGER)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve_b)
                await client_b.send_all(b"q\n")
                await client_b.send_eof()
                assert await receive_until_end(client_b) == b"tial" + H + b"\n"
            await client_b.aclose()
    assert stream_b.messages_received == 2 and stream_b.messages_sent == 1


@pytest.mark.parametrize(
    "pump", [pytest.param(True, marks=needs_pump_sessions), False], ids=["pump", "twin"]
)
async def test_connections_closing_while_others_connect_get_their_own_replies(
    pump: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four clients, each connecting again and again, each ending its
    connection its own way (the stop message, its end of input, a reset)
    while the others connect: the server's descriptor numbers are reused
    under the hub, and each client gets exactly the replies to its own lines."""
    config = FramingConfig("line", max_frame=1 << 20)
    outcomes: Counter[int] = Counter()
    hub = make_hub(pump, SERVER, outcomes, monkeypatch)
    descriptors: list[int] = []
    endings: Counter[str] = Counter()

    async def serve_one(connection: trio.SocketStream) -> None:
        stream = server_stream(connection, config, receive_size_for("line"))
        try:
            await stream.run_session(EchoSession(config))
        except Exception as exc:
            endings[type(exc).__name__] += 1
        await stream.close_gracefully(LINGER)

    async def accept_loop(
        listener: trio.socket.SocketType, task_status: trio.TaskStatus[None]
    ) -> None:
        async with trio.open_nursery() as connections:
            task_status.started()
            while True:
                sock, _ = await listener.accept()
                descriptors.append(sock.fileno())
                connections.start_soon(serve_one, trio.SocketStream(sock))

    async def client(index: int, port: int) -> None:
        rng = random.Random(index)
        for turn in range(12):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            lines = [
                b"c%dt%dm%d-" % (index, turn, i) + payload(rng, rng.choice((0, 9, 3000, 70_000)))
                for i in range(rng.randint(1, 6))
            ]
            want = b"".join(line + H + b"\n" for line in lines)
            how = ("stop", "eof", "reset")[(index + turn) % 3]
            data = b"".join(line + b"\n" for line in lines)
            await stream.send_all(data + (b"q\n" if how == "stop" else b""))
            if how == "eof":
                await stream.send_eof()
            got = bytearray()
            while len(got) < len(want) or how != "reset":
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                got += chunk
            assert bytes(got) == want, (index, turn, how)
            if how == "reset":
                linger = struct.pack("ii", 1, 0)
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            await stream.aclose()

    async with serving(hub):
        with trio.socket.socket() as listener:
            await listener.bind(("127.0.0.1", 0))
            listener.listen(64)
            port = listener.getsockname()[1]
            with trio.fail_after(RUN_LIMIT):
                async with trio.open_nursery() as nursery:
                    await nursery.start(accept_loop, listener)
                    async with trio.open_nursery() as clients:
                        for index in range(4):
                            clients.start_soon(client, index, port)
                    nursery.cancel_scope.cancel()
    assert len(descriptors) == 48
    assert len(set(descriptors)) < len(descriptors)  # numbers were reused
    assert endings == {"ConnectionClosedError": 16}  # the resets, and nothing else
    if pump:
        assert {ENDED, END_OF_INPUT, SOCKET_ERROR} <= set(outcomes), outcomes


# -- the pump's edges ----------------------------------------------------------


@needs_pump
@pytest.mark.parametrize("read_size", [1, 3])
def test_a_message_longer_than_the_read_size_is_kept_in_c(read_size: int) -> None:
    """Each read of an unfinished message grows the input held in C
    (ACCOUNT each time); the read that completes it answers it and releases
    the buffer."""
    with rig_for_test() as rig:
        served = attach_new(rig, "line", read_size)
        conn = served.conn
        served.client.send(b"hel")
        assert rig.settle(served) == [ACCOUNT] * math.ceil(3 / read_size)
        assert conn.buffered == conn.accounted == 3
        assert conn.take_message_counts() == (0, 0)
        assert received(served.client) == b""
        served.client.send(b"lo\n")
        assert rig.settle(served) == [ACCOUNT] * math.ceil(3 / read_size)
        reply = b"hello" + H + b"\n"
        assert received(served.client) == reply
        assert conn.take_message_counts() == (1, 1)
        assert conn.take_byte_counts() == (6, len(reply))
        assert conn.progress == 1


@needs_pump
def test_the_input_buffer_is_released_when_empty() -> None:
    with rig_for_test() as rig:
        served = attach_new(rig, "len", 4)
        handle = served.conn.handle
        served.client.send(framed("len", b"abcdefgh")[:6])
        assert rig.settle(served) == [ACCOUNT, ACCOUNT]
        assert served.conn.buffered == 6
        assert getattr(handle, "in") != PUMP_FFI.NULL
        served.client.send(framed("len", b"abcdefgh")[6:] + framed("len", b"x"))
        assert rig.settle(served) == [ACCOUNT] * 3  # reads of 4, 4 and 3
        assert served.conn.buffered == 0
        assert getattr(handle, "in") == PUMP_FFI.NULL
        assert handle.in_cap == 0
        assert received(served.client) == framed("len", b"abcdefgh" + H) + framed("len", b"x" + H)


@needs_pump
@pytest.mark.parametrize("reply_size", [63, 64, 65, 129, 100_007])
def test_a_reply_larger_than_the_output_buffer(reply_size: int) -> None:
    """The pump's output buffer (64 bytes here) grows for a larger reply;
    the reply is exact, and the next one is too."""
    with rig_for_test(out_cap=64) as rig:
        served = attach_new(rig, FramingConfig("len", max_frame=1 << 20))
        body = payload(random.Random(reply_size), reply_size - REPLY_OVERHEAD["len"])
        served.client.send(framed("len", body) + framed("len", b"next"))
        rig.settle(served)
        assert received(served.client) == framed("len", body + H) + framed("len", b"next" + H)
        assert served.conn.take_message_counts() == (2, 2)


@needs_pump
def test_ended_hands_back_the_replies_before_the_end() -> None:
    """The stop message: the replies before it are not sent by the pump but
    handed to the task (take_unsent), with their count; the connection is
    detached."""
    with rig_for_test() as rig:
        served = attach_new(rig, "line")
        conn = served.conn
        served.client.send(b"a\nbb\nq\nafter\n")
        assert rig.turn() == [(served.fd, ENDED)]
        assert conn.ending[0] == STOP
        assert conn.take_unsent() == (b"a" + H + b"\nbb" + H + b"\n", 2)
        assert conn.take_unsent() == (b"", 0)
        assert conn.take_message_counts() == (3, 0)  # the stop message is received
        assert received(served.client) == b""
        output = served.session.end_pumped(*conn.ending, 2)
        assert output.stopped and output.replies == 2 and output.received == 3
        served.client.send(b"more\n")
        assert rig.turn() == [(served.fd, EVENT)]  # detached


@needs_pump
def test_ended_by_an_over_long_header() -> None:
    with rig_for_test() as rig:
        served = attach_new(rig, FramingConfig("len", max_frame=100))
        served.client.send(framed("len", b"ok") + (101).to_bytes(4, "big") + b"rest")
        assert rig.turn() == [(served.fd, ENDED)]
        assert served.conn.ending == (TOO_LONG, 101)
        assert served.conn.take_unsent() == (framed("len", b"ok" + H), 1)
        output = served.session.end_pumped(*served.conn.ending, 1)
        assert str(output.error) == "frame header announces 101 bytes, over max_frame=100"


@needs_pump
def test_a_short_send_keeps_the_exact_rest() -> None:
    """The socket takes part of a reply: the rest is handed to the task, the
    part sent and the rest are the reply, the reply is counted as sent."""
    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    with rig_for_test() as rig:
        served = attach_new(rig, FramingConfig("len", max_frame=1 << 20), pair=(server, client))
        body = payload(random.Random(5), 200_000)
        request, reply = framed("len", body), framed("len", body + H)
        outcomes: list[int] = []
        sent = 0
        while sent < len(request):
            sent += client.send(request[sent:])
            outcomes += rig.settle(served)
        assert outcomes[-1] == SHORT_SEND and set(outcomes[:-1]) == {ACCOUNT}
        rest, replies = served.conn.take_unsent()
        assert replies == 0  # counted already
        got = received(client)
        assert 0 < len(got) < len(reply)
        assert got + rest == reply
        assert served.conn.take_message_counts() == (1, 1)
        assert served.conn.take_byte_counts() == (len(request), len(got))
        assert rig.turn() == [(served.fd, EVENT)]  # detached: room to send is an event


@needs_pump
def test_a_reset_is_a_socket_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with rig_for_test() as rig:
        served = attach_new(rig, "line", pair=(server, client))
        client.send(b"ping\n")
        assert rig.settle(served) == []
        assert received(client) == b"ping" + H + b"\n"
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        assert rig.turn() == [(served.fd, SOCKET_ERROR)]
        assert served.conn.error == errno.ECONNRESET
        assert rig.turn() == []


@needs_pump
def test_end_of_input() -> None:
    """The peer's end after a message and half of one: the message is
    answered, END_OF_INPUT hands the connection back with the half kept,
    which the session then finds incomplete."""
    with rig_for_test() as rig:
        served = attach_new(rig, "line")
        served.client.send(b"a\nhalf")
        served.client.shutdown(socket.SHUT_WR)
        assert rig.turn() == [(served.fd, ACCOUNT)]  # first the half message's account
        served.conn.accounted = 4
        assert rig.turn([served.fd]) == [(served.fd, END_OF_INPUT)]
        assert received(served.client) == b"a" + H + b"\n"
        assert served.conn.take_message_counts() == (1, 1)
        served.session.put_input(served.conn.take_input())
        assert str(served.session.feed_eof().error) == (
            "connection closed inside a line: 4 bytes of it received"
        )
        # Detached: the room the client's read made is an event for the hub.
        assert rig.turn() == [(served.fd, EVENT)]


@needs_pump
def test_account_when_the_unfinished_message_changes_size() -> None:
    """ACCOUNT after a read that leaves the input held in C at another size
    than the account knows, not after one that leaves it the same; the
    hub's turn owed after it finds nothing more."""
    with rig_for_test() as rig:
        served = attach_new(rig, "len")
        conn, fd = served.conn, served.fd
        first, second = framed("len", b"0123456789"), framed("len", b"abcdefghij")
        served.client.send(first[:7])
        assert rig.turn() == [(fd, ACCOUNT)]
        assert (conn.buffered, conn.accounted) == (7, 0)
        conn.accounted = 7  # what the hub's pump_account() does
        assert rig.turn([fd]) == []  # nothing more to read
        served.client.send(first[7:] + second[:7])  # one answered, one as long begun
        assert rig.turn() == []
        assert (conn.buffered, conn.accounted) == (7, 7)
        served.client.send(second[7:])
        assert rig.turn() == [(fd, ACCOUNT)]
        assert (conn.buffered, conn.accounted) == (0, 7)
        conn.accounted = 0
        assert rig.turn([fd]) == []
        assert received(served.client) == (
            framed("len", b"0123456789" + H) + framed("len", b"abcdefghij" + H)
        )


@needs_pump
def test_again_when_the_turn_bytes_are_used() -> None:
    """A connection reads at most turn_bytes a turn (read sizes capped by
    what is left), then is owed a turn; an edge in the turn that served it
    waits for the next one."""
    with rig_for_test(turn_bytes=10) as rig:
        served = attach_new(rig, "line", read_size=4)
        fd = served.fd
        served.client.send(b"x\n" * 12)
        assert rig.turn() == [(fd, PUMP_AGAIN)]
        assert served.conn.take_byte_counts() == (10, 5 * 5)  # reads of 4, 4, 2
        assert received(served.client) == (b"x" + H + b"\n") * 5
        served.client.send(b"y\n")  # an edge, in the turn that serves the owed
        assert rig.turn([fd]) == [(fd, PUMP_AGAIN)]  # owed once, not twice
        assert served.conn.take_byte_counts() == (10, 5 * 5)
        assert rig.turn([fd]) == []  # 4 + 2 bytes left: a short read
        assert served.conn.take_byte_counts() == (6, 3 * 5)
        assert received(served.client) == (b"x" + H + b"\n") * 7 + b"y" + H + b"\n"


@needs_pump
def test_a_turn_refuses_an_out_array_too_short_for_what_it_may_write() -> None:
    """``te_pump_turn`` writes at most ``n_owed + 2 * max_events`` events
    (pump.h): a shorter ``out`` array, or a negative ``n_owed``, is refused
    with EINVAL before anything is served; ``Pump.turn`` raises it as OSError."""
    lib, ffi = PUMP_LIB, PUMP_FFI
    with rig_for_test(max_events=4) as rig:
        served = attach_new(rig, "line")
        owed = ffi.new("int[]", [served.fd, -1])
        out = ffi.new("te_pump_event[]", 10)
        served.client.send(b"ping\n")
        assert lib.te_pump_turn(rig.pump._pump, owed, 2, out, 2 + 2 * 4 - 1) == -1
        assert ffi.errno == errno.EINVAL
        assert lib.te_pump_turn(rig.pump._pump, owed, -1, out, 10) == -1
        assert ffi.errno == errno.EINVAL
        assert received(served.client) == b""  # nothing served
        assert lib.te_pump_turn(rig.pump._pump, owed, 2, out, 2 + 2 * 4) == 0
        assert received(served.client) == b"ping" + H + b"\n"
        rig.pump._out_cap = 2 * rig.pump.max_events - 1  # what Pump.turn passes
        with pytest.raises(OSError) as info:
            rig.pump.turn([])
        assert info.value.errno == errno.EINVAL


async def test_an_input_event_for_a_pumped_connection_wakes_its_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pump may leave an attached connection's input to Python as an
    event (a relay whose upstream reset it did, in tests/test_relay_limits.py).
    Its task is parked on the pump, not on an inline step: the hub wakes it
    to serve the connection again, never runs a step it does not have (that
    failed an assertion and stopped the hub with every connection on it)."""
    config = FramingConfig("line")
    outcomes: Counter[int] = Counter()
    hub = make_hub(True, SERVER, outcomes, monkeypatch)
    async with serving(hub):
        with trio.fail_after(RUN_LIMIT):
            client, server = await tcp_pair("line")
            stream = server_stream(server, config, receive_size_for("line"))

            async def serve() -> None:
                await stream.run_session(EchoSession(config))
                await stream.close_gracefully(LINGER)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                await client.send_all(b"one\n")
                assert await client.receive_some(65536) == b"one" + H + b"\n"
                await trio.testing.wait_all_tasks_blocked()
                watch = hub._watches[server.socket.fileno()]
                assert watch.pumped and watch.inline is not None  # parked on the pump
                hub._dispatch(watch.fd, select.EPOLLIN)
                await client.send_all(b"two\n")
                assert await client.receive_some(65536) == b"two" + H + b"\n"
                await client.send_all(b"q\n")
                await client.send_eof()
                assert await receive_until_end(client) == b""
            await client.aclose()
    assert (stream.messages_received, stream.messages_sent) == (3, 2)
