"""The C pump reading for Python sessions (``TE_PUMP_READ``: a ``respond``
handler's :class:`RespondSession`) and its twin, the Python inline step.

* Differential: the same client traffic, over loopback TCP with tiny socket
  buffers, through ``MessageStream.run_session(RespondSession(...))`` on a
  stream opened as the server opens it, served once by a hub with the pump
  and once by its twin (a hub without the pump; Trio's waits, the task
  path, under ``TRIOECHO_READINESS=trio``): the same bytes on the wire, the
  same ending, the same counters, and all as a pure-Python model says
  (but for the pump's bytes received after an ending in mid-input).
  Framings: ``len``, ``varint`` and a little-endian length field counting
  itself (split in C: ``MESSAGES``), and ``line`` (not split: ``INPUT``);
  a connection of each kind ready in the same turn of one hub.
* Short sends: ``te_pump_reply`` to a client that does not read yet.
* The pump itself, on a real epoll set: ``INPUT``, ``MESSAGES`` with the
  unfinished message kept, both in one turn (:attr:`Pump.items` in the
  outcomes' order), a bad header, the end of the input after bytes, the
  inbox's cap, ``reply``'s exact rest, descriptor reuse.
* A real :class:`MessageServer`: a ``respond`` that raises or returns a
  ``str`` on one connection never stops a canary's answers.

The pump's sides need the C pump and the C framer (skipped with
``TRIOECHO_PUREPYTHON=1`` or without the extension); the twin's side, and
the real server's test (served as the environment says), run everywhere.
"""

from __future__ import annotations

import errno
import os
import random
import select
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import trio
import trio.testing
from support.helpers import running
from test_pump import (
    BUFFER,
    PUMP_LIB,
    REGISTER,
    RUN_LIMIT,
    Inbox,
    Profile,
    assert_same_bytes,
    at_descriptor,
    make_hub,
    read_replies,
    received,
    serve_session,
    serving,
    split_writes,
    tcp_pair,
)

from trioecho import (
    BaseRequestHandler,
    FrameTooLongError,
    FramingConfig,
    MessageServer,
)
from trioecho.framing.base import Framer
from trioecho.io import pump as pump_module
from trioecho.io.budget import MemoryBudget
from trioecho.io.opening import open_transport
from trioecho.io.pump import (
    END_OF_INPUT,
    ENDED,
    EVENT,
    INPUT,
    INPUT_MORE,
    MESSAGES,
    MESSAGES_MORE,
    PUMP_AGAIN,
    PUMP_WAIT,
    SHORT_SEND,
    SOCKET_ERROR,
    Pump,
    PumpedConnection,
)
from trioecho.io.readiness import Readiness, default_readiness
from trioecho.stream.message_stream import MessageStream
from trioecho.stream.session import RespondSession

PURE_PYTHON = os.environ.get("TRIOECHO_PUREPYTHON", "") not in ("", "0")


def pump_reads_unavailable() -> str | None:
    """Why this environment cannot serve respond sessions with the C pump
    (splitting with the C framer), or None."""
    if PUMP_LIB is None:
        return "the C pump (trioecho._pump_ffi) is not built"
    if PURE_PYTHON:
        return "TRIOECHO_PUREPYTHON=1: no C pump, and no C framer for it to split with"
    return None


needs_pump = pytest.mark.skipif(
    pump_reads_unavailable() is not None, reason=f"the pump's side: {pump_reads_unavailable()}"
)

# "field": a length field of 2 bytes, little-endian, counting itself.
Framing = Literal["len", "varint", "field", "line"]
SPLIT_IN_C: tuple[Framing, ...] = ("len", "varint", "field")
ALPHABET = b"abcdefghijklmnopABCDEFGHIJKLMNOP0123456789_"  # no "-", q, \n or \r
TIMEOUT = 10.0  # seconds the real server's test may take


# -- the respond function every session here answers with ---------------------


class Responder:
    """The ``respond`` of every case: the message with its letters' case
    swapped (as long as the message: it frames wherever the message does);
    None for a message that starts with ``-``; ``STOP`` is answered
    ``bye`` and ends the session (``stop()``) after that reply; ``BOOM``
    raises ValueError; ``STR`` returns a str (a TypeError naming it)."""

    def __init__(self) -> None:
        self.session: RespondSession | None = None

    def respond(self, message: bytes) -> bytes | None:
        if message.startswith(b"-"):
            return None
        if message == b"STOP":
            assert self.session is not None
            self.session.stop()
            return b"bye"
        if message == b"BOOM":
            raise ValueError("boom: respond() failed on purpose")
        if message == b"STR":
            return "text"  # type: ignore[return-value]
        return message.swapcase()


def respond_session(framer: Any) -> RespondSession:
    responder = Responder()
    session = RespondSession(framer, responder.respond)
    responder.session = session
    return session


STR_ERROR = (
    "Responder.respond() must return bytes (or a bytearray or memoryview) or None, "
    "not str: encode the text first, e.g. return text.encode()"
)


# -- the differential -----------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """The stream's read size, the hub's ``turn_bytes`` and ``max_frame``."""

    name: str
    receive_size: int
    turn_bytes: int
    max_frame: int

    def profile(self) -> Profile:
        return Profile(self.name, self.receive_size, self.turn_bytes, 4096, self.max_frame)


TINY = Sizes("tiny", 7, 50, 120)
WIDE = Sizes("wide", 300, 600, 700)

# How the client's traffic ends, after its random frames (``tail``).
ENDINGS: dict[Framing, tuple[str, ...]] = {
    "len": ("eof", "eof-in-frame", "too-long", "garbage", "stop", "raise", "str"),
    "varint": ("eof", "eof-in-frame", "too-long", "garbage", "stop", "raise", "str"),
    "field": ("eof", "eof-in-frame", "too-long", "garbage", "stop", "raise", "str"),
    "line": ("eof", "eof-in-frame", "too-long", "stop", "raise", "str"),
}


