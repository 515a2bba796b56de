"""One way of a relayed pair: a pump passes one side's frames on to the other.

:func:`pump_one_way` reads ``source`` until it ends, then ends ``sink``'s
sending half.  Without a hook that needs the frames as objects the bytes go
on as they arrive (:meth:`~trioecho.MessageStream.forward_to`: every header
checked by the framer, a body streamed through in pieces, on the readiness
hub no task wake-up per message); otherwise frame by frame.  A peer failure
on either stream raises :class:`~trioecho.errors.RelayError` naming its side
(``"client"`` or ``"upstream"``); a frame the framing refuses may first be
explained to the client (``refusal``, :func:`tell_the_client`).  How the two
ways end together is :mod:`trioecho.services.relay_pair`'s.
"""

from __future__ import annotations

import contextlib
import logging

import trio

from trioecho.errors import (
    FramingError,
    ProtocolRefusedError,
    RelayError,
    SinkError,
    TrioEchoError,
)
from trioecho.framing.base import Framer, can_forward, drops_too_long
from trioecho.framing.phased import PhasedFramer
from trioecho.framing.presets import FinalAnswer
from trioecho.services.relay_config import Answer, Direction, FrameHook, Refusal
from trioecho.stream.message_stream import MessageStream

__all__ = ["PEER_FAILURES", "RELAY_READ_SIZE", "SIDES", "pump_one_way", "tell_the_client"]

logger = logging.getLogger("trioecho.relay")

# Bytes a pump reads at a time from either side: what it holds while the
# other side is slow to take them (a frame longer than this streams through).
RELAY_READ_SIZE = 16 * 1024
# Seconds the client is given to take what the relay tells it before closing.
TELL_WAIT = 5.0

# Each way's (source side, sink side).
SIDES: dict[Direction, tuple[str, str]] = {
    "up": ("client", "upstream"),
    "down": ("upstream", "client"),
}
# What a stream raises when its peer or the network fails it (not a bug).
PEER_FAILURES = (TrioEchoError, trio.BrokenResourceError)


def _forwards(source: MessageStream, on_frame: FrameHook | None, answer: Answer | None) -> bool:
    """Whether a pump can pass ``source``'s bytes on as they arrive
    (:meth:`MessageStream.forward_to`) rather than frame by frame: no hook
    needs the frames as objects (``answer`` is only for a phased framing's
    first phase: PostgreSQL's startup packets), and the framer can forward
    now (a length-field framing, past any first phase, at a boundary)."""
    if on_frame is not None or source.has_pending:
        return False
    framer = source.framer
    return (answer is None or isinstance(framer, PhasedFramer)) and can_forward(framer)


async def pump_one_way(
    source: MessageStream,
    sink: MessageStream,
    encoder: Framer,
    direction: Direction,
    on_frame: FrameHook | None,
    answer: Answer | None = None,
    refusal: Refusal | None = None,
) -> None:
    """``source``'s input to ``sink`` until ``source`` ends; then end
    ``sink``'s sending side.  Bytes go on as they arrive, checked by the
    framer (:func:`_forwards`), or else frame by frame: ``encoder`` frames
    them in ``source``'s framing (``sink``'s own framer is for what ``sink``
    sends), and a frame ``answer`` has a reply for is answered to ``source``
    instead of passed on.  A peer failure on either stream raises
    :class:`RelayError` naming its side."""
    source_side, sink_side = SIDES[direction]
    while True:
        if _forwards(source, on_frame, answer):
            try:
                await source.forward_to(sink)
            except SinkError as exc:
                raise RelayError(sink_side, exc.error) from exc.error
            except FramingError as exc:
                told = await _refuse(source, sink, direction, exc, refusal)
                raise RelayError(source_side, exc, refusal=told) from exc
            except PEER_FAILURES as exc:
                raise RelayError(source_side, exc) from exc
            break
        error: FramingError | None = None
        try:
            frames = await source.receive_messages()
        except trio.EndOfChannel:
            break
        except FramingError as exc:  # the frames before the bad one still go on
            frames, error = exc.frames, exc
        except PEER_FAILURES as exc:
            raise RelayError(source_side, exc) from exc
        if on_frame is not None:
            for frame in frames:
                on_frame(direction, frame)
        try:
            if answer is not None:
                frames = await _answer_some(source, frames, answer)
        except PEER_FAILURES as exc:
            raise RelayError(source_side, exc) from exc
        try:
            if frames:
                await sink.send_framed(encoder.encode_many(frames), len(frames))
        except PEER_FAILURES as exc:
            raise RelayError(sink_side, exc) from exc
        if error is not None:
            if drops_too_long(source.framer):
                logger.warning("relay: dropped an over-long line (%s): %s", direction, error)
                continue
            told = await _refuse(source, sink, direction, error, refusal)
            raise RelayError(source_side, error, refusal=told) from error
    try:
        await sink.send_eof()
    except TypeError:  # a transport without half-close (TLS): close it all
        await sink.aclose()
    except PEER_FAILURES as exc:
        raise RelayError(sink_side, exc) from exc


async def _refuse(
    source: MessageStream,
    sink: MessageStream,
    direction: Direction,
    error: FramingError,
    refusal: Refusal | None,
) -> bytes | None:
    """Tell the client why a frame is refused, when ``refusal`` says what.

    The down pump is the client's only sender, and at a frame boundary now
    (forwarding stops before the bad header): it sends the refusal itself.
    For a client's bad frame (``"up"``) the refusal is returned, to be sent
    once both pumps have stopped, and only if the down way is between
    frames and not sending at this moment (else it would cut into a frame:
    the close alone tells the client); None otherwise."""
    if refusal is None:
        return None
    if direction == "down":
        await tell_the_client(sink, refusal(direction, error))
        return None
    if source.sending or not sink.at_frame_boundary:
        return None
    return refusal(direction, error)


async def tell_the_client(client: MessageStream, refusal: bytes | None) -> None:
    """Send the client why its relay closes, if it can still hear it: not
    if it is gone, nor while the other pump's send to it waits for it to
    read (then the close alone tells it), nor past ``TELL_WAIT`` seconds."""
    if refusal:
        with (
            trio.move_on_after(TELL_WAIT),
            contextlib.suppress(*PEER_FAILURES, trio.ClosedResourceError, trio.BusyResourceError),
        ):
            await client.send_framed(refusal)


async def _answer_some(source: MessageStream, frames: list[bytes], answer: Answer) -> list[bytes]:
    """Send ``answer``'s replies back to ``source``; return the frames to pass
    on.  A :class:`FinalAnswer` is sent, then the client refused
    (:class:`~trioecho.errors.ProtocolRefusedError` with its reason)."""
    passed = []
    for frame in frames:
        reply = answer(frame)
        if reply is None:
            passed.append(frame)
            continue
        await source.send_framed(reply)
        if isinstance(reply, FinalAnswer):
            raise ProtocolRefusedError(reply.reason)  # the pump names the side
    return passed
