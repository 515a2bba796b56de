"""A frame relay: a trioecho server that passes every frame on to another server.

Each client connection gets its own connection upstream; two tasks pump
frames, one each way, each reading whole frames with one side's
:class:`~trioecho.MessageStream` and sending them, re-encoded, with the
other's.  With a preset whose frames keep their header
(``trioecho.framing.presets``), re-encoding gives back the bytes received, so the
relay is transparent; what it adds is that every message is checked against
the framing (and its ``max_frame``) on the way::

    server = relay_server(
        ("db.internal", 5432),
        client_framing=presets.postgresql("client"),
        server_framing=presets.postgresql("server"),
        answer=presets.refuse_encryption,  # TLS would hide the frames
        port=6432,
    )
    await server.serve()

When one side ends its stream the relay closes the other side's sending
half and keeps relaying the other way until that ends too; when one side
breaks (a reset, a framing error: the frames before the bad one are passed
on first) both connections close.  An over-long line in discard mode is
logged and dropped.  ``on_frame(direction,
frame)`` (``"up"``: client to server, ``"down"``) sees each frame before it
is sent on, for logging and tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import trio

from trioecho.errors import FramingError
from trioecho.framing.base import Framer, drops_too_long
from trioecho.framing.config import FramingConfig, framing_config
from trioecho.logtext import format_address
from trioecho.server.server import MessageServer
from trioecho.stream.connect import open_message_stream
from trioecho.stream.message_stream import MessageStream

__all__ = ["Answer", "FrameHook", "relay", "relay_server"]

logger = logging.getLogger("trioecho.relay")

Direction = Literal["up", "down"]
FrameHook = Callable[[Direction, bytes], None]
Answer = Callable[[bytes], bytes | None]
DEFAULT_CONNECT_TIMEOUT = 10.0


async def _pump(
    source: MessageStream,
    sink: MessageStream,
    encoder: Framer,
    direction: Direction,
    on_frame: FrameHook | None,
    answer: Answer | None = None,
) -> None:
    """Frames from ``source`` to ``sink`` until ``source`` ends; then end
    ``sink``'s sending side.  ``encoder`` frames them in ``source``'s framing
    (``sink``'s own framer is for what ``sink`` sends).  A frame ``answer``
    has a reply for is answered to ``source`` instead of passed on."""
    while True:
        error: FramingError | None = None
        try:
            frames = await source.receive_messages()
        except trio.EndOfChannel:
            break
        except FramingError as exc:  # the frames before the bad one still go on
            frames, error = exc.frames, exc
        if on_frame is not None:
            for frame in frames:
                on_frame(direction, frame)
        if answer is not None:
            frames = await _answer_some(source, frames, answer)
        if frames:
            await sink.send_framed(encoder.encode_many(frames), len(frames))
        if error is not None:
            framer = source.framer
            if drops_too_long(framer):
                logger.warning("relay: dropped an over-long line (%s): %s", direction, error)
                continue
            raise error
    try:
        await sink.send_eof()
    except TypeError:  # a transport without half-close (TLS): close it all
        await sink.aclose()


async def _answer_some(source: MessageStream, frames: list[bytes], answer: Answer) -> list[bytes]:
    """Send ``answer``'s replies back to ``source``; return the frames to pass on."""
    passed = []
    for frame in frames:
        reply = answer(frame)
        if reply is None:
            passed.append(frame)
        else:
            await source.send_framed(reply)
    return passed


async def relay(
    client: MessageStream,
    server: MessageStream,
    *,
    client_framing: FramingConfig | str,
    server_framing: FramingConfig | str,
    on_frame: FrameHook | None = None,
    answer: Answer | None = None,
) -> None:
    """Relay frames between ``client`` and ``server``, which read with
    ``client_framing`` and ``server_framing``, until both have ended, or
    either breaks: the error propagates, the caller closes the streams.
    ``answer(frame)``, for each frame from the client, returns bytes to send
    back to the client instead of passing the frame on, or None."""
    async with trio.open_nursery() as nursery:
        up = framing_config(client_framing, "client_framing").new_framer()
        down = framing_config(server_framing, "server_framing").new_framer()
        nursery.start_soon(_pump, client, server, up, "up", on_frame, answer)
        nursery.start_soon(_pump, server, client, down, "down", on_frame)


async def _relay_connection(
    upstream: tuple[str, int],
    client_framing: FramingConfig,
    server_framing: FramingConfig,
    on_frame: FrameHook | None,
    answer: Answer | None,
    connect_timeout: float,
    client: MessageStream,
) -> None:
    host, port = upstream
    server = None
    with trio.move_on_after(connect_timeout):
        try:
            server = await open_message_stream(host, port, framing=server_framing)
        except OSError as exc:
            logger.warning("relay: cannot connect to %s: %s", format_address(upstream), exc)
            return
    if server is None:
        logger.warning(
            "relay: cannot connect to %s: no answer in %s s",
            format_address(upstream),
            connect_timeout,
        )
        return
    async with server:
        await relay(
            client,
            server,
            client_framing=client_framing,
            server_framing=server_framing,
            on_frame=on_frame,
            answer=answer,
        )


def relay_server(
    upstream: tuple[str, int],
    *,
    client_framing: FramingConfig | str,
    server_framing: FramingConfig | str,
    on_frame: FrameHook | None = None,
    answer: Answer | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    idle_timeout: float | None = None,
    **options: Any,
) -> MessageServer:
    """A :class:`MessageServer` relaying each connection to ``upstream``
    (host, port): frames from clients are read with ``client_framing``, frames
    from the upstream server with ``server_framing``; ``on_frame`` and
    ``answer`` as :func:`relay` takes them.  A client whose upstream
    connection fails, or takes over ``connect_timeout`` seconds, is closed.
    ``idle_timeout`` defaults to none (a database client may wait long for
    a reply); the other ``options`` are :class:`MessageServer`'s."""
    client_framing = framing_config(client_framing, "client_framing")
    server_framing = framing_config(server_framing, "server_framing")
    handler = partial(
        _relay_connection,
        upstream,
        client_framing,
        server_framing,
        on_frame,
        answer,
        connect_timeout,
    )
    return MessageServer(handler, framing=client_framing, idle_timeout=idle_timeout, **options)
