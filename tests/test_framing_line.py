"""Line framing: vectors for every option, run against both implementations."""

from __future__ import annotations

import pytest

from trioecho import (
    DelimiterInPayloadError,
    FrameTooLongError,
    IncompleteFrameError,
    LineFramer,
    RawFramer,
    make_framer,
)
from trioecho._backend import Implementation


def feed_all(framer: LineFramer, chunks: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames += framer.feed(chunk)
    return frames


def test_lines_keep_their_bytes(impl: Implementation) -> None:
    framer = LineFramer(strip_cr=False, implementation=impl)
    assert framer.feed(b"a\n\nb\r\nc\xff\x00\n") == [b"a", b"", b"b\r", b"c\xff\x00"]
    assert framer.max_frame == 64 * 1024


def test_strip_cr(impl: Implementation) -> None:
    framer = LineFramer(strip_cr=True, implementation=impl)
    assert framer.feed(b"a\r\nb\n\r\n\r\r\n") == [b"a", b"b", b"", b"\r"]
    assert framer.feed(b"x\r\ny\r\n") == [b"x", b"y"]


@pytest.mark.parametrize("delimiter", [b"\r\n", b"\0", b"||", b"aba", b"12345678"])
def test_custom_delimiters(impl: Implementation, delimiter: bytes) -> None:
    messages = [b"", b"one", b"t\rw\no", b"\n"]
    wire = b"".join(m + delimiter for m in messages)
    framer = LineFramer(delimiter=delimiter, implementation=impl)
    assert framer.feed(wire) == messages
    for cut in range(len(wire) + 1):
        framer = LineFramer(delimiter=delimiter, implementation=impl)
        assert feed_all(framer, [wire[:cut], wire[cut:]]) == messages, cut


def test_self_overlapping_delimiter_takes_the_leftmost_match(impl: Implementation) -> None:
    framer = LineFramer(delimiter=b"aa", implementation=impl)
    assert framer.feed(b"xaaay") == [b"x"]
    assert framer.feed(b"aa") == [b"ay"]
    framer = LineFramer(delimiter=b"aa", implementation=impl)
    assert feed_all(framer, [b"xa", b"a", b"a", b"y", b"a", b"a"]) == [b"x", b"ay"]


def test_every_split_position(impl: Implementation) -> None:
    messages = [b"", b"a", b"sticky packets", b"\xe4\xbd\xa0\xe5\xa5\xbd", b"end"]
    wire = b"".join(m + b"\r\n" for m in messages)
    for strip_cr in (False, True):
        expected = messages if strip_cr else [m + b"\r" for m in messages]
        for cut in range(len(wire) + 1):
            framer = LineFramer(strip_cr=strip_cr, implementation=impl)
            assert feed_all(framer, [wire[:cut], wire[cut:]]) == expected, cut
            framer.feed_eof()


def test_one_byte_at_a_time(impl: Implementation) -> None:
    wire = b"abc\ndefgh\n\nxyz\n" * 10
    framer = LineFramer(max_frame=5, implementation=impl)
    frames = feed_all(framer, [wire[i : i + 1] for i in range(len(wire))])
    assert frames == [b"abc", b"defgh", b"", b"xyz"] * 10


@pytest.mark.parametrize("count", [1, 300, 10_000])
def test_many_lines_in_one_feed(impl: Implementation, count: int) -> None:
    messages = [str(i).encode() for i in range(count)]
    framer = LineFramer(implementation=impl)
    assert framer.feed(b"\n".join(messages) + b"\npartial") == messages
    assert framer.buffered == len(b"partial")


def test_mixed_cr_lines_in_one_feed(impl: Implementation) -> None:
    framer = LineFramer(strip_cr=True, delimiter=b"\n", implementation=impl)
    assert framer.feed(b"a\r\nb\nc\r\n\n") == [b"a", b"b", b"c", b""]
    framer = LineFramer(strip_cr=True, delimiter=b"||", implementation=impl)
    assert framer.feed(b"a\r||b\r||") == [b"a", b"b"]


def test_limit_exactly_and_limit_plus_one(impl: Implementation) -> None:
    framer = LineFramer(max_frame=4, implementation=impl)
    assert framer.feed(b"abcd\n") == [b"abcd"]
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"abcde\n")
    assert (info.value.limit, info.value.length) == (4, 5)
    assert str(info.value) == "line longer than max_frame=4: 5 bytes seen"


