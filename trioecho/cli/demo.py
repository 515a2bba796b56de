"""``trioecho demo``: sticky packets, shown side by side.

Starts the echo service on a free loopback port once per framing and sends
two messages, ``hello`` and ``world``, back to back in one write: what TCP
may do to any two quick sends.  In ``raw`` framing (the seed's wire format)
the server cannot tell them apart and answers one merged message; ``line``
and ``len`` framing keep them apart.
"""

from __future__ import annotations

import sys
import unicodedata
from typing import TextIO

import trio

from trioecho.framing.base import FramingName
from trioecho.framing.config import FramingConfig
from trioecho.server.server import MessageServer
from trioecho.services.echo import EchoHandler
from trioecho.stream.connect import open_message_stream

__all__ = ["MESSAGES", "exchange", "run_demo"]

MESSAGES = (b"hello", b"world")
_QUIET_AFTER = 0.5  # seconds without a reply that end the collection


async def exchange(framing: FramingName) -> list[bytes]:
    """Send MESSAGES back to back to a fresh server; return the replies."""
    config = FramingConfig(framing)
    server = MessageServer(EchoHandler, host="127.0.0.1", port=0, framing=config)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve)
        port = listeners[0].socket.getsockname()[1]
        async with await open_message_stream("127.0.0.1", port, framing=config) as stream:
            await stream.receive_message()  # the greeting
            await stream.transport_stream.send_all(stream.framer.encode_many(MESSAGES))
            replies = []
            while True:
                with trio.move_on_after(_QUIET_AFTER):
                    replies.append(await stream.receive_message())
                    continue
                break
        server.shutdown()
    return replies


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _column(text: str, width: int) -> str:
    return text + " " * max(1, width - _width(text))


def _show(messages: list[bytes] | tuple[bytes, ...]) -> str:
    return ", ".join(repr(m.decode("utf-8", "backslashreplace")) for m in messages)


async def run_demo(out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    print(f"Two messages, {_show(MESSAGES)}, written back to back on one connection.", file=out)
    print("TCP delivers a byte stream; only framing tells where a message ends.\n", file=out)
    print(f"{'framing':<9}{'replies':<32}", file=out)
    for framing in ("raw", "line", "len"):
        replies = await exchange(framing)
        if len(replies) == len(MESSAGES):
            verdict = "kept apart by the framing"
        else:
            verdict = "merged into one message: sticky packets"
        print(f"{framing:<9}{_column(_show(replies), 32)}<- {verdict}", file=out)
    return 0
