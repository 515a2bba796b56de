"""Length fields with an offset, an adjustment and the header kept; 3-byte
fields; varints; fixed-length frames; several line delimiters; the phased
framer.  Exact bytes from the formats' documentation (Netty's
``LengthFieldBasedFrameDecoder`` examples, protobuf's varint), every limit at
-1/0/+1, and the C scanner against its pure-Python twin on random
configurations, bytes and chunkings.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.helpers import chunked, framer_events, received

from trioecho import (
    DelimiterInPayloadError,
    FrameTooLongError,
    FramingError,
    IncompleteFrameError,
    LengthPrefixedFramer,
    LineFramer,
    MalformedFrameError,
)
from trioecho._backend import Implementation
from trioecho.framing import presets
from trioecho.framing.config import FramingConfig, make_framer
from trioecho.framing.fixed import FixedLengthFramer
from trioecho.framing.length import VarintFramer, encode_varint
from trioecho.framing.phased import PhasedFramer

IMPLEMENTATIONS: tuple[Implementation, ...] = ("c", "python")


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def feed_all(framer: Any, data: bytes, *, by_byte: bool = False) -> list[bytes]:
    if not by_byte:
        return list(framer.feed(data))
    frames: list[bytes] = []
    for i in range(len(data)):
        frames += framer.feed(data[i : i + 1])
    return frames


# ---- length fields: Netty's LengthFieldBasedFrameDecoder examples ----------

HELLO = b"HELLO, WORLD"  # 12 bytes


@pytest.mark.parametrize("by_byte", [False, True])
@pytest.mark.parametrize(
    ("options", "wire", "frame"),
    [
        # 2-byte length, nothing stripped
        ({"length_bytes": 2, "include_header": True}, b"\x00\x0c" + HELLO, b"\x00\x0c" + HELLO),
        # 2-byte length, header stripped
        ({"length_bytes": 2}, b"\x00\x0c" + HELLO, HELLO),
        # the length counts the whole frame: adjustment -2
        (
            {"length_bytes": 2, "length_adjustment": -2, "include_header": True},
            b"\x00\x0e" + HELLO,
            b"\x00\x0e" + HELLO,
        ),
        # 3-byte length after a 2-byte header
        (
            {"length_bytes": 3, "length_offset": 2, "include_header": True},
            b"\xca\xfe\x00\x00\x0c" + HELLO,
            b"\xca\xfe\x00\x00\x0c" + HELLO,
        ),
        # 3-byte length, then a 2-byte header the length does not count: +2
        (
            {"length_bytes": 3, "length_adjustment": 2},
            b"\x00\x00\x0c\xca\xfe" + HELLO,
            b"\xca\xfe" + HELLO,
        ),
        # type byte, 4-byte length counting itself (PostgreSQL)
        (
            {"length_offset": 1, "length_adjustment": -4, "include_header": True},
            b"Q\x00\x00\x00\x10" + HELLO,
            b"Q\x00\x00\x00\x10" + HELLO,
        ),
        # the same, header dropped: the type byte goes too
        ({"length_offset": 1, "length_adjustment": -4}, b"Q\x00\x00\x00\x10" + HELLO, HELLO),
        # little-endian 3-byte length
        ({"length_bytes": 3, "byteorder": "little"}, b"\x0c\x00\x00" + HELLO, HELLO),
    ],
)
def test_netty_examples(
    impl: Implementation, options: dict[str, Any], wire: bytes, frame: bytes, by_byte: bool
) -> None:
    framer = LengthPrefixedFramer(implementation=impl, **options)
    assert feed_all(framer, wire + wire, by_byte=by_byte) == [frame, frame]
    assert framer.buffered == 0
    framer.feed_eof()
    if options.get("include_header") or not options.get("length_offset"):
        assert framer.encode(frame) == wire  # the encoder mirrors the decoder


@pytest.mark.parametrize("frame_size", [127, 128, 129])  # the C scan packs frames up to 128
@pytest.mark.parametrize("include_header", [False, True])
def test_many_frames_around_the_packing_size(frame_size: int, include_header: bool) -> None:
    """Frames of 127, 128 and 129 bytes as returned (header included or not),
    a 64 KiB read of them and more: C and Python return the same frames."""
    options: dict[str, Any] = {
        "length_offset": 1,
        "length_adjustment": -4,
        "include_header": include_header,
    }
    body = frame_size - 5 if include_header else frame_size
    frames = [bytes([65 + i % 26]) + b"\x00" * 4 + bytes([i % 256]) * body for i in range(2000)]
    encoder = LengthPrefixedFramer(**{**options, "include_header": True})
    wire = encoder.encode_many(frames)
    expected = frames if include_header else [frame[5:] for frame in frames]
    for impl in IMPLEMENTATIONS:
        framer = LengthPrefixedFramer(implementation=impl, **options)
        got = []
        for start in range(0, len(wire), 65536):
            got += framer.feed(wire[start : start + 65536])
        assert got == [encoder.encode(f) if include_header else f for f in expected]
        assert framer.buffered == 0


@pytest.mark.parametrize("adjustment", [-4, 0, 3])
def test_max_frame_edges_with_an_adjustment(impl: Implementation, adjustment: int) -> None:
    """The adjusted length is the one limited: max_frame passes, +1 fails as
    soon as the header is complete (no body sent)."""
    limit = 10
    options: dict[str, Any] = {
        "length_offset": 1,
        "length_adjustment": adjustment,
        "max_frame": limit,
    }
    framer = LengthPrefixedFramer(implementation=impl, **options)
    field = (limit - adjustment).to_bytes(4, "big")
    assert framer.feed(b"T" + field + b"x" * limit) == [b"x" * limit]
    assert framer.feed(b"T" + (limit - 1 - adjustment).to_bytes(4, "big") + b"y" * 9) == [b"y" * 9]
    framer = LengthPrefixedFramer(implementation=impl, **options)
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"T" + (limit + 1 - adjustment).to_bytes(4, "big"))
    assert (info.value.limit, info.value.length) == (limit, limit + 1)
    assert str(info.value) == "frame header announces 11 bytes, over max_frame=10"


def test_negative_adjusted_length(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(length_adjustment=-4, include_header=True, implementation=impl)
    good = b"\x00\x00\x00\x04"  # a length counting itself and nothing else
    with pytest.raises(MalformedFrameError) as info:
        framer.feed(good + b"\x00\x00\x00\x03rest")
    assert info.value.frames == [good]
    assert info.value.value == 3
    assert str(info.value) == (
        "length field 3 with length_adjustment -4 gives a negative length -1"
    )
    with pytest.raises(MalformedFrameError, match=r"^framer stopped after an earlier error: "):
        framer.feed(b"")


def test_a_huge_8_byte_field_with_a_positive_adjustment(impl: Implementation) -> None:
    """No overflow: 2**64-1 + 5 is reported as it is."""
    framer = LengthPrefixedFramer(length_bytes=8, length_adjustment=5, implementation=impl)
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"\xff" * 8)
    assert info.value.length == (1 << 64) + 4


def test_header_split_around_the_offset(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(length_offset=3, length_bytes=2, implementation=impl)
    wire = b"abc\x00\x02hi"
    for i in range(len(wire) - 1):
        assert framer.feed(wire[i : i + 1]) == []
        assert framer.buffered == i + 1
    assert framer.feed(wire[-1:]) == [b"hi"]


def test_encoding_with_a_header(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(
        length_offset=1, length_adjustment=-4, include_header=True, implementation=impl
    )
    # the field's bytes are rewritten from the body's size
    assert framer.encode(b"Q\xff\xff\xff\xffbody") == b"Q\x00\x00\x00\x08body"
    assert framer.encode_many([b"A\0\0\0\0", b"B\0\0\0\0x"]) == b"A\0\0\0\x04B\0\0\0\x05x"
    with pytest.raises(MalformedFrameError, match="its header alone is 5 bytes"):
        framer.encode(b"Q\0\0\0")
    stripped = LengthPrefixedFramer(length_offset=1, implementation=impl)
    assert not stripped.can_encode
    with pytest.raises(MalformedFrameError, match="without include_header=True"):
        stripped.encode(b"x")


def test_encode_parts_builds_a_frame_from_its_type_byte_and_body(impl: Implementation) -> None:
    typed = LengthPrefixedFramer(
        length_offset=1, length_adjustment=-4, include_header=True, implementation=impl
    )
    frame = typed.encode_parts(b"Q", b"SELECT 1\x00")
    assert frame == b"Q\x00\x00\x00\x0dSELECT 1\x00"
    assert typed.feed(frame) == [frame]
    mqtt = VarintFramer(length_offset=1, max_length_bytes=4, include_header=True)
    assert mqtt.encode_parts(b"\xc0", b"") == b"\xc0\x00"  # PINGREQ
    assert mqtt.encode_parts(b"\x30", b"p" * 128) == b"\x30\x80\x01" + b"p" * 128
    with pytest.raises(ValueError, match="before must be length_offset=1 bytes, not 2"):
        typed.encode_parts(b"QQ", b"")


def test_encoding_limits_of_a_small_field(impl: Implementation) -> None:
    framer = LengthPrefixedFramer(length_bytes=1, length_adjustment=-1, implementation=impl)
    assert framer.encode(b"x" * 254) == b"\xff" + b"x" * 254  # field 255: the widest
    with pytest.raises(FrameTooLongError) as info:
        framer.encode(b"x" * 255)
    assert (info.value.limit, info.value.length) == (254, 255)
    positive = LengthPrefixedFramer(length_bytes=1, length_adjustment=2, implementation=impl)
    with pytest.raises(FrameTooLongError, match="does not fit"):
        positive.encode(b"x")  # field would be -1
    assert positive.encode(b"xy") == b"\x00xy"


# ---- varints -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),  # protobuf's documentation example
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"),
        (268435455, b"\xff\xff\xff\x7f"),  # MQTT's largest remaining length
        ((1 << 64) - 1, b"\xff" * 9 + b"\x01"),
    ],
)
def test_varint_encoding(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384])
def test_varint_frames_at_the_byte_boundaries(impl: Implementation, size: int) -> None:
    framer = VarintFramer(implementation=impl)
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    wire = framer.encode(payload)
    assert wire == encode_varint(size) + payload
    assert feed_all(framer, wire + wire[:-1]) == [payload]  # and all but a frame's last byte
    assert framer.buffered == len(wire) - 1


def test_varint_errors(impl: Implementation) -> None:
    framer = VarintFramer(max_length_bytes=4, implementation=impl)
    with pytest.raises(MalformedFrameError) as info:
        framer.feed(b"\x01a\xff\xff\xff\xff")  # the 5th byte is not awaited
    assert info.value.frames == [b"a"]
    assert info.value.value == (1 << 28) - 1
    assert str(info.value) == (
        "varint length field longer than max_length_bytes=4 or over 64 bits: "
        "value 268435455 in its first 4 bytes"
    )
    framer = VarintFramer(implementation=impl)
    with pytest.raises(MalformedFrameError) as info:
        framer.feed(b"\x85\x80\x00")
    assert info.value.value == 5
    assert str(info.value) == "varint length 5 is not minimally encoded: 3 bytes where 1 suffice"
    framer = VarintFramer(implementation=impl)
    with pytest.raises(MalformedFrameError, match="over 64 bits: value 9223372036854775807"):
        framer.feed(b"\xff" * 9 + b"\x02")
    framer = VarintFramer(max_frame=127, implementation=impl)
    assert framer.feed(b"\x7f" + b"z" * 127) == [b"z" * 127]
    with pytest.raises(FrameTooLongError) as too_long:
        framer.feed(b"\x80\x01")
    assert (too_long.value.limit, too_long.value.length) == (127, 128)


def test_mqtt_preset_frames_and_rewrites_packets(impl: Implementation) -> None:
    framer = FramingConfig(**{**presets.mqtt().__dict__, "implementation": impl}).new_framer()
    connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
    publish = b"\x30\x82\x01" + b"\x00\x01t" + b"p" * 127  # remaining length 130
    assert feed_all(framer, connect + publish, by_byte=True) == [connect, publish]
    assert framer.encode(publish) == publish
    assert framer.encode(b"\x30\x00" + b"p" * 200) == b"\x30\xc8\x01" + b"p" * 200
    with pytest.raises(MalformedFrameError, match="no varint length field of at most 4 bytes"):
        framer.encode(b"\x30\xff\xff\xff\xff")


# ---- fixed-length frames -----------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 7])
def test_fixed_length_frames(impl: Implementation, size: int) -> None:
    framer = FixedLengthFramer(size, implementation=impl)
    data = bytes(range(4 * size - 1))  # three frames and all but one byte of a fourth
    assert feed_all(framer, data) == [data[i : i + size] for i in range(0, 3 * size, size)]
    assert framer.buffered == size - 1
    if size > 1:
        with pytest.raises(IncompleteFrameError):
            framer.feed_eof()
    assert framer.encode(b"x" * size) == b"x" * size
    with pytest.raises(MalformedFrameError, match=f"every frame is frame_size={size} bytes"):
        framer.encode(b"x" * (size + 1))


def test_fixed_length_needs_a_size() -> None:
    with pytest.raises(ValueError, match="frame_size must be between 1"):
        FixedLengthFramer(0)
    with pytest.raises(ValueError, match="needs frame_size"):
        make_framer("fixed")


# ---- several delimiters ------------------------------------------------------


@pytest.mark.parametrize(
    ("delimiters", "data", "lines", "rest"),
    [
        ([b"\n", b"\0"], b"a\nb\0c\n", [b"a", b"b", b"c"], 0),
        # the earliest start wins: \r\n before \n
        ([b"\n", b"\r\n"], b"a\r\nb\n", [b"a", b"b"], 0),
        # same start: the earlier listed wins
        ([b"ab", b"abc"], b"xabcy", [b"x"], 2),
        ([b"abc", b"ab"], b"xabcy", [b"x"], 1),
        # a longer delimiter listed first may still complete: wait for it
        ([b"abc", b"ab"], b"xab", [], 3),
        # a delimiter starting earlier may still complete: wait
        ([b"xyz", b"y"], b"axy", [], 3),
        ([b"xyz", b"y"], b"axyq", [b"ax"], 1),
    ],
)
def test_several_delimiters(
    impl: Implementation, delimiters: list[bytes], data: bytes, lines: list[bytes], rest: int
) -> None:
    framer = LineFramer(delimiter=delimiters, strip_cr=False, implementation=impl)
    assert framer.feed(data) == lines
    assert framer.buffered == rest
    by_byte = LineFramer(delimiter=delimiters, strip_cr=False, implementation=impl)
    assert feed_all(by_byte, data, by_byte=True) == lines


def test_several_delimiters_encode_with_the_first(impl: Implementation) -> None:
    framer = LineFramer(delimiter=(b"\r\n", b"\n"), implementation=impl)
    assert framer.delimiter == b"\r\n"
    assert framer.delimiters == (b"\r\n", b"\n")
    assert framer.encode_many([b"a", b"b"]) == b"a\r\nb\r\n"
    with pytest.raises(DelimiterInPayloadError, match="would not read back as one line"):
        framer.encode(b"a\nb")
    with pytest.raises(DelimiterInPayloadError, match="ending with"):
        framer.encode(b"a\r")


def test_several_delimiters_many_lines_per_read(impl: Implementation) -> None:
    """More lines than one C call's format space describes: all come back."""
    framer = LineFramer(delimiter=[b";", b"\n"], implementation=impl)
    data = b"".join(b"%d%s" % (i, b";\n"[i % 2 : i % 2 + 1]) for i in range(20000))
    assert framer.feed(data) == [b"%d" % i for i in range(20000)]


