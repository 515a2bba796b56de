"""The echo session (sans-IO): C engine and pure-Python twin, at every size.

* Differential: random configurations, bytes, chunkings and output
  capacities (down to one byte, smaller than any reply): the C engine and the
  twin must return the same outputs, call by call.
* Reference: the session's wire bytes equal the generic path's (the framer
  splits, ``reply_to`` answers, the framer encodes), through the handlers on
  in-memory streams.
* Sizes: messages crossing every internal boundary come back byte for byte.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from support.helpers import chunked
from test_framing_differential import length_configs, line_bytes, line_configs

from trioecho import (
    DelimiterInPayloadError,
    FrameTooLongError,
    FramingConfig,
    IncompleteFrameError,
    LengthPrefixedFramer,
    LineFramer,
)
from trioecho._backend import Implementation
from trioecho.services.echo import EchoHandler, GenericEchoHandler
from trioecho.services.echo_session import (
    DEFAULT_ECHO_CAPACITY,
    GREETING,
    REPLY_SUFFIX,
    EchoOutput,
    EchoSession,
    reply_limit,
)
from trioecho.stream.message_stream import DEFAULT_RECEIVE_SIZE, MessageStream

H = REPLY_SUFFIX


def fit(config: dict[str, Any]) -> dict[str, Any]:
    """A length configuration whose replies fit the header."""
    limit = (1 << (8 * config["length_bytes"])) - 1 - len(H)
    return {**config, "max_frame": min(config["max_frame"], limit)}


def plain(output: EchoOutput) -> tuple[Any, ...]:
    """An output as comparable values (exceptions by type, text and numbers)."""

    def error(exc: BaseException | None) -> Any:
        if exc is None:
            return None
        return (type(exc).__name__, str(exc), getattr(exc, "length", None))

    return (
        output.data,
        output.replies,
        output.received,
        output.stopped,
        error(output.error),
        tuple(error(e) for e in output.dropped),
    )


def run_both(
    config: FramingConfig, chunks: list[bytes], capacity: int, stop: bytes = b"q"
) -> list[tuple[Any, ...]]:
    sessions = [
        EchoSession(config, capacity=capacity, stop=stop, implementation=impl)
        for impl in ("c", "python")
    ]
    events: list[tuple[Any, ...]] = []
    for chunk in [*chunks, None]:
        outs = [s.feed(chunk) if chunk is not None else s.feed_eof() for s in sessions]
        got = [(*plain(o), s.buffered) for o, s in zip(outs, sessions, strict=True)]
        assert got[0] == got[1], f"C and Python differ on {chunk!r}: {got}"
        events.append(got[0])
    return events


capacities = st.integers(1, 40) | st.just(DEFAULT_ECHO_CAPACITY)


@settings(max_examples=400, deadline=None)
@given(
    config=line_configs,
    data=line_bytes,
    cuts=st.lists(st.integers(0, 60), max_size=6),
    capacity=capacities,
)
def test_line_sessions_agree(
    config: dict[str, Any], data: bytes, cuts: list[int], capacity: int
) -> None:
    run_both(FramingConfig("line", **config), chunked(data.replace(b"x", b"q"), cuts), capacity)


@settings(max_examples=400, deadline=None)
@given(
    config=length_configs,
    messages=st.lists(st.sampled_from([b"", b"q", b"qq", b"abc", b"x" * 40]), max_size=30),
    junk=st.binary(max_size=12),
    cuts=st.lists(st.integers(0, 600), max_size=6),
    capacity=capacities,
)
def test_length_sessions_agree(
    config: dict[str, Any], messages: list[bytes], junk: bytes, cuts: list[int], capacity: int
) -> None:
    config = fit(config)
    encoder = LengthPrefixedFramer(
        length_bytes=config["length_bytes"], byteorder=config["byteorder"]
    )
    wire = encoder.encode_many(messages) + junk
    run_both(FramingConfig("len", **config), chunked(wire, cuts), capacity)


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=20) | st.just(b"q"), max_size=8), capacity=capacities)
def test_raw_sessions_agree(chunks: list[bytes], capacity: int) -> None:
    run_both(FramingConfig("raw"), chunks, capacity)


# -- against the generic path, through the handlers -------------------------


async def handler_session(
    handler: type[EchoHandler], config: FramingConfig, chunks: list[bytes]
) -> tuple[bytes, str]:
    client, server = trio.testing.memory_stream_pair()
    stream = MessageStream(server, config.new_framer())
    outcome = "returned"

    async def serve() -> None:
        nonlocal outcome
        try:
            async with stream:
                await handler(stream, ("test", 0), None).handle()  # type: ignore[arg-type]
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"

    received = bytearray()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            try:
                for chunk in chunks:
                    await client.send_all(chunk)
                    await trio.testing.wait_all_tasks_blocked()
                await client.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            while data := await client.receive_some():
                received += data
    return bytes(received), outcome


def handlers_agree(config: FramingConfig, chunks: list[bytes]) -> None:
    fast = trio.run(handler_session, EchoHandler, config, chunks)
    generic = trio.run(handler_session, GenericEchoHandler, config, chunks)
    assert fast == generic


@settings(max_examples=200, deadline=None)
@given(
    config=line_configs,
    data=line_bytes,
    cuts=st.lists(st.integers(0, 60), max_size=6),
    impl=st.sampled_from(["c", "python"]),
)
def test_line_session_matches_the_generic_path(
    config: dict[str, Any], data: bytes, cuts: list[int], impl: Implementation
) -> None:
    config = {**config, "max_frame": config["max_frame"] + 16}  # room for the greeting
    handlers_agree(
        FramingConfig("line", implementation=impl, **config),
        chunked(data.replace(b"x", b"q"), cuts),
    )


@settings(max_examples=200, deadline=None)
@given(
    config=length_configs,
    messages=st.lists(st.sampled_from([b"", b"q", b"qq", b"abc", b"x" * 40]), max_size=30),
    junk=st.binary(max_size=12),
    cuts=st.lists(st.integers(0, 600), max_size=6),
    impl=st.sampled_from(["c", "python"]),
)
def test_length_session_matches_the_generic_path(
    config: dict[str, Any],
    messages: list[bytes],
    junk: bytes,
    cuts: list[int],
    impl: Implementation,
) -> None:
    config = fit({**config, "max_frame": config["max_frame"] + 16})
    encoder = LengthPrefixedFramer(
        length_bytes=config["length_bytes"], byteorder=config["byteorder"]
    )
    wire = encoder.encode_many(messages) + junk
    handlers_agree(FramingConfig("len", implementation=impl, **config), chunked(wire, cuts))


async def test_echo_counts_messages_like_the_generic_path() -> None:
    config = FramingConfig("len")
    framer = config.new_framer()
    counts = []
    for handler in (EchoHandler, GenericEchoHandler):
        client, server = trio.testing.memory_stream_pair()
        stream = MessageStream(server, config.new_framer())
        await client.send_all(framer.encode_many([b"a", b"b", b"c", b"q"]))
        async with stream:
            await handler(stream, ("test", 0), None).handle()  # type: ignore[arg-type]
        counts.append((stream.messages_received, stream.messages_sent))
    assert counts == [(4, 4), (4, 4)]  # a, b, c, q received; greeting + 3 replies sent


# -- every size --------------------------------------------------------------

SMALL_CAPACITY = 64


def boundary_sizes(max_frame: int, capacity: int, extra: int) -> list[int]:
    """Payload sizes at every internal boundary: 0, 1, the receive size, the
    output capacity (for the reply: ``extra`` bytes of framing and suffix),
    and max_frame, each -1/0/+1, within max_frame."""
    points = {0, 1, 2, DEFAULT_RECEIVE_SIZE, capacity - extra, max_frame}
    sizes = {p + d for p, d in itertools.product(points, (-1, 0, 1))}
    return sorted(s for s in sizes if 0 <= s <= max_frame)


@pytest.mark.parametrize("impl", ["c", "python"])
@pytest.mark.parametrize("capacity", [1, SMALL_CAPACITY, DEFAULT_ECHO_CAPACITY])
@pytest.mark.parametrize("length_bytes", [1, 2, 4, 8])
def test_every_length_size_is_answered(
    impl: Implementation, capacity: int, length_bytes: int
) -> None:
    config = FramingConfig("len", length_bytes=length_bytes)
    limit = reply_limit(config)
    assert limit is not None
    max_frame = min(limit, DEFAULT_ECHO_CAPACITY + 10)
    config = FramingConfig("len", length_bytes=length_bytes, max_frame=max_frame)
    framer = LengthPrefixedFramer(length_bytes=length_bytes)
    sizes = boundary_sizes(max_frame, capacity, length_bytes + len(H))
    sizes += boundary_sizes(max_frame, DEFAULT_ECHO_CAPACITY, length_bytes + len(H))
    session = EchoSession(config, capacity=capacity, implementation=impl)
    for size in sorted(set(sizes)):
        message = bytes([65 + size % 26]) * size
        output = session.feed(framer.encode(message))
        assert output.data == framer.encode(message + H), size
        assert (output.replies, output.received, output.error) == (1, 1, None)
    # all at once, in one read
    wire = framer.encode_many(bytes([97 + s % 26]) * s for s in sizes)
    output = session.feed(wire)
    assert output.data == framer.encode_many(bytes([97 + s % 26]) * s + H for s in sizes)


@pytest.mark.parametrize("impl", ["c", "python"])
@pytest.mark.parametrize("capacity", [1, SMALL_CAPACITY, DEFAULT_ECHO_CAPACITY])
@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n"])
def test_every_line_size_is_answered(impl: Implementation, capacity: int, delimiter: bytes) -> None:
    max_frame = DEFAULT_ECHO_CAPACITY + 10
    config = FramingConfig("line", delimiter=delimiter, max_frame=max_frame)
    sizes = boundary_sizes(max_frame, capacity, len(delimiter) + len(H))
    sizes += boundary_sizes(max_frame, DEFAULT_ECHO_CAPACITY, len(delimiter) + len(H))
    session = EchoSession(config, capacity=capacity, implementation=impl)
    for size in sorted(set(sizes)):
        message = bytes([65 + size % 26]) * size
        for cut in (size // 2, size + len(delimiter) - 1):  # across two reads
            wire = message + delimiter
            first = session.feed(wire[:cut])
            second = session.feed(wire[cut:])
            assert first.data + second.data == message + H + delimiter, size
            assert first.replies + second.replies == 1
    output = session.feed_eof()
    assert output == EchoOutput(b"", 0, 0)


@pytest.mark.parametrize("impl", ["c", "python"])
def test_a_message_of_exactly_max_frame_gets_its_reply(impl: Implementation) -> None:
    for config in (
        FramingConfig("len", max_frame=1000),
        FramingConfig("len", length_bytes=1, max_frame=252),
        FramingConfig("line", max_frame=1000),
    ):
        assert config.max_frame is not None
        framer = config.new_framer()
        session = EchoSession(config, implementation=impl)
        message = b"m" * config.max_frame
        assert session.feed(framer.encode(message)).data == framer.encode(message + H)
        over = session.feed(framer.encode(message + b"!"))
        assert (over.data, over.replies) == (b"", 0)
        assert isinstance(over.error, FrameTooLongError)
        assert (over.error.limit, over.error.length) == (config.max_frame, config.max_frame + 1)


@pytest.mark.parametrize("impl", ["c", "python"])
def test_a_reply_that_cannot_fit_the_header_is_refused_at_construction(
    impl: Implementation,
) -> None:
    EchoSession(FramingConfig("len", length_bytes=1, max_frame=252), implementation=impl)
    with pytest.raises(ValueError, match=r"max_frame=253 .* at most 252"):
        EchoSession(FramingConfig("len", length_bytes=1, max_frame=253), implementation=impl)
    with pytest.raises(ValueError, match="at most 65532"):
        EchoSession(FramingConfig("len", length_bytes=2), implementation=impl)  # 1 MiB default
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        EchoSession(FramingConfig("len"), capacity=0, implementation=impl)


# -- outcomes ------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["c", "python"])
def test_stop_ends_the_session_and_later_bytes_are_ignored(impl: Implementation) -> None:
    session = EchoSession(FramingConfig("line"), capacity=3, implementation=impl)
    output = session.feed(b"a\nbb\nq\nnever\n")
    assert output == EchoOutput(b"a" + H + b"\nbb" + H + b"\n", 2, 3, stopped=True)
    assert session.over
    assert session.feed(b"more\n") == EchoOutput(b"", 0, 0, stopped=True)
    assert session.feed_eof() == EchoOutput(b"", 0, 0, stopped=True)


@pytest.mark.parametrize("impl", ["c", "python"])
def test_too_long_ends_the_session_after_the_replies_before_it(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(max_frame=10)
    session = EchoSession(framer, capacity=2, implementation=impl)
    output = session.feed(framer.encode(b"ok") + b"\x00\x00\x00\x0b")
    assert output.data == framer.encode(b"ok" + H)
    assert isinstance(output.error, FrameTooLongError)
    assert str(output.error) == "frame header announces 11 bytes, over max_frame=10"
    assert session.feed(b"x").error is output.error


@pytest.mark.parametrize("impl", ["c", "python"])
def test_discard_mode_drops_over_long_lines_and_goes_on(impl: Implementation) -> None:
    config = FramingConfig("line", max_frame=3, on_too_long="discard")
    session = EchoSession(config, capacity=1, implementation=impl)
    output = session.feed(b"ab\nabcdef\nxy\nabcdefgh")
    assert output.data == b"ab" + H + b"\nxy" + H + b"\n"
    assert [e.length for e in output.dropped] == [6, 8]
    assert str(output.dropped[0]) == "line longer than max_frame=3: 6 bytes seen"
    assert output.error is None
    assert session.feed(b"ij\nzz\n") == EchoOutput(b"zz" + H + b"\n", 1, 1)


@pytest.mark.parametrize("impl", ["c", "python"])
def test_a_line_whose_reply_is_not_one_line_ends_the_session(impl: Implementation) -> None:
    # "a" + suffix completes the delimiter b"a\xe5" inside the reply.
    config = FramingConfig("line", delimiter=b"a\xe5")
    session = EchoSession(config, implementation=impl)
    output = session.feed(b"ok" + b"a\xe5" + b"xa" + b"a\xe5")
    assert output.data == b"ok" + H + b"a\xe5"
    assert isinstance(output.error, DelimiterInPayloadError)
    with pytest.raises(DelimiterInPayloadError) as raised:
        LineFramer(delimiter=b"a\xe5").encode(b"xa" + H)
    assert str(output.error) == str(raised.value)
    # With strip_cr, a reply ending in "\r" would lose it at the peer.
    session = EchoSession(FramingConfig("line", strip_cr=True), stop=b"", implementation=impl)
    output = EchoSession(
        FramingConfig("line", strip_cr=True), suffix=b"", implementation=impl
    ).feed(b"x\r\r\n")
    assert isinstance(output.error, DelimiterInPayloadError)
    assert "strips it" in str(output.error)
    assert session.feed(b"x\r\r\n").data == b"x\r" + H + b"\n"


@pytest.mark.parametrize("impl", ["c", "python"])
def test_eof_inside_a_message_is_an_incomplete_frame(impl: Implementation) -> None:
    session = EchoSession(FramingConfig("len"), implementation=impl)
    assert session.feed(b"\x00\x00\x00\x05abc") == EchoOutput(b"", 0, 0)
    assert session.buffered == 7
    output = session.feed_eof()
    assert isinstance(output.error, IncompleteFrameError)
    assert output.error.buffered == 7
    assert str(output.error) == "connection closed inside a frame: 7 bytes of it received"


@pytest.mark.parametrize("impl", ["c", "python"])
def test_raw_answers_each_read(impl: Implementation) -> None:
    session = EchoSession(FramingConfig("raw"), capacity=2, implementation=impl)
    assert session.feed(b"hello") == EchoOutput(b"hello" + H, 1, 1)
    assert session.feed(b"") == EchoOutput(b"", 0, 0)
    assert session.buffered == 0
    assert session.feed(b"q") == EchoOutput(b"", 0, 1, stopped=True)


def test_a_framer_or_a_config_gives_the_same_session() -> None:
    framer = LineFramer(delimiter=b"\r\n", strip_cr=True, max_frame=9, on_too_long="discard")
    session = EchoSession(framer)
    assert session.config == FramingConfig(
        "line",
        delimiter=b"\r\n",
        strip_cr=True,
        max_frame=9,
        on_too_long="discard",
        implementation=framer.implementation,
    )
    assert "你好欢迎你".encode() == GREETING


def test_a_c_call_that_makes_no_progress_raises_instead_of_looping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop around the C call requires progress: were the C code to
    report "output full" having written nothing, the session raises."""
    _cecho = pytest.importorskip("trioecho.services._cecho")
    real = _cecho.lib
    calls = 0

    def stuck_feed(*args: Any) -> int:
        nonlocal calls
        calls += 1
        result = args[-1]
        result.status, result.consumed, result.produced = real.TE_ECHO_MORE, 0, 0
        return int(real.TE_ECHO_MORE)

    monkeypatch.setattr(_cecho, "_feed", stuck_feed)
    session = EchoSession(FramingConfig("line"), implementation="c")
    with pytest.raises(RuntimeError, match="no progress"):
        session.feed(b"hello\n")
    assert calls == 2


