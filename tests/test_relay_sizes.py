"""The relay passes frames around its read size exactly, in-process on
loopback: a :func:`relay_server` in front of an echo :class:`MessageServer`,
both with the framing ``--framing len --max-frame N`` gives.  Messages far
over a read, on real relay processes, are ``test_relay_streaming.py``'s."""

from __future__ import annotations

import logging
import struct

import pytest
import trio
import trio.testing
from support.helpers import running
from support.relaypeers import read_frame

from trioecho import FramingConfig, MessageServer
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler
from trioecho.services.relay import RELAY_READ_SIZE, relay_server

READ = RELAY_READ_SIZE


async def test_frames_around_the_relays_read_size_and_its_limit_pass_exactly(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """Frames of 0, 1 and the relay's read size -5 ... +1 bytes, sent back to
    back so that headers straddle the relay's reads, each come back exactly
    (the echo's reply, 3 bytes longer: the last two are --max-frame -1 and
    --max-frame on the way back).  One past --max-frame closes that client,
    one line in the log."""
    caplog.set_level(logging.INFO)  # the relay command's level
    limit = READ + 1 + len(REPLY_SUFFIX)
    sizes = [0, 1, READ - 5, READ - 4, READ - 3, READ - 1, READ, READ + 1]
    upstream = MessageServer(EchoHandler, port=0, framing=FramingConfig("len", max_frame=4 * READ))
    framing = FramingConfig("len", max_frame=limit)

    async def talk(port: int, send: bytes, replies: list[bytes]) -> None:
        """Send ``send``, expect ``replies``, then the end (after our own)."""
        with trio.fail_after(30):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                buffer = bytearray()
                assert await read_frame(stream, buffer) == GREETING
                await stream.send_all(send)
                for reply in replies:
                    assert await read_frame(stream, buffer) == reply
                if replies:
                    await stream.send_eof()
                with pytest.raises(EOFError):
                    await read_frame(stream, buffer)

    async with running(upstream) as upstream_port:
        relay = relay_server(
            ("127.0.0.1", upstream_port),
            client_framing=framing,
            server_framing=framing,
            host="127.0.0.1",
            port=0,
        )
        async with running(relay) as port:
            payloads = [bytes([size % 256]) * size for size in sizes]
            wire = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
            await talk(port, wire, [p + REPLY_SUFFIX for p in payloads])
            await talk(port, struct.pack(">I", limit + 1) + b"x" * 10, [])
    messages = [record.getMessage() for record in caplog.records]
    closing = "closing: the client side: FrameTooLongError"
    assert len([m for m in messages if closing in m and f"max_frame={limit}" in m]) == 1
    assert not [r for r in caplog.records if r.exc_info]