def test_several_delimiters_limit(impl: Implementation) -> None:
    framer = LineFramer(delimiter=[b"\n", b"!"], max_frame=3, implementation=impl)
    assert framer.feed(b"abc!") == [b"abc"]
    with pytest.raises(FrameTooLongError) as info:
        framer.feed(b"abcd")
    assert (info.value.limit, info.value.length) == (3, 4)


@pytest.mark.parametrize(
    ("delimiter", "error"),
    [([], ValueError), ([b"\n"] * 9, ValueError), ([b"\n", b""], ValueError), (["x"], TypeError)],
)
def test_bad_delimiters(delimiter: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        LineFramer(delimiter=delimiter)


# ---- phases and presets ------------------------------------------------------

_STARTUP_BODY = b"\x00\x03\x00\x00user\x00me\x00\x00"  # protocol 3.0, user=me
STARTUP = (4 + len(_STARTUP_BODY)).to_bytes(4, "big") + _STARTUP_BODY
QUERY = b"Q\x00\x00\x00\x0dSELECT 1\x00"
TERMINATE = b"X\x00\x00\x00\x04"


@pytest.mark.parametrize("by_byte", [False, True])
def test_postgresql_client_side(impl: Implementation, by_byte: bool) -> None:
    config = FramingConfig(**{**presets.postgresql("client").__dict__, "implementation": impl})
    framer = config.new_framer()
    assert isinstance(framer, PhasedFramer)
    wire = STARTUP + QUERY + TERMINATE
    assert feed_all(framer, wire, by_byte=by_byte) == [STARTUP, QUERY, TERMINATE]
    framer.feed_eof()
    assert framer.encode(STARTUP) == STARTUP  # first through the startup framing
    assert framer.encode(QUERY) == QUERY


SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"  # 80877103


@pytest.mark.parametrize("by_byte", [False, True])
def test_postgresql_client_asking_for_tls_first(impl: Implementation, by_byte: bool) -> None:
    """An SSLRequest is a startup packet followed by another one."""
    config = FramingConfig(**{**presets.postgresql("client").__dict__, "implementation": impl})
    assert presets.is_encryption_request(SSL_REQUEST)
    assert presets.refuse_encryption(SSL_REQUEST) == b"N"
    assert presets.refuse_encryption(STARTUP) is None
    framer = config.new_framer()
    wire = SSL_REQUEST + STARTUP + QUERY
    assert feed_all(framer, wire, by_byte=by_byte) == [SSL_REQUEST, STARTUP, QUERY]
    assert framer.encode_many([SSL_REQUEST, STARTUP, QUERY]) == wire
    with pytest.raises(FrameTooLongError) as info:  # a typed message is not a startup packet
        config.new_framer().feed(SSL_REQUEST + QUERY)
    assert info.value.frames == [SSL_REQUEST]
    assert info.value.limit == 9996


def test_postgresql_startup_limit_and_errors_after_it(impl: Implementation) -> None:
    config = FramingConfig(**{**presets.postgresql("client").__dict__, "implementation": impl})
    with pytest.raises(FrameTooLongError) as info:
        config.new_framer().feed(b"\x00\x01\x00\x00")
    assert info.value.limit == 9996
    framer = config.new_framer()
    with pytest.raises(MalformedFrameError) as bad:
        framer.feed(STARTUP + QUERY + b"Q\x00\x00\x00\x02")
    assert bad.value.frames == [STARTUP, QUERY]


def test_postgresql_server_side(impl: Implementation) -> None:
    config = FramingConfig(**{**presets.postgresql("server").__dict__, "implementation": impl})
    ready = b"Z\x00\x00\x00\x05I"
    assert config.new_framer().feed(ready + ready) == [ready, ready]


def test_protobuf_delimited(impl: Implementation) -> None:
    config = FramingConfig(**{**presets.protobuf_delimited().__dict__, "implementation": impl})
    framer = config.new_framer()
    message = b"\x08\x96\x01"  # protobuf's example message: field 1 = 150
    assert framer.feed(b"\x03" + message) == [message]
    with pytest.raises(MalformedFrameError, match="max_length_bytes=5"):
        config.new_framer().feed(b"\xff" * 5)


def test_phased_framer_needs_a_length_framer() -> None:
    with pytest.raises(TypeError, match="length-field framer"):
        PhasedFramer(LineFramer(), LineFramer())


# ---- the C scanner and its twin agree ------------------------------------------


uint_configs = st.fixed_dictionaries(
    {
        "framing": st.just("len"),
        "length_bytes": st.sampled_from([1, 2, 3, 4, 8]),
        "byteorder": st.sampled_from(["big", "little"]),
        "max_frame": st.integers(0, 300),
        "length_offset": st.integers(0, 3),
        "length_adjustment": st.integers(-6, 6),
        "include_header": st.booleans(),
    }
)
varint_configs = st.fixed_dictionaries(
    {
        "framing": st.just("varint"),
        "max_length_bytes": st.integers(1, 10),
        "max_frame": st.sampled_from([0, 1, 127, 128, 300, 1 << 20]),
        "length_offset": st.integers(0, 3),
        "include_header": st.booleans(),
    }
)
fixed_configs = st.fixed_dictionaries(
    {"framing": st.just("fixed"), "frame_size": st.integers(1, 9)}
)
DELIMITERS = [b"\n", b"\r\n", b"\0", b"aa", b"ab", b"aba", b"b", b"\r"]
line_configs = st.fixed_dictionaries(
    {
        "framing": st.just("line"),
        "delimiter": st.lists(
            st.sampled_from(DELIMITERS) | st.binary(min_size=1, max_size=3), min_size=2, max_size=4
        ).map(tuple),
        "strip_cr": st.booleans(),
        "max_frame": st.integers(0, 12),
        "on_too_long": st.sampled_from(["error", "discard"]),
    }
)
configs = uint_configs | varint_configs | fixed_configs | line_configs
wire_bytes = st.lists(
    st.sampled_from(
        [b"\x00", b"\x01", b"\x02", b"\x7f", b"\x80", b"\xff", b"a", b"b", b"\n", b"\r"]
    )
    | st.binary(max_size=4),
    max_size=60,
).map(b"".join)


def both(config: dict[str, Any]) -> list[Any]:
    return [make_framer(implementation=impl, **config) for impl in IMPLEMENTATIONS]


@settings(max_examples=2500, deadline=None)
@given(config=configs, data=wire_bytes, cuts=st.lists(st.integers(0, 60), max_size=8))
def test_framers_agree_on_any_bytes(config: dict[str, Any], data: bytes, cuts: list[int]) -> None:
    c, py = both(config)
    chunks = chunked(data, cuts)
    c_events = framer_events(c, chunks)
    assert c_events == framer_events(py, chunks)
    # Chunking changes when frames and errors arrive, never what they are.
    by_byte = framer_events(
        make_framer(implementation="c", **config), chunked(data, list(range(60)))
    )
    assert received(by_byte) == received(c_events)
    assert [e[0] for e in by_byte if e[0] != "frames"] == [
        e[0] for e in c_events if e[0] != "frames"
    ]


def _frame_for(config: dict[str, Any], body: bytes, prefix: bytes) -> bytes:
    """What feed returns for ``body`` sent with ``prefix`` before the field."""
    if not config["include_header"]:
        return body
    encoder = make_framer(**{**config, "include_header": False, "length_offset": 0})
    field = encoder.encode(body)[: len(encoder.encode(body)) - len(body)]
    return prefix[: config["length_offset"]] + field + body


@settings(max_examples=800, deadline=None)
@given(
    config=uint_configs | varint_configs,
    bodies=st.lists(st.binary(max_size=40), max_size=20),
    cuts=st.lists(st.integers(0, 1000), max_size=10),
)
def test_length_messages_round_trip(
    config: dict[str, Any], bodies: list[bytes], cuts: list[int]
) -> None:
    limit = config["max_frame"]
    encoder = make_framer(**config)
    try:
        frames = [_frame_for(config, body, b"TYP") for body in bodies]
        wire = encoder.encode_many(frames)
    except FramingError:
        return  # a body the field cannot carry (a small field, a large adjustment)
    c, py = both(config)
    chunks = chunked(wire, cuts)
    c_events = framer_events(c, chunks)
    assert c_events == framer_events(py, chunks)
    accepted = list(itertools.takewhile(lambda body: len(body) <= limit, bodies))
    expected = frames[: len(accepted)]
    assert received(c_events) == expected
    assert c_events[-1][0] == ("eof" if accepted == bodies else "too long")
    resent = encoder.encode_many(expected)
    assert resent == wire[: len(resent)]


@settings(max_examples=800, deadline=None)
@given(
    config=line_configs,
    lines=st.lists(st.binary(max_size=8), max_size=20),
    cuts=st.lists(st.integers(0, 300), max_size=10),
)
def test_lines_with_several_delimiters_round_trip_or_are_refused(
    config: dict[str, Any], lines: list[bytes], cuts: list[int]
) -> None:
    encoder = make_framer(**config)
    sendable = []
    for line in lines:
        try:
            encoder.encode(line)
        except DelimiterInPayloadError:
            continue
        sendable.append(line)
    wire = encoder.encode_many(sendable)
    c, py = both(config)
    c_events = framer_events(c, chunked(wire, cuts))
    assert c_events == framer_events(py, chunked(wire, cuts))
    limit = config["max_frame"]
    if config["on_too_long"] == "discard":
        accepted = [line for line in sendable if len(line) <= limit]
    else:
        accepted = list(itertools.takewhile(lambda line: len(line) <= limit, sendable))
    assert received(c_events) == accepted