@dataclass(frozen=True)
class Case:
    framing: Framing
    sizes: Sizes
    ending: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.framing}-{self.sizes.name}-{self.ending}"

    @property
    def config(self) -> FramingConfig:
        return framing_config(self.framing, self.sizes.max_frame)

    def python_framer(self) -> Framer:
        """A fresh framer of the case's framing, in pure Python (the model's)."""
        return framing_config(self.framing, self.sizes.max_frame, "python").new_framer()

    def encode(self, body: bytes) -> bytes:
        return self.python_framer().encode(body)


def framing_config(
    framing: Framing, max_frame: int, implementation: Literal["c", "python"] | None = None
) -> FramingConfig:
    if framing == "field":
        return FramingConfig(
            "len",
            length_bytes=2,
            byteorder="little",
            length_adjustment=-2,
            max_frame=max_frame,
            implementation=implementation,
        )
    return FramingConfig(framing, max_frame=max_frame, implementation=implementation)


def _cases() -> list[Case]:
    cases: list[Case] = []
    for framing, endings in ENDINGS.items():
        for sizes in (TINY, WIDE):
            for ending in endings:
                cases.append(Case(framing, sizes, ending, 7919 * len(cases) + 11))
    return cases


CASES = _cases()


def header_size(case: Case, size: int) -> int:
    return len(case.encode(b"x" * size)) - size


def edge_sizes(case: Case) -> list[int]:
    """Message sizes 0 and 1, and at the read size, the turn's bytes and
    ``max_frame`` -1/0/+1 (as the frame's size and the payload's; over
    ``max_frame`` left out: that is an ending)."""
    sizes = {0, 1}
    limit = case.sizes.max_frame
    for edge in (case.sizes.receive_size, case.sizes.turn_bytes, limit):
        for delta in (-1, 0, 1):
            sizes.add(edge + delta)
            sizes.add(edge + delta - header_size(case, edge))
    return sorted(s for s in sizes if 0 <= s <= limit)


def body(rng: random.Random, size: int) -> bytes:
    """``size`` bytes of no delimiter; one in five starts with ``-`` (no reply)."""
    data = bytes(rng.choices(ALPHABET, k=size))
    if data and rng.random() < 0.2:
        data = b"-" + data[1:]
    return data


def varint(value: int) -> bytes:
    """``value`` as a minimal LEB128 varint."""
    out = bytearray()
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes([*out, value])


def traffic(case: Case) -> tuple[bytes, bytes]:
    """The client's bytes: random messages (the edges among them), then the
    ``tail`` that ends the stream as ``case.ending`` says, sent once every
    reply before it arrived, in one write."""
    rng = random.Random(case.seed)
    limit = case.sizes.max_frame
    sizes = [rng.choice((0, 1, 2, 5, rng.randint(0, limit))) for _ in range(30)]
    sizes += edge_sizes(case)
    rng.shuffle(sizes)
    frames = b"".join(case.encode(body(rng, n)) for n in sizes)
    encode = case.encode
    garbage = {"len": b"\xff\xff\xff\xff", "varint": b"\xff" * 11, "field": b"\x01\x00"}
    too_long = {
        "len": (limit + 1).to_bytes(4, "big"),
        "field": (limit + 3).to_bytes(2, "little"),
        "varint": varint(limit + 1),
        "line": b"x" * (limit + 1),  # alone at the end: "bytes seen" is exact
    }
    tails = {
        "eof": b"",
        "eof-in-frame": encode(b"abcdefghij")[:-3],
        "too-long": encode(b"ok") + too_long[case.framing],
        "garbage": encode(b"ok") + garbage.get(case.framing, b"") + b"junk",
        "stop": encode(b"ok") + encode(b"STOP") + encode(b"after") + encode(b"-after"),
        "raise": encode(b"BOOM") + encode(b"after"),
        "str": encode(b"STR") + encode(b"after"),
    }
    return frames, tails[case.ending]


@dataclass
class Outcome:
    """What one side did, as the client and the server saw it."""

    wire: bytes
    ending: tuple[Any, ...]  # ("returned", stopped) or ("raised", type name, text)
    close_reason: object
    counters: tuple[int, int, int, int]  # messages received, sent; bytes received, sent
    outcomes: Counter[int] = field(default_factory=Counter)  # the pump's, by outcome
    replies: Counter[int] = field(default_factory=Counter)  # te_pump_reply's, by outcome


def expected(case: Case, frames: bytes, tail: bytes) -> tuple[Outcome, int]:
    """What a pure-Python :class:`RespondSession` says of the traffic:
    ``frames`` fed at once, then ``tail`` (one write, found whole in the
    socket) in reads of the read size until the session ends; and the
    bytes of the replies to ``frames``."""
    session = respond_session(case.python_framer())
    first = session.feed(frames)
    assert first.error is None and not first.stopped
    wire, received_, sent = bytearray(first.data), first.received, first.replies
    ending: tuple[Any, ...] = ()
    output = first
    read = len(frames)
    size = case.sizes.receive_size
    for at in range(0, len(tail), size):
        chunk = tail[at : at + size]
        read += len(chunk)
        try:
            output = session.feed(chunk)
        except Exception as exc:  # the respond's own error: nothing of its read counted
            ending = ("raised", type(exc).__name__, str(exc))
            break
        wire += output.data
        received_ += output.received
        sent += output.replies
        if output.stopped or output.error:
            break
    if not ending:
        if not (output.stopped or output.error):
            output = session.feed_eof()
        if output.error is not None:
            ending = ("raised", type(output.error).__name__, str(output.error))
        else:
            ending = ("returned", output.stopped)
    outcome = Outcome(bytes(wire), ending, None, (received_, sent, read, len(wire)))
    return outcome, len(first.data)