def test_unfinished_line_fails_as_soon_as_it_exceeds_the_limit(impl: Implementation) -> None:
    framer = LineFramer(max_frame=4, implementation=impl)
    assert framer.feed(b"abcd") == []
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"e")
    assert info.value.length == 5
    assert framer.buffered == 0


def test_cr_and_lf_in_different_feeds_at_exactly_the_limit(impl: Implementation) -> None:
    framer = LineFramer(max_frame=4, strip_cr=True, implementation=impl)
    assert framer.feed(b"abcd\r") == []
    assert framer.feed(b"\n") == [b"abcd"]
    # The same line is over the limit when the \r turns out not to end it.
    assert framer.feed(b"abcd\r") == []
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"x")
    assert info.value.length == 6


def test_cr_counts_when_it_is_not_stripped(impl: Implementation) -> None:
    framer = LineFramer(max_frame=4, strip_cr=False, implementation=impl)
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"abcd\r")
    assert info.value.length == 5


def test_partial_multibyte_delimiter_at_the_limit(impl: Implementation) -> None:
    framer = LineFramer(max_frame=4, delimiter=b"\r\n", strip_cr=False, implementation=impl)
    assert framer.feed(b"abcd\r") == []
    assert framer.feed(b"\n") == [b"abcd"]
    assert framer.feed(b"abcd\r") == []
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"\r")  # the first \r is now part of the line
    assert info.value.length == 5


def test_zero_limit_allows_only_empty_lines(impl: Implementation) -> None:
    framer = LineFramer(max_frame=0, implementation=impl)
    assert framer.feed(b"\n\n") == [b"", b""]
    with pytest.raises(FrameTooLongError):
        framer.feed(b"x")


def test_error_mode_keeps_earlier_lines_then_stays_broken(impl: Implementation) -> None:
    framer = LineFramer(max_frame=3, implementation=impl)
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"ab\ncd\ntoo long\nef\n")
    assert info.value.frames == [b"ab", b"cd"]
    with pytest.raises(FrameTooLongError, match="after an earlier error"):
        framer.feed(b"ok\n")


def test_discard_mode_drops_a_complete_over_long_line_and_carries_on(impl: Implementation) -> None:
    framer = LineFramer(max_frame=3, on_too_long="discard", implementation=impl)
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"ab\ntoo long\ncd\nef")
    assert info.value.frames == [b"ab"]
    assert framer.feed(b"") == [b"cd"]
    assert framer.feed(b"\n") == [b"ef"]


def test_discard_mode_drops_an_unfinished_line_through_its_delimiter(impl: Implementation) -> None:
    framer = LineFramer(max_frame=3, on_too_long="discard", implementation=impl)
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"ab\nxxxx")
    assert info.value.frames == [b"ab"]
    assert info.value.length == 4
    assert framer.buffered == 0  # discarded bytes are not kept
    assert framer.feed(b"x" * 1000) == []
    assert framer.buffered == 0
    assert framer.feed(b"xx\ncd\n") == [b"cd"]
    framer.feed_eof()


def test_discard_mode_keeps_a_possible_delimiter_start(impl: Implementation) -> None:
    framer = LineFramer(max_frame=2, delimiter=b"\r\n", on_too_long="discard", implementation=impl)
    with pytest.raises(FrameTooLongError):
        framer.feed(b"xxxx\r")
    assert framer.feed(b"\nok\r\n") == [b"ok"]


def test_discard_mode_reports_each_over_long_line_once(impl: Implementation) -> None:
    framer = LineFramer(max_frame=1, on_too_long="discard", implementation=impl)
    errors = 0
    frames: list[bytes] = []
    data = b"long\na\nlonger\nb\n"
    while True:
        try:
            frames += framer.feed(data)
        except FrameTooLongError as exc:
            errors += 1
            frames += exc.frames
            data = b""
            continue
        break
    assert (errors, frames) == (2, [b"a", b"b"])