def test_the_engines_return_named_results(impl: Implementation) -> None:
    """Both twins return an EngineResult, its fields in the documented order."""
    from trioecho.services._pyecho import EngineResult, Status
    from trioecho.services.echo_session import ECHO

    unit = ECHO.get(impl)
    engine = unit.EchoEngine("len", 4, False, b"\n", True, False, 100, H, b"q", 64)
    result = engine.feed(b"\x00\x00\x00\x02hi\x00\x00")
    assert type(result) is EngineResult
    assert (result.consumed, result.replies, result.received) == (6, 1, 1)
    assert result == (b"\x00\x00\x00\x05hi" + H, 6, 1, 1, Status.NEED, 0, ())
    over = engine.feed(b"\x00\x00\x00\x65" + b"x" * 101)
    assert type(over) is EngineResult
    assert (over.status, over.length, over.wire) == (Status.TOO_LONG, 101, b"")


def test_a_framer_problem_is_named(impl: Implementation) -> None:
    """A scan's problem is a Problem with the code, the value and the varint's bytes."""
    from trioecho.framing.contract import Problem, ProblemCode
    from trioecho.framing.implementation import FRAMER

    framer = LengthPrefixedFramer(length_bytes=1, max_frame=5, implementation=impl)
    frames, consumed, problem = framer._scanner.scan(b"\x01a\x09")
    assert (frames, consumed) == ([b"a"], 2)
    assert type(problem) is Problem
    assert problem == Problem(ProblemCode.TOO_LONG, 9, 0)
    assert impl == FRAMER.get(impl).IMPLEMENTATION