def server_stream(connection: trio.SocketStream, case: Case, readiness: Readiness) -> MessageStream:
    """The connection's message stream, opened as ``MessageServer._open_stream``
    opens it (the deadlines handed over, a memory account), on the hub or
    on Trio's waits."""
    transport = open_transport(
        connection, idle_timeout=60.0, send_timeout=None, min_send_rate=None, readiness=readiness
    )
    transport.hand_over_deadlines()
    return MessageStream(
        transport,
        case.config,
        receive_size=case.sizes.receive_size,
        account=MemoryBudget().open_account(),
    )


async def serve_respond(stream: MessageStream, out: dict[str, Any]) -> None:
    """A respond handler's life: its session, then the lossless close; its
    ending and counters in ``out`` (see test_pump.serve_session)."""
    await serve_session(stream, respond_session(stream.framer), out)


@contextmanager
def recording_replies(replies: Counter[int], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Count every outcome of ``PumpedConnection.reply`` in ``replies``."""
    reply = PumpedConnection.reply

    def recording(self: PumpedConnection, fd: int, data: Any) -> int:
        outcome = reply(self, fd, data)
        replies[outcome] += 1
        return outcome

    with monkeypatch.context() as patch:
        patch.setattr(PumpedConnection, "reply", recording)
        yield


async def run_side(
    case: Case,
    frames: bytes,
    tail: bytes,
    tail_after: int,
    pump: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> Outcome:
    """Serve the traffic with the pump or its twin; what both ends saw.
    ``frames`` go in random writes; ``tail`` in one, once ``tail_after``
    bytes of replies arrived."""
    outcomes: Counter[int] = Counter()
    replies: Counter[int] = Counter()
    hub = make_hub(pump, case.sizes.profile(), outcomes, monkeypatch)
    readiness: Readiness = "hub" if pump else default_readiness()
    rng_write, rng_read = random.Random(case.seed + 1), random.Random(case.seed + 2)
    writes = split_writes(random.Random(case.seed + 3), frames)
    result: dict[str, Any] = {}
    inbox = Inbox()
    with recording_replies(replies, monkeypatch):
        async with serving(hub):
            client, connection = await tcp_pair("len")  # tiny buffers
            stream = server_stream(connection, case, readiness)
            assert stream.transport.can_pump == pump
            with trio.fail_after(RUN_LIMIT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve_respond, stream, result)
                    nursery.start_soon(read_replies, client, inbox, rng_read, None)
                    for write in writes:
                        await client.send_all(write)
                        if rng_write.random() < 0.3:
                            await trio.testing.wait_all_tasks_blocked()
                    await inbox.wait_for(tail_after)
                    if tail:
                        await trio.testing.wait_all_tasks_blocked()  # the server waits for input
                        await client.send_all(tail)
                    await client.send_eof()
            await client.aclose()
    return Outcome(
        bytes(inbox.data),
        result["ending"],
        result["close_reason"],
        result["counters"],
        outcomes,
        replies,
    )


# The endings in the middle of the input (STOP, a raise, a str, a bad
# header): the pump may have read the rest of that turn before Python saw
# the ending message, bytes discarded either way, so the pump's
# bytes_received may exceed its twin's (never what the client sent).
ENDS_MID_INPUT = frozenset({"stop", "raise", "str", "too-long", "garbage"})


def assert_same(
    got: Outcome,
    want: Outcome,
    what: str,
    close_reason: bool = True,
    read_at_most: int | None = None,
) -> None:
    """``got`` as ``want``: the wire bytes, the ending (and the close reason
    if ``close_reason``) and the counters exactly; but with ``read_at_most``
    its bytes received anywhere from ``want``'s to ``read_at_most``."""
    assert_same_bytes(got.wire, want.wire, f"{what}: the bytes the client received")
    assert got.ending == want.ending, what
    if close_reason:
        assert got.close_reason == want.close_reason, what
    if read_at_most is None:
        assert got.counters == want.counters, what
        return
    (messages_in, messages_out, read, sent), wanted = got.counters, want.counters
    assert (messages_in, messages_out, sent) == (wanted[0], wanted[1], wanted[3]), what
    assert wanted[2] <= read <= read_at_most, (what, got.counters, want.counters, read_at_most)


def pump_must_have_seen(case: Case) -> tuple[set[int], set[int]]:
    """Outcomes the pump returns on every run of ``case``, whatever the
    timing: all of the first set, and one of the second at least."""
    if case.framing in SPLIT_IN_C:
        seen = {MESSAGES, MESSAGES_MORE}
        ends = {"eof": END_OF_INPUT, "eof-in-frame": END_OF_INPUT, "garbage": ENDED}
        ends["too-long"] = ENDED  # a header the C scanner refuses: Python scans again
    else:
        seen = {INPUT, INPUT_MORE}
        ends = {"eof": END_OF_INPUT, "eof-in-frame": END_OF_INPUT}
    return ({ends[case.ending]} if case.ending in ends else set()), seen


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_the_twin_answers_as_the_respond_session_says(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The twin's side of the differential, in every environment."""
    frames, tail = traffic(case)
    want, tail_after = expected(case, frames, tail)
    twin = await run_side(case, frames, tail, tail_after, False, monkeypatch)
    assert_same(twin, want, "the twin against the model", close_reason=False)


@needs_pump
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_the_pump_answers_respond_sessions_as_its_twin_does(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sides of the differential, on the same traffic."""
    frames, tail = traffic(case)
    want, tail_after = expected(case, frames, tail)
    twin = await run_side(case, frames, tail, tail_after, False, monkeypatch)
    assert_same(twin, want, "the twin against the model", close_reason=False)
    pumped = await run_side(case, frames, tail, tail_after, True, monkeypatch)
    read_at_most = len(frames) + len(tail) if case.ending in ENDS_MID_INPUT else None
    assert_same(pumped, twin, "the pump against its twin", read_at_most=read_at_most)
    ends, seen = pump_must_have_seen(case)
    assert ends <= set(pumped.outcomes), pumped.outcomes
    assert seen & set(pumped.outcomes), pumped.outcomes
    assert pumped.replies[PUMP_WAIT] > 0, pumped.replies  # the answers were sent from C


def test_the_cases_cover_the_edges() -> None:
    """The traffic holds what the differential claims: messages of 0 and 1
    byte, at the read size, the turn's bytes and max_frame -1/0/+1 (frame
    and payload sizes; over max_frame only as an ending), and writes that
    split and merge frames."""
    for case in CASES:
        sizes = set(edge_sizes(case))
        assert {0, 1, case.sizes.max_frame - 1, case.sizes.max_frame} <= sizes, case.id
        for edge in (case.sizes.receive_size, case.sizes.turn_bytes):
            assert {edge - 1, edge, edge + 1} <= sizes, case.id
        frames, _ = traffic(case)
        writes = split_writes(random.Random(case.seed + 3), frames)
        assert min(map(len, writes)) <= 3 and max(map(len, writes)) > case.sizes.receive_size
        want, _ = expected(case, frames, b"")
        received_, sent = want.counters[:2]
        assert 0 < sent < received_ - 2, case.id  # some messages are not answered (None)


def model_ending(case: Case) -> tuple[Any, ...]:
    """How each case's traffic ends, by name."""
    limit = case.sizes.max_frame
    announced = f"frame header announces {limit + 1} bytes, over max_frame={limit}"
    endings: dict[str, tuple[Any, ...]] = {
        "eof": ("returned", False),
        "stop": ("returned", True),
        "raise": ("raised", "ValueError", "boom: respond() failed on purpose"),
        "str": ("raised", "TypeError", STR_ERROR),
        "too-long": ("raised", "FrameTooLongError", announced),
    }
    if case.framing == "line":
        endings["too-long"] = (
            "raised",
            "FrameTooLongError",
            f"line longer than max_frame={limit}: {limit + 1} bytes seen",
        )
        endings["eof-in-frame"] = (
            "raised",
            "IncompleteFrameError",
            "connection closed inside a line: 8 bytes of it received",
        )
    else:
        header = len(case.encode(b"abcdefghij")) - 10
        endings["eof-in-frame"] = (
            "raised",
            "IncompleteFrameError",
            f"connection closed inside a frame: {header + 7} bytes of it received",
        )
    garbage = {
        "len": ("FrameTooLongError", f"announces 4294967295 bytes, over max_frame={limit}"),
        "varint": ("MalformedFrameError", "varint length field longer than max_length_bytes=10"),
        "field": ("MalformedFrameError", "length field 1 with length_adjustment -2 gives"),
    }
    if case.ending == "garbage":
        kind, text = garbage[case.framing]
        return ("raised", kind, text)
    return endings[case.ending]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_the_model_ends_each_case_as_named(case: Case) -> None:
    """The differential's expectations end as each case says: over-long
    input is FrameTooLongError, an unfinished frame IncompleteFrameError,
    a str reply TypeError naming respond, its own error raised as it is;
    the replies after STOP's are not sent."""
    frames, tail = traffic(case)
    want, before_tail = expected(case, frames, tail)
    ending = model_ending(case)
    if case.ending == "garbage":
        assert want.ending[:2] == ending[:2] and ending[2] in want.ending[2], want.ending
    else:
        assert want.ending == ending
    tail_replies = want.wire[before_tail:]
    if case.ending == "stop":
        assert tail_replies == case.encode(b"OK") + case.encode(b"bye")
    elif case.ending in ("too-long", "garbage"):
        assert tail_replies == case.encode(b"OK")
    else:
        assert tail_replies == b""


# -- short sends: te_pump_reply to a client that does not read yet --------------


@pytest.mark.parametrize(
    ("framing", "pump"),
    [
        pytest.param("len", True, marks=needs_pump, id="len-pump"),
        pytest.param("line", True, marks=needs_pump, id="line-pump"),
        pytest.param("len", False, id="len-twin"),
        pytest.param("line", False, id="line-twin"),
    ],
)
async def test_replies_to_a_client_that_reads_late_arrive_once_in_order(
    framing: Framing, pump: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's socket holds a few KiB and the client does not read
    until both sides are blocked: te_pump_reply comes up short (the task
    sends the rest, the pump reads on after), and once the client reads
    every reply arrives, in order, exactly once."""
    case = Case(framing, WIDE, "eof", 5)
    messages = [b"m%03d-" % i + bytes(ALPHABET[i % 40 : i % 40 + 1]) * 600 for i in range(120)]
    data = b"".join(case.encode(m) for m in messages)
    want = b"".join(case.encode(m.swapcase()) for m in messages)
    outcomes: Counter[int] = Counter()
    replies: Counter[int] = Counter()
    hub = make_hub(pump, case.sizes.profile(), outcomes, monkeypatch)
    result: dict[str, Any] = {}
    got = bytearray()
    with recording_replies(replies, monkeypatch):
        async with serving(hub):
            client, connection = await tcp_pair("len")
            stream = server_stream(connection, case, "hub" if pump else default_readiness())
            with trio.fail_after(RUN_LIMIT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve_respond, stream, result)

                    async def send_all() -> None:
                        await client.send_all(data)
                        await client.send_eof()

                    nursery.start_soon(send_all)
                    await trio.testing.wait_all_tasks_blocked()  # both sides stuck
                    while chunk := await client.receive_some(65536):
                        got += chunk
            await client.aclose()
    assert_same_bytes(bytes(got), want, "the replies")
    assert result["ending"] == ("returned", False)
    assert result["counters"] == (120, 120, len(data), len(want))
    if pump:
        assert replies[SHORT_SEND] >= 1, replies
        assert replies[PUMP_WAIT] >= 1, replies
    else:
        assert not replies


# -- the pump itself, on a real epoll set ----------------------------------------


class ReadRig:
    """A :class:`Pump` over a real epoll set, as a hub has, and the sockets
    it serves (closed with it)."""

    def __init__(self, *, turn_bytes: int = 1 << 20, inbox_cap: int = 1 << 20) -> None:
        self.epoll = select.epoll()
        self.pump = Pump(self.epoll.fileno(), 16, turn_bytes, 4096, inbox_cap)
        self.sockets: list[socket.socket] = []

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.epoll.close()

    def keep(self, server: socket.socket, client: socket.socket) -> None:
        """Serve ``server`` (registered), talk on ``client``; both closed with the rig."""
        for sock in (server, client):
            sock.setblocking(False)
            self.sockets.append(sock)
        self.epoll.register(server.fileno(), REGISTER)

    def turn(self, owed: list[int] | None = None) -> list[tuple[int, int, int]]:
        """One turn: the ``(fd, mask, outcome)`` returned."""
        return self.pump.turn(owed or [])

    def attach(
        self,
        read_size: int = 65536,
        framer: Any = None,
        pair: tuple[socket.socket, socket.socket] | None = None,
    ) -> Reader:
        """A new connection (a socket pair unless ``pair``, registered
        already), registered and attached as a reading connection (split
        with ``framer``'s C scanner)."""
        server, client = pair or socket.socketpair()
        if pair is None:
            self.keep(server, client)
        if framer is None:
            conn = PumpedConnection.reading(read_size)
        else:
            scanner, held = framer.splitting_state()
            conn = PumpedConnection.reading(read_size, scanner.address, scanner)
            conn.set_input(held)
        self.pump.attach(server.fileno(), conn)
        reader = Reader(server, client, conn, framer)
        assert self.turn() == []  # the registration's output edge: nothing to do
        return reader


@dataclass
class Reader:
    """One connection the rig's pump reads for Python."""

    server: socket.socket
    client: socket.socket
    conn: PumpedConnection
    framer: Any

    @property
    def fd(self) -> int:
        return self.server.fileno()


@contextmanager
def read_rig(**options: int) -> Iterator[ReadRig]:
    rig = ReadRig(**options)
    try:
        yield rig
    finally:
        rig.close()


def c_framer(framing: str = "len", **options: Any) -> Any:
    return FramingConfig(framing, implementation="c", **options).new_framer()  # type: ignore[arg-type]


def frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


@needs_pump
def test_input_is_the_exact_bytes_read() -> None:
    """A reading connection without a framer: INPUT, the bytes one item of
    :attr:`Pump.items`, the mask their length; counted; the next input is
    the next run."""
    with read_rig() as rig:
        reader = rig.attach()
        reader.client.send(b"hello\nwor")
        assert rig.turn() == [(reader.fd, 9, INPUT)]
        assert rig.pump.items == [b"hello\nwor"]
        assert reader.conn.take_byte_counts() == (9, 0)
        assert reader.conn.buffered == 0  # nothing kept in C: Python has it all
        reader.client.send(b"ld\n")
        assert rig.turn() == [(reader.fd, 3, INPUT)]
        assert rig.pump.items == [b"ld\n"]
        assert rig.turn() == []
        assert rig.pump.items == []


@needs_pump
def test_input_more_when_the_turn_bytes_are_used() -> None:
    """Reads of the read size, at most turn_bytes a turn: INPUT_MORE (owe it
    a turn), then the rest; nothing lost or repeated."""
    with read_rig(turn_bytes=10) as rig:
        reader = rig.attach(read_size=4)
        sent = bytes(range(65, 65 + 23))
        reader.client.send(sent)
        assert rig.turn() == [(reader.fd, 10, INPUT_MORE)]
        assert rig.pump.items == [sent[:10]]  # one item, however many reads
        assert rig.turn([reader.fd]) == [(reader.fd, 10, INPUT_MORE)]
        assert rig.pump.items == [sent[10:20]]
        assert rig.turn([reader.fd]) == [(reader.fd, 3, INPUT)]
        assert rig.pump.items == [sent[20:]]
        assert reader.conn.take_byte_counts() == (23, 0)


@needs_pump
@pytest.mark.parametrize("read_size", [1, 5, 65536])
def test_messages_split_in_c_with_the_unfinished_one_kept(read_size: int) -> None:
    """With a C length framer: MESSAGES (the mask their count), the exact
    messages (0 bytes among them), the unfinished one kept in C and
    completed by the next input."""
    with read_rig() as rig:
        reader = rig.attach(read_size, c_framer(max_frame=100))
        conn = reader.conn
        reader.client.send(frame(b"a") + frame(b"") + frame(b"bc") + frame(b"defgh")[:6])
        assert rig.turn() == [(reader.fd, 3, MESSAGES)]
        assert rig.pump.items == [b"a", b"", b"bc"]
        assert conn.buffered == 6
        conn.accounted = 6  # what Python's answer does
        reader.client.send(b"fgh" + frame(b"i"))
        assert rig.turn() == [(reader.fd, 2, MESSAGES)]
        assert rig.pump.items == [b"defgh", b"i"]
        assert conn.buffered == 0
        conn.accounted = 0
        reader.client.send(frame(b"jk")[:3])
        [(fd, _, outcome)] = rig.turn()  # no message: the account only (the mask: epoll's)
        assert (fd, outcome, rig.pump.items) == (reader.fd, pump_module.ACCOUNT, [])
        assert conn.buffered == 3
        conn.accounted = 3
        assert rig.turn([reader.fd]) == []
        assert conn.take_input() == frame(b"jk")[:3]
        assert conn.take_byte_counts() == (32, 0)


@needs_pump
def test_split_and_unsplit_input_in_one_turn_are_items_in_the_outcomes_order() -> None:
    """A connection split in C (MESSAGES: ``mask`` items, its messages) and
    one that is not (INPUT: one item, ``mask`` its length), both ready in
    one turn, written in either order: taken in the order of the outcomes,
    :attr:`Pump.items` gives each its own, and nothing else."""
    with read_rig() as rig:
        split = rig.attach(framer=c_framer(max_frame=100))
        plain = rig.attach()
        for round_, order in enumerate(((split, plain), (plain, split))):
            messages = [b"ab%d" % round_, b"", b"cde"]
            sends = {
                split.fd: b"".join(map(frame, messages)),
                plain.fd: b"line %d\nno" % round_,
            }
            for reader in order:
                reader.client.send(sends[reader.fd])
            events = rig.turn()
            assert sorted(events) == sorted(
                [(split.fd, 3, MESSAGES), (plain.fd, len(sends[plain.fd]), INPUT)]
            )
            items, taken, got = rig.pump.items, 0, {}
            for fd, mask, outcome in events:
                count = 1 if outcome == INPUT else mask
                got[fd], taken = items[taken : taken + count], taken + count
            assert taken == len(items)
            assert got == {split.fd: messages, plain.fd: [sends[plain.fd]]}


@needs_pump
def test_an_over_long_header_ends_the_split_after_the_messages_before_it() -> None:
    """MESSAGES_MORE with the messages before the bad header; the next
    service hands the connection back (ENDED), the bytes from the header on
    kept in C, for which Python's framer raises its own error; detached."""
    with read_rig() as rig:
        framer = c_framer(max_frame=100)
        reader = rig.attach(framer=framer)
        bad = (101).to_bytes(4, "big") + b"rest"
        reader.client.send(frame(b"ok") + frame(b"") + bad)
        assert rig.turn() == [(reader.fd, 2, MESSAGES_MORE)]
        assert rig.pump.items == [b"ok", b""]
        assert rig.turn([reader.fd]) == [(reader.fd, 0, ENDED)]
        assert reader.conn.take_input() == bad
        framer.restore_splitting(bad)
        with pytest.raises(FrameTooLongError) as info:
            framer.feed(b"")
        assert str(info.value) == "frame header announces 101 bytes, over max_frame=100"
        assert info.value.frames == []
        reader.client.send(b"more")
        [(fd, _, outcome)] = rig.turn()
        assert (fd, outcome) == (reader.fd, EVENT)  # detached: nothing read
        assert reader.server.recv(100) == b"more"


@needs_pump
def test_a_bad_header_first_hands_back_on_the_next_service() -> None:
    """No message before the bad header: AGAIN (nothing for Python yet),
    then ENDED with every byte read kept."""
    with read_rig() as rig:
        reader = rig.attach(framer=c_framer("varint", max_frame=100))
        bad = b"\xff" * 11 + b"x"
        reader.client.send(bad)
        assert [(fd, o) for fd, _, o in rig.turn()] == [(reader.fd, PUMP_AGAIN)]
        assert rig.pump.items == []
        assert rig.turn([reader.fd]) == [(reader.fd, 0, ENDED)]
        assert reader.conn.take_input() == bad


@needs_pump
@pytest.mark.parametrize("split", [False, True], ids=["input", "messages"])
def test_the_end_of_input_after_bytes_waits_for_them_to_be_answered(split: bool) -> None:
    """Bytes, then the peer's end: INPUT_MORE (MESSAGES_MORE) with the bytes,
    then END_OF_INPUT on the next service, an unfinished message kept."""
    with read_rig() as rig:
        reader = rig.attach(framer=c_framer() if split else None)
        data = frame(b"abc") + frame(b"defg")[:5]
        reader.client.send(data)
        reader.client.shutdown(socket.SHUT_WR)
        if split:
            assert rig.turn() == [(reader.fd, 1, MESSAGES_MORE)]
            assert rig.pump.items == [b"abc"]
            kept = frame(b"defg")[:5]
        else:
            assert rig.turn() == [(reader.fd, len(data), INPUT_MORE)]
            assert rig.pump.items == [data]
            kept = b""
        [(fd, _, outcome)] = rig.turn([reader.fd])
        assert (fd, outcome) == (reader.fd, END_OF_INPUT)
        assert reader.conn.take_input() == kept
        assert reader.conn.take_byte_counts() == (len(data), 0)
        assert rig.turn() == []  # detached: no more


@needs_pump
def test_the_end_of_input_alone_is_handed_back_at_once() -> None:
    with read_rig() as rig:
        reader = rig.attach()
        reader.client.shutdown(socket.SHUT_WR)
        [(fd, _, outcome)] = rig.turn()
        assert (fd, outcome, rig.pump.items) == (reader.fd, END_OF_INPUT, [])


@needs_pump
def test_a_connection_beyond_the_inbox_cap_is_served_next_turn() -> None:
    """An inbox of 8 bytes a turn: the first connection's 8 fill it
    (INPUT_MORE), the second gets AGAIN with nothing read; the owed turns
    read the rest; each connection's bytes exactly once, in order."""
    with read_rig(inbox_cap=8) as rig:
        a, b = rig.attach(), rig.attach()
        sent = {a.fd: b"A" * 8 + b"a" * 5, b.fd: b"B" * 6}
        a.client.send(sent[a.fd])
        b.client.send(sent[b.fd])
        got: dict[int, bytes] = {a.fd: b"", b.fd: b""}
        outcomes: list[tuple[int, int]] = []
        owed: list[int] = []
        for _ in range(10):
            events = rig.turn(owed)
            if not events:
                break
            owed, items, taken = [], rig.pump.items, 0
            for fd, mask, outcome in events:
                outcomes.append((fd, outcome))
                if outcome in (INPUT, INPUT_MORE):
                    item, taken = items[taken], taken + 1  # one item each
                    assert len(item) == mask
                    got[fd] += item
                if outcome in (INPUT_MORE, PUMP_AGAIN):
                    owed.append(fd)
            assert taken == len(items) and sum(map(len, items)) <= 8
        assert got == sent
        assert outcomes == [
            (a.fd, INPUT_MORE),
            (b.fd, PUMP_AGAIN),
            (a.fd, INPUT),  # the owed, in their order
            (b.fd, INPUT_MORE),  # the inbox's 3 bytes left
            (b.fd, INPUT),
        ]


@needs_pump
def test_a_short_reply_keeps_exactly_the_unsent_rest() -> None:
    """reply() to a socket that takes part: SHORT_SEND, the rest kept
    (take_unsent), the part sent counted; then a reset peer: SOCKET_ERROR."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    with read_rig() as rig:
        rig.keep(server, client)
        reader = rig.attach(pair=(server, client))
        conn = reader.conn
        reply = bytes(random.Random(3).choices(ALPHABET, k=100_000))
        assert conn.reply(reader.fd, reply) == SHORT_SEND
        rest, _ = conn.take_unsent()
        _, sent = conn.take_byte_counts()
        assert 0 < sent < len(reply) and len(rest) == len(reply) - sent
        assert rest == reply[sent:]
        got = bytearray()
        while len(got) < sent:
            got += received(client)
        assert bytes(got) == reply[:sent]
        assert conn.take_unsent() == (b"", 0)
        assert conn.reply(reader.fd, b"small") == PUMP_WAIT
        assert conn.take_byte_counts() == (0, 5)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        [(fd, _, outcome)] = rig.turn()
        assert (fd, outcome) == (reader.fd, SOCKET_ERROR)
        assert conn.error == errno.ECONNRESET


@needs_pump
def test_reply_to_a_reset_peer_is_a_socket_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with read_rig() as rig:
        rig.keep(server, client)
        reader = rig.attach(pair=(server, client))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        outcome = PUMP_WAIT
        for _ in range(3):  # the first send may go before the reset is known
            outcome = reader.conn.reply(reader.fd, b"x" * 1000)
            if outcome != PUMP_WAIT:
                break
        assert outcome == SOCKET_ERROR
        assert reader.conn.error in (errno.ECONNRESET, errno.EPIPE)


@needs_pump
@pytest.mark.parametrize("split", [False, True], ids=["input", "messages"])
def test_a_reused_descriptor_is_never_read_with_the_old_state(split: bool) -> None:
    """A read bytes and an end of input (pending), and holds an unfinished
    message (split), when it is detached and closed; a new socket takes
    its number.  Registered only: an EVENT, nothing read.  Attached anew:
    its own bytes alone, no end of input, no old message in front."""
    with read_rig() as rig:
        a = rig.attach(framer=c_framer() if split else None)
        fd = a.fd
        a.client.send(frame(b"one") + b"\x00\x00")
        a.client.shutdown(socket.SHUT_WR)
        assert [o for _, _, o in rig.turn()] == [MESSAGES_MORE if split else INPUT_MORE]
        rig.pump.detach(fd)  # the task's part: detach, then close
        rig.epoll.unregister(fd)
        a.server.close()
        b_server, b_client = socket.socketpair()
        b_server = at_descriptor(b_server, fd)
        rig.keep(b_server, b_client)
        b_client.send(frame(b"two"))
        events = rig.turn([fd])  # A was owed a turn, too
        assert [(got, outcome) for got, _, outcome in events] == [(fd, EVENT)]
        assert rig.pump.items == []
        b = rig.attach(framer=c_framer() if split else None, pair=(b_server, b_client))
        assert b.fd == fd
        # attach() took the pending edge's turn: the input is still there.
        b_client.send(frame(b"three"))
        if split:
            assert rig.turn() == [(fd, 2, MESSAGES)]
            assert rig.pump.items == [b"two", b"three"]
        else:
            assert rig.turn() == [(fd, 16, INPUT)]
            assert rig.pump.items == [frame(b"two") + frame(b"three")]
        assert rig.turn([fd]) == []  # no end of input from A
        assert b.conn.take_input() == b""
        assert a.conn.take_input() == (b"\x00\x00" if split else b"")


def available(stream: trio.SocketStream) -> bytes:
    """What ``stream``'s socket holds now, read without waiting."""
    data = bytearray()
    while True:
        try:
            chunk = os.read(stream.socket.fileno(), 65536)
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


@needs_pump
@pytest.mark.parametrize("order", ["split-first", "input-first"])
async def test_connections_split_and_not_split_in_one_turn_get_their_own_bytes(
    order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One hub, one turn: a ``len`` connection (split in C: MESSAGES) and a
    ``line`` connection (INPUT) both ready; each respond sees its own
    messages, and each client gets exactly its own replies."""
    outcomes: Counter[int] = Counter()
    hub = make_hub(True, WIDE.profile(), outcomes, monkeypatch)
    split_case, line_case = Case("len", WIDE, "eof", 0), Case("line", WIDE, "eof", 0)
    results: list[dict[str, Any]] = [{}, {}]
    async with serving(hub):
        split_client, split_conn = await tcp_pair("len")
        line_client, line_conn = await tcp_pair("len")
        streams = [
            server_stream(split_conn, split_case, "hub"),
            server_stream(line_conn, line_case, "hub"),
        ]
        with trio.fail_after(RUN_LIMIT):
            async with trio.open_nursery() as nursery:
                for stream, result in zip(streams, results, strict=True):
                    nursery.start_soon(serve_respond, stream, result)
                await trio.testing.wait_all_tasks_blocked()  # both parked on the pump
                clients = [(split_client, split_case), (line_client, line_case)]
                if order == "input-first":
                    clients.reverse()
                for round_ in range(4):
                    messages = [b"split%dabc" % round_, b"line%dxyz" % round_]
                    if order == "input-first":
                        messages.reverse()
                    # Both writes before the hub's next turn: one turn serves both.
                    for (client, case), message in zip(clients, messages, strict=True):
                        os.write(client.socket.fileno(), case.encode(message) * 2)
                    # The hub's turn sends the answers from C before it blocks again.
                    await trio.testing.wait_all_tasks_blocked()
                    for (client, case), message in zip(clients, messages, strict=True):
                        want = case.encode(message.swapcase()) * 2
                        assert available(client) == want, (order, round_, message)
                for client, _ in clients:
                    await client.send_eof()
        for client in (split_client, line_client):
            assert await client.receive_some(100) == b""
            await client.aclose()
    assert [r["ending"] for r in results] == [("returned", False)] * 2
    assert {MESSAGES, INPUT} <= set(outcomes), outcomes


# -- a real server: a misbehaving respond never stops it ----------------------


class Misbehaving(BaseRequestHandler):
    """The message with its case swapped; ``BOOM`` raises, ``STR`` returns a str."""

    def respond(self, message: bytes) -> bytes | None:
        if message == b"BOOM":
            raise RuntimeError("bug in respond")
        if message == b"STR":
            return "text"  # type: ignore[return-value]
        return message.swapcase()


async def answered(client: trio.SocketStream, case: Case, message: bytes) -> None:
    """``message`` sent; its reply, and nothing else, received."""
    await client.send_all(case.encode(message))
    want = case.encode(message.swapcase())
    got = bytearray()
    while len(got) < len(want):
        chunk = await client.receive_some(len(want) - len(got))
        assert chunk, f"the connection ended after {bytes(got)!r}"
        got += chunk
    assert bytes(got) == want


async def receive_to_the_end(client: trio.SocketStream) -> bytes:
    """What arrives until the server's end (its close or its reset)."""
    data = bytearray()
    try:
        while chunk := await client.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return bytes(data)


@pytest.mark.parametrize("framing", ["len", "line"])
async def test_a_misbehaving_respond_never_stops_the_server(
    framing: Framing, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A :class:`MessageServer` served as the environment says (the pump by
    default): culprits whose ``respond`` raises or returns a str, each
    failing in the same hub turn as a canary's message, lose their
    connection alone (no reply after the bad message, one handler_error
    each, logged with the error); the canary is answered every time."""
    case = Case(framing, WIDE, "eof", 0)
    replies: Counter[int] = Counter()
    server = MessageServer(Misbehaving, port=0, framing=case.config, grace=2)
    culprits = [(b"BOOM", RuntimeError, "bug in respond"), (b"STR", TypeError, "not str")]
    with recording_replies(replies, monkeypatch), trio.fail_after(TIMEOUT):
        async with running(server) as port:
            canary = await trio.open_tcp_stream("127.0.0.1", port)
            await answered(canary, case, b"canary-0")
            for index, (bad, _, _) in enumerate(culprits, 1):
                for _ in range(2):  # twice: a fresh culprit connection each time
                    culprit = await trio.open_tcp_stream("127.0.0.1", port)
                    await answered(culprit, case, b"hello")
                    await trio.testing.wait_all_tasks_blocked()  # both parked
                    # Both before the hub's next turn: one turn serves both.
                    after = case.encode(bad) + case.encode(b"after")
                    os.write(culprit.socket.fileno(), after)
                    os.write(canary.socket.fileno(), case.encode(b"canary-%d" % index))
                    want = case.encode(b"CANARY-%d" % index)
                    got = await canary.receive_some(len(want))
                    while len(got) < len(want):
                        got += await canary.receive_some(len(want) - len(got))
                    assert got == want
                    assert await receive_to_the_end(culprit) == b""
                    await culprit.aclose()
            await answered(canary, case, b"canary-last")
            await canary.aclose()
            while server.active_connections:
                await trio.sleep(0.01)
        await server.wait_stopped()
    assert server.connections_served == 1 + 2 * len(culprits)
    assert server.closed_by_reason["handler_error"] == 2 * len(culprits)
    errors = [r for r in caplog.records if r.name == "trioecho.server" and r.exc_info]
    assert len(errors) == 2 * len(culprits)
    raised = [r.exc_info[1] for r in errors if r.exc_info is not None]
    for (_, error, text), got_errors in zip(culprits, (raised[:2], raised[2:]), strict=True):
        for exc in got_errors:
            assert type(exc) is error and text in str(exc), exc
    if pump_module.pump_enabled() and default_readiness() == "hub":
        assert replies[PUMP_WAIT] > 0, replies  # answered from C
    else:
        assert not replies