def test_eof_inside_a_line(impl: Implementation) -> None:
    framer = LineFramer(implementation=impl)
    framer.feed(b"done\nhalf")
    with pytest.raises(IncompleteFrameError) as info:
        framer.feed_eof()
    assert info.value.buffered == 4
    assert str(info.value) == "connection closed inside a line: 4 bytes of it received"


def test_eof_after_a_lone_cr(impl: Implementation) -> None:
    framer = LineFramer(strip_cr=True, implementation=impl)
    framer.feed(b"\r")
    with pytest.raises(IncompleteFrameError):
        framer.feed_eof()


def test_encode() -> None:
    framer = LineFramer()
    assert framer.encode(b"hi") == b"hi\n"
    assert framer.encode(memoryview(b"")) == b"\n"
    assert framer.encode_many([b"a", b"", bytearray(b"b")]) == b"a\n\nb\n"
    assert framer.encode_many([]) == b""
    keep = LineFramer(delimiter=b"\r\n", strip_cr=False)
    assert keep.encode_many([b"a\n", b"\r"]) == b"a\n\r\n\r\r\n"


def test_a_trailing_cr_is_stripped_by_default(impl: Implementation) -> None:
    """Telnet and Windows clients end lines with \\r\\n, as Netty's and
    tokio's line decoders assume by default."""
    framer = LineFramer(implementation=impl)
    assert framer.strip_cr
    assert framer.feed(b"hello\r\nq\r\nplain\n") == [b"hello", b"q", b"plain"]


@pytest.mark.parametrize(
    ("options", "payload"),
    [
        ({}, b"a\nb"),
        ({"delimiter": b"\r\n"}, b"a\r\nb"),
        ({"delimiter": b"aa"}, b"xa"),  # "xa" + "aa" decodes as "x"
        ({"strip_cr": True}, b"a\r"),
    ],
)
def test_encode_refuses_what_would_not_decode_as_sent(
    options: dict[str, object], payload: bytes
) -> None:
    framer = LineFramer(**options)  # type: ignore[arg-type]
    with pytest.raises(DelimiterInPayloadError):
        framer.encode(payload)
    with pytest.raises(DelimiterInPayloadError):
        framer.encode_many([b"fine", payload])


def test_max_frame_limits_what_is_accepted_not_what_is_sent() -> None:
    framer = LineFramer(max_frame=3)
    assert framer.encode(b"abcd") == b"abcd\n"
    assert framer.encode_many([b"a", b"abcd"]) == b"a\nabcd\n"
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"abcd\n")
    assert (info.value.limit, info.value.length) == (3, 4)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"delimiter": b""}, ValueError),
        ({"delimiter": b"123456789"}, ValueError),
        ({"delimiter": "\n"}, TypeError),
        ({"on_too_long": "truncate"}, ValueError),
        ({"max_frame": -1}, ValueError),
    ],
)
def test_bad_options(options: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        LineFramer(**options)  # type: ignore[arg-type]


def test_raw_framing_is_one_message_per_chunk() -> None:
    framer = RawFramer()
    assert framer.feed(b"two\nmessages") == [b"two\nmessages"]
    assert framer.feed(bytearray(b"x")) == [b"x"]
    assert framer.feed(b"") == []
    framer.feed_eof()
    assert framer.encode(b"\xe4\xbd\xa0") == b"\xe4\xbd\xa0"
    assert framer.encode_many([b"a", b"b"]) == b"ab"


def test_make_framer(impl: Implementation) -> None:
    line = make_framer("line", implementation=impl)
    assert isinstance(line, LineFramer) and line.max_frame == 64 * 1024
    length = make_framer("len", length_bytes=2, max_frame=10, implementation=impl)
    assert length.encode(b"ab") == b"\x00\x02ab"
    assert isinstance(make_framer("raw"), RawFramer)
    with pytest.raises(ValueError, match="framing must be one of"):
        make_framer("json")  # type: ignore[arg-type]
