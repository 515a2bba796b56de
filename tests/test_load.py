"""Many concurrent connections pipelining many messages in random segmentations."""

from __future__ import annotations

import random

import pytest
import trio

from trioecho import FramingConfig
from trioecho.framing.base import FramingName
from trioecho.server.server import MessageServer
from trioecho.services.echo import GREETING, REPLY_SUFFIX, EchoHandler
from trioecho.stream.message_stream import MessageStream

CONNECTIONS = 100
MESSAGES_PER_CONNECTION = 300


async def pipelining_client(port: int, framing: FramingConfig, seed: int) -> int:
    """Send every message in random-sized chunks while reading replies; check each."""
    rng = random.Random(seed)
    alphabet = bytes(range(256)).replace(b"\n", b"")
    messages = [
        bytes(rng.choices(alphabet, k=rng.choice([0, 1, 5, 16, 100, 1000])))
        for _ in range(MESSAGES_PER_CONNECTION)
    ]
    messages = [m for m in messages if m != b"q"]
    framer = framing.new_framer()
    wire = framer.encode_many(messages) + framer.encode(b"q")
    transport = await trio.open_tcp_stream("127.0.0.1", port)
    stream = MessageStream(transport, framing.new_framer())

    async def send_in_random_chunks() -> None:
        pos = 0
        while pos < len(wire):
            size = rng.choice([1, 2, 3, 7, 64, 1500, 9000])
            await transport.send_all(wire[pos : pos + size])
            pos += size
            if rng.random() < 0.1:
                await trio.sleep(0)

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send_in_random_chunks)
        assert await stream.receive_message() == GREETING
        for index, message in enumerate(messages):
            reply = await stream.receive_message()
            assert reply == message + REPLY_SUFFIX, f"seed {seed}: reply {index} wrong"
        with pytest.raises(trio.EndOfChannel):  # q: closed without a reply
            await stream.receive_message()
    return len(messages)


@pytest.mark.parametrize("framing", ["line", "len"])
async def test_100_connections_pipelining_in_random_segmentations(framing: FramingName) -> None:
    # Any byte, \r included: lines keep a \r before the delimiter.
    config = FramingConfig(framing, strip_cr=False) if framing == "line" else FramingConfig(framing)
    server = MessageServer(EchoHandler, host="127.0.0.1", port=0, framing=config)
    checked: list[int] = []

    async def client(seed: int) -> None:
        checked.append(await pipelining_client(port, config, seed))

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as clients:
                for seed in range(CONNECTIONS):
                    clients.start_soon(client, seed)
            server.shutdown()
    assert len(checked) == CONNECTIONS
    assert sum(checked) >= CONNECTIONS * (MESSAGES_PER_CONNECTION - 5)
    assert server.connections_served == CONNECTIONS
