"""Length-prefixed framing: vectors for every option, run against both implementations."""

from __future__ import annotations

import pytest

from trioecho import (
    DelimiterInPayloadError,
    FrameTooLongError,
    IncompleteFrameError,
    LengthPrefixedFramer,
    make_framer,
)
from trioecho._backend import Implementation


def feed_all(framer: LengthPrefixedFramer, chunks: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames += framer.feed(chunk)
    return frames


@pytest.mark.parametrize(
    ("length_bytes", "byteorder", "wire"),
    [
        (1, "big", b"\x03abc"),
        (2, "big", b"\x00\x03abc"),
        (2, "little", b"\x03\x00abc"),
        (4, "big", b"\x00\x00\x00\x03abc"),
        (4, "little", b"\x03\x00\x00\x00abc"),
        (8, "big", b"\x00" * 7 + b"\x03abc"),
        (8, "little", b"\x03" + b"\x00" * 7 + b"abc"),
    ],
)
def test_header_widths_and_byte_orders(
    impl: Implementation, length_bytes: int, byteorder: str, wire: bytes
) -> None:
    framer = LengthPrefixedFramer(
        length_bytes=length_bytes,
        byteorder=byteorder,  # type: ignore[arg-type]
        implementation=impl,
    )
    assert framer.encode(b"abc") == wire
    assert framer.feed(wire) == [b"abc"]
    assert framer.buffered == 0


def test_default_is_four_bytes_big_endian(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(implementation=impl)
    assert framer.encode(b"hi") == b"\x00\x00\x00\x02hi"
    assert framer.max_frame == 1 << 20


def test_zero_length_frames(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(implementation=impl)
    assert framer.encode(b"") == b"\x00\x00\x00\x00"
    assert framer.feed(b"\x00\x00\x00\x00" * 3) == [b"", b"", b""]


def test_sticky_packets_are_split_and_split_packets_joined(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(implementation=impl)
    wire = framer.encode(b"hello") + framer.encode(b"world")
    assert framer.feed(wire[:7]) == []
    assert framer.buffered == 7
    assert framer.feed(wire[7:12]) == [b"hello"]
    assert framer.feed(wire[12:]) == [b"world"]
    assert framer.buffered == 0


def test_every_split_position(impl: Implementation) -> None:
    messages = [b"", b"a", b"sticky", b"\x00\xff" * 20, b"end"]
    wire = LengthPrefixedFramer().encode_many(messages)
    for cut in range(len(wire) + 1):
        framer = LengthPrefixedFramer(implementation=impl)
        assert feed_all(framer, [wire[:cut], wire[cut:]]) == messages, cut
        framer.feed_eof()


def test_one_byte_at_a_time(impl: Implementation) -> None:
    messages = [bytes([i]) * i for i in range(40)]
    wire = LengthPrefixedFramer(length_bytes=2).encode_many(messages)
    framer = LengthPrefixedFramer(length_bytes=2, implementation=impl)
    assert feed_all(framer, [wire[i : i + 1] for i in range(len(wire))]) == messages


@pytest.mark.parametrize("count", [15, 16, 17, 500, 20_000])
def test_many_frames_in_one_feed(impl: Implementation, count: int) -> None:
    messages = [str(i).encode() for i in range(count)]
    framer = LengthPrefixedFramer(implementation=impl)
    assert framer.feed(framer.encode_many(messages) + b"\x00\x00") == messages
    assert framer.buffered == 2


def test_accepts_bytearray_and_memoryview(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(length_bytes=1, implementation=impl)
    assert framer.feed(bytearray(b"\x02ab\x01")) == [b"ab"]
    frames = framer.feed(memoryview(b"c\x00"))
    assert frames == [b"c", b""]
    assert all(type(frame) is bytes for frame in frames)


def test_limit_exactly_and_limit_plus_one(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(max_frame=5, implementation=impl)
    assert framer.feed(b"\x00\x00\x00\x05abcde") == [b"abcde"]
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"\x00\x00\x00\x06")
    assert info.value.limit == 5
    assert info.value.length == 6
    assert str(info.value) == "frame header announces 6 bytes, over max_frame=5"


def test_huge_prefix_fails_as_soon_as_the_header_is_complete(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(implementation=impl)
    assert framer.feed(b"\xff\xff\xff") == []
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"\xff")
    assert info.value.length == 0xFFFFFFFF
    assert info.value.limit == 1 << 20
    assert framer.buffered == 0


def test_eight_byte_prefix_of_two_to_the_63(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(length_bytes=8, implementation=impl)
    with pytest.raises(FrameTooLongError) as info:
        framer.feed((1 << 63).to_bytes(8, "big") + b"body")
    assert info.value.length == 1 << 63


def test_max_eight_byte_prefix_with_max_limit(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(length_bytes=8, max_frame=(1 << 63) - 1, implementation=impl)
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"\xff" * 8)
    assert info.value.length == (1 << 64) - 1


def test_frames_before_the_bad_header_are_kept(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(max_frame=3, implementation=impl)
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"\x00\x00\x00\x01a\x00\x00\x00\x02bc\x00\x00\x00\x09xyz")
    assert info.value.frames == [b"a", b"bc"]


def test_framer_stays_broken_after_an_error(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(max_frame=3, implementation=impl)
    with pytest.raises(FrameTooLongError):
        framer.feed(b"\x00\x00\x00\x09")
    with pytest.raises(FrameTooLongError, match="after an earlier error") as info:
        framer.feed(b"\x00\x00\x00\x01a")
    assert info.value.frames == []
    framer.feed_eof()  # the error was already reported


def test_eof_inside_header_and_body(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(implementation=impl)
    framer.feed(b"\x00\x00")
    with pytest.raises(IncompleteFrameError) as info:
        framer.feed_eof()
    assert info.value.buffered == 2
    assert str(info.value) == "connection closed inside a frame: 2 bytes of it received"

    framer = LengthPrefixedFramer(implementation=impl)
    framer.feed(b"\x00\x00\x00\x05abc")
    with pytest.raises(IncompleteFrameError) as info:
        framer.feed_eof()
    assert info.value.buffered == 7


def test_clean_eof(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(implementation=impl)
    framer.feed(b"\x00\x00\x00\x01a")
    framer.feed_eof()


def test_encode_many_is_concatenated_frames() -> None:
    framer = LengthPrefixedFramer(length_bytes=1)
    assert framer.encode_many([b"ab", b"", memoryview(b"c")]) == b"\x02ab\x00\x01c"
    assert framer.encode_many([]) == b""


def test_max_frame_limits_what_is_accepted_not_what_is_sent() -> None:
    """As Netty's and tokio's codecs: the encoder is limited by the header only."""
    framer = LengthPrefixedFramer(max_frame=4)
    assert framer.encode(b"abcde") == b"\x00\x00\x00\x05abcde"
    assert framer.encode_many([b"ok", b"abcde"]) == b"\x00\x00\x00\x02ok\x00\x00\x00\x05abcde"
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"\x00\x00\x00\x05abcde")
    assert (info.value.limit, info.value.length) == (4, 5)


@pytest.mark.parametrize(("length_bytes", "header_max"), [(1, 255), (2, 65535)])
def test_encode_refuses_payload_too_long_for_the_header(length_bytes: int, header_max: int) -> None:
    framer = LengthPrefixedFramer(length_bytes=length_bytes)
    assert len(framer.encode(b"x" * header_max)) == length_bytes + header_max
    with pytest.raises(FrameTooLongError) as info:
        framer.encode(b"x" * (header_max + 1))
    assert info.value.limit == header_max
    assert f"the {length_bytes}-byte header's maximum {header_max}" in str(info.value)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"length_bytes": 5}, ValueError),
        ({"byteorder": "native"}, ValueError),
        ({"max_frame": -1}, ValueError),
        ({"max_frame": 1 << 63}, ValueError),
        ({"max_frame": 1.5}, TypeError),
        ({"implementation": "rust"}, ValueError),
    ],
)
def test_bad_options(options: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        LengthPrefixedFramer(**options)  # type: ignore[arg-type]


def test_encoding_errors_are_local_and_wire_errors_are_not(impl: Implementation) -> None:
    """A payload of our own that cannot be framed is this side's mistake
    (``local``); a peer's frame over the limit is not."""
    framer = make_framer("len", length_bytes=1, max_frame=10, implementation=impl)
    with pytest.raises(FrameTooLongError) as ours:
        framer.encode(b"x" * 256)
    assert ours.value.local is True
    with pytest.raises(FrameTooLongError) as theirs:
        framer.feed(b"\xff")
    assert theirs.value.local is False
    with pytest.raises(DelimiterInPayloadError) as line:
        make_framer("line", implementation=impl).encode(b"a\nb")
    assert line.value.local is True
    with pytest.raises(IncompleteFrameError) as cut:
        fresh = make_framer("len", implementation=impl)
        fresh.feed(b"\x00\x00")
        fresh.feed_eof()
    assert cut.value.local is False


# -- forwarding: bytes passed on as they arrive, headers checked -------------


def postgres_like(impl: Implementation, max_frame: int = 1000) -> LengthPrefixedFramer:
    """A type byte, a 4-byte length counting itself, the header kept."""
    return LengthPrefixedFramer(
        length_offset=1,
        length_adjustment=-4,
        include_header=True,
        max_frame=max_frame,
        implementation=impl,
    )


def message(kind: bytes, body: bytes) -> bytes:
    return kind + (4 + len(body)).to_bytes(4, "big") + body


def forward_all(framer: LengthPrefixedFramer, chunks: list[bytes]) -> tuple[bytes, int]:
    passed = b""
    frames = 0
    for chunk in chunks:
        out, count, error = framer.forward(chunk)
        assert error is None
        passed += bytes(out)
        frames += count
    return passed, frames


def test_forwarding_passes_every_byte_on_however_the_stream_is_cut(impl: Implementation) -> None:
    wire = message(b"Q", b"SELECT 1;\0") + message(b"S", b"") + message(b"X", b"ab")
    for cut in range(len(wire) + 1):
        framer = postgres_like(impl)
        assert framer.can_forward
        first, count = forward_all(framer, [wire[:cut]])
        # What is held back is an incomplete header, never more.
        assert len(wire[:cut]) - len(first) < 5
        rest, more = forward_all(framer, [wire[cut:]])
        assert (first + rest, count + more) == (wire, 3)
        assert framer.buffered == 0
        framer.feed_eof()


@pytest.mark.parametrize("size", [0, 1, 999, 1000])
def test_a_frame_streams_through_in_pieces_up_to_max_frame(impl: Implementation, size: int) -> None:
    wire = message(b"D", b"x" * size)
    framer = postgres_like(impl, max_frame=1000)
    chunks = [wire[i : i + 7] for i in range(0, len(wire), 7)]
    passed, frames = forward_all(framer, chunks)
    assert (passed, frames) == (wire, 1)
    framer.feed_eof()


def test_a_header_over_max_frame_stops_after_the_bytes_before_it(impl: Implementation) -> None:
    good = message(b"D", b"x" * 1000)
    bad = b"D" + (4 + 1001).to_bytes(4, "big") + b"x" * 10
    framer = postgres_like(impl, max_frame=1000)
    out, frames, error = framer.forward(good + bad)
    assert (bytes(out), frames) == (good, 1)
    assert isinstance(error, FrameTooLongError)
    assert str(error) == "frame header announces 1001 bytes, over max_frame=1000"
    assert str(error) == str(feed_error(postgres_like(impl, max_frame=1000), good + bad))
    with pytest.raises(FrameTooLongError, match="framer stopped after an earlier error"):
        framer.forward(b"more")


def feed_error(framer: LengthPrefixedFramer, data: bytes) -> Exception:
    with pytest.raises(FrameTooLongError) as caught:
        framer.feed(data)
    return caught.value


def test_an_end_inside_a_forwarded_frame_is_incomplete(impl: Implementation) -> None:
    framer = postgres_like(impl)
    out, frames, error = framer.forward(message(b"D", b"x" * 100)[:50])
    assert (len(out), frames, error) == (50, 0, None)
    with pytest.raises(IncompleteFrameError, match="inside a frame: 55 bytes of it never came"):
        framer.feed_eof()
    held = postgres_like(impl)
    assert held.forward(b"D\0\0")[0] == b""  # a header in part is held back
    with pytest.raises(IncompleteFrameError, match="3 bytes of it received"):
        held.feed_eof()


def test_only_length_framers_at_a_frame_boundary_forward(impl: Implementation) -> None:
    framer = postgres_like(impl)
    assert framer.feed(message(b"Q", b"x")[:3]) == []
    assert not framer.can_forward  # bytes fed but not yet a frame
    assert not make_framer("line", implementation=impl).can_forward  # type: ignore[attr-defined]
    fixed = make_framer("fixed", frame_size=3, implementation=impl)
    out, frames, error = fixed.forward(b"abcdefgh")  # type: ignore[attr-defined]
    assert (bytes(out), frames, error) == (b"abcdefgh", 2, None)
    assert fixed.forward(b"i")[:2] == (b"i", 1)  # type: ignore[attr-defined]
