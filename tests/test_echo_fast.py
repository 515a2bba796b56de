"""The C echo path puts the same bytes on the wire as the generic path.

EchoHandler (replies built in C by MessageStream.echo) against
GenericEchoHandler (a Python bytes object per message), on random framing
configurations, random input (with ``q`` frames, over-long frames, partial
frames) and random chunking: the client must receive identical bytes and the
handler must end the same way.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from test_framing_differential import chunked, length_configs, line_bytes, line_configs

from trioecho import FramingConfig, LengthPrefixedFramer, LineFramer
from trioecho.echo import EchoHandler, GenericEchoHandler
from trioecho.stream import MessageStream


async def session(
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


def both_ways(config: dict[str, Any], framing: str, chunks: list[bytes]) -> None:
    framing_config = FramingConfig(framing, implementation="c", **config)
    fast = trio.run(session, EchoHandler, framing_config, chunks)
    generic = trio.run(session, GenericEchoHandler, framing_config, chunks)
    assert fast == generic


@settings(max_examples=300, deadline=None)
@given(
    config=line_configs,
    data=line_bytes,
    cuts=st.lists(st.integers(0, 60), max_size=6),
)
def test_line_echo_matches_the_generic_path(
    config: dict[str, Any], data: bytes, cuts: list[int]
) -> None:
    config = {**config, "max_frame": config["max_frame"] + 16}  # room for the greeting
    both_ways(config, "line", chunked(data.replace(b"x", b"q"), cuts))


@settings(max_examples=300, deadline=None)
@given(
    config=length_configs,
    messages=st.lists(st.sampled_from([b"", b"q", b"qq", b"abc", b"x" * 40]), max_size=30),
    junk=st.binary(max_size=12),
    cuts=st.lists(st.integers(0, 600), max_size=6),
)
def test_length_echo_matches_the_generic_path(
    config: dict[str, Any], messages: list[bytes], junk: bytes, cuts: list[int]
) -> None:
    config = {**config, "max_frame": config["max_frame"] + 16}
    encoder = LengthPrefixedFramer(
        length_bytes=config["length_bytes"], byteorder=config["byteorder"]
    )
    wire = encoder.encode_many(messages) + junk
    both_ways(config, "len", chunked(wire, cuts))


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


def test_feed_echo_over_more_than_one_output_buffer() -> None:
    """Replies larger than the C output buffer come back whole, in order."""
    messages = [bytes([65 + i % 26]) * 1000 for i in range(400)]  # ~400 KB of replies
    for framer, reference in (
        (LengthPrefixedFramer(implementation="c"), LengthPrefixedFramer(implementation="c")),
        (LineFramer(implementation="c"), LineFramer(implementation="c")),
    ):
        wire = reference.encode_many(messages)
        replies, count, outcome = framer.feed_echo(bytearray(wire), b"!", b"q")
        assert (count, outcome) == (400, "ok")
        assert replies == reference.encode_many([m + b"!" for m in messages])
        assert framer.buffered == 0
