"""Shutdown without loss: under pipelined load, SIGTERM loses no reply.

Every message the server had fully received gets its reply before its
connection closes, and the process exits 0 within the grace period.  Proved
by counting: the server logs how many messages it received and sent; the
clients count the replies they got, each checked in order.
"""

from __future__ import annotations

import re
import signal
import time

import trio
from serverproc import server_process

from trioecho import FramingConfig
from trioecho.echo import GREETING, REPLY_SUFFIX
from trioecho.stream import MessageStream

CLIENTS = 20
GRACE = 5.0
WINDOW = 1000  # messages a client may have in flight


async def pipelining_client(port: int, index: int, replies: list[int]) -> None:
    """Pipeline numbered messages (at most WINDOW in flight) until the server
    closes; check every reply."""
    config = FramingConfig("len")
    transport = await trio.open_tcp_stream("127.0.0.1", port)
    stream = MessageStream(transport, config.new_framer())
    done = trio.Event()
    count = 0

    async def send() -> None:
        number = 0
        try:
            while not done.is_set():
                if number - count >= WINDOW:
                    await trio.sleep(0.001)
                    continue
                batch = [f"{index}:{number + i}".encode() for i in range(50)]
                await stream.send_messages(batch)
                number += len(batch)
                await trio.sleep(0)
        except Exception:  # the server closed; the receiver tells the story
            pass

    async with stream, trio.open_nursery() as nursery:
        assert await stream.receive_message() == GREETING
        nursery.start_soon(send)
        try:
            async for reply in stream:
                assert reply == f"{index}:{count}".encode() + REPLY_SUFFIX, (index, count, reply)
                count += 1
        finally:
            done.set()
        replies[index] = count


async def test_sigterm_under_pipelined_load_loses_no_reply() -> None:
    with server_process("--framing", "len", "--grace", str(GRACE)) as server:
        replies = [0] * CLIENTS
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for index in range(CLIENTS):
                    nursery.start_soon(pipelining_client, server.port, index, replies)
                await trio.sleep(1.0)  # under load
                signalled = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(server.wait)
            stopped_after = time.monotonic() - signalled
        line = server.wait_for_log("stopped after serving")
    assert code == 0
    assert stopped_after < GRACE
    match = re.search(r"serving (\d+) connections?: (\d+) messages received, (\d+) sent", line)
    assert match, line
    connections, received, sent = map(int, match.groups())
    assert connections == CLIENTS
    assert min(replies) > 0, "some client got no reply at all"
    assert sum(replies) == received, "a message the server received got no reply"
    assert sent == received + CLIENTS  # every reply, plus one greeting each
