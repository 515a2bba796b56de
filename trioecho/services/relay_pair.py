"""A relayed pair: both ways between a client and its upstream, and how they end.

:func:`relay` runs the two pumps (:func:`~trioecho.services.relay_pump.pump_one_way`,
``"up"``: client to upstream, ``"down"``) and the pair's timers in one
nursery.  :class:`_PairRun` is what they share: each way and each timer
records its outcome there and, when that ends the pair, cancels the nursery.
The outcome is one of: both sides ended (or, without half-close, one whose
end closes both), returned as the sides in order; or the first failure,
raised as a :class:`~trioecho.errors.RelayError`, after the client is told
why when it can still hear it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import trio

from trioecho.arguments import check_timeout
from trioecho.errors import IdleTimeoutError, RelayError, SlowReaderError
from trioecho.framing.base import Framer
from trioecho.framing.config import FramingConfig, framing_config
from trioecho.reasons import CloseReason
from trioecho.services.relay_config import Answer, Direction, FrameHook, Refusal, check_bool
from trioecho.services.relay_pump import SIDES, pump_one_way, tell_the_client
from trioecho.stream.message_stream import MessageStream

__all__ = ["ended_by_its_peer", "relay"]


async def relay(
    client: MessageStream,
    server: MessageStream,
    *,
    client_framing: FramingConfig | str,
    server_framing: FramingConfig | str,
    on_frame: FrameHook | None = None,
    answer: Answer | None = None,
    idle_timeout: float | None = None,
    fin_timeout: float | None = None,
    half_close: bool = True,
    refusal: Refusal | None = None,
) -> tuple[str, ...]:
    """Relay frames between ``client`` and ``server``, which read with
    ``client_framing`` and ``server_framing``, until both have ended, or
    either breaks: then :class:`RelayError` (which side, and its error) is
    raised, the first failure alone; the caller closes the streams.
    Returns the sides (``"client"``, ``"upstream"``) that ended their
    streams, in order.  ``answer(frame)``, for each frame from the client
    (with a phased framing, PostgreSQL's: each frame of its first phase, the
    startup packets), returns bytes to send back to the client instead of
    passing the frame on, or None.

    Without ``on_frame`` (and, with ``answer``, after a phased framing's
    first phase) the bytes go on as they arrive
    (:meth:`~trioecho.MessageStream.forward_to`): every header is checked,
    a frame's body streams through however long it is, and on the readiness
    hub no task wakes per message.  ``on_frame`` needs the frames as objects:
    then every frame is read whole (up to ``max_frame``) and re-encoded.

    Endings: a side's end is passed on (the other side's sending half is
    closed) and the other way goes on; with ``half_close=False`` (a protocol
    without half-close: PostgreSQL's) a side's own end closes both at once
    instead, and only the client's input stopped by the server
    (:meth:`~trioecho.MessageStream.stop_receiving`, on shutdown) is passed
    on so that the upstream can finish.

    ``refusal(direction, error)`` returns bytes to send the client before
    both close (:func:`~trioecho.framing.presets.postgres_refusal`: an
    ErrorResponse), for a frame either side sent that the framing refuses
    (``direction``: the way it came), and for the timeouts below that end a
    pair the client can still hear: ``idle_timeout`` (``"up"``, an
    :class:`~trioecho.errors.IdleTimeoutError`) and a send to the upstream
    that stalled (``"down"``, a :class:`~trioecho.errors.SlowReaderError`).
    The client is told only when the way down is between frames and not
    sending (else the close alone tells it), within 5 s.

    Limits (None: none): with no bytes moving either way (read or sent)
    for ``idle_timeout`` seconds, or once one side has ended, none for
    ``fin_timeout`` seconds, both close (:class:`RelayError` with an
    :class:`~trioecho.errors.IdleTimeoutError`; looked at every quarter of
    the timeout).  A send waiting for a side to read follows that stream's
    own send rule (``send_timeout``, ``min_send_rate``)."""
    up = framing_config(client_framing, "client_framing").new_framer()
    down = framing_config(server_framing, "server_framing").new_framer()
    idle = check_timeout(idle_timeout, "idle_timeout")
    fin = check_timeout(fin_timeout, "fin_timeout")
    half_close = check_bool(half_close, "half_close")
    async with trio.open_nursery() as nursery:
        run = _PairRun(nursery, client, server, on_frame, refusal, half_close, fin)
        if idle is not None:
            nursery.start_soon(run.end_if_idle, idle)
        nursery.start_soon(run.pump, client, server, up, "up", answer)
        nursery.start_soon(run.pump, server, client, down, "down", None)
    return await run.outcome()


@dataclasses.dataclass(eq=False)
class _PairRun:
    """One run of :func:`relay`: its two ways and its timers, in ``nursery``,
    and what each recorded.  ``failures``: a side failed or a timer expired
    (the first is the pair's); ``closed``: a way whose stream was closed
    under it; ``ended``: the sides whose streams ended, in order.  Whatever
    ends the pair cancels the nursery, so the other way and the timers stop
    with it."""

    nursery: trio.Nursery
    client: MessageStream
    server: MessageStream
    on_frame: FrameHook | None
    refusal: Refusal | None
    half_close: bool
    fin_timeout: float | None
    failures: list[RelayError] = dataclasses.field(default_factory=list)
    closed: list[RelayError] = dataclasses.field(default_factory=list)
    ended: list[str] = dataclasses.field(default_factory=list)

    def moved(self) -> int:
        """The bytes moved so far, both ways, read and sent."""
        client, server = self.client, self.server
        client.sync_counters()  # what the C pump counted so far
        server.sync_counters()
        return client.bytes_received + server.bytes_received + client.bytes_sent + server.bytes_sent

    def notice(self, direction: Direction, error: Exception) -> bytes | None:
        """``refusal``'s words for the client, if it can hear them now."""
        refusal = self.refusal
        if refusal is None or self.client.sending or not self.server.at_frame_boundary:
            return None
        return refusal(direction, error)

    def fail(self, failure: RelayError) -> None:
        """End the pair with ``failure`` (the first one is raised)."""
        self.failures.append(failure)
        self.nursery.cancel_scope.cancel()

    async def pump(
        self,
        source: MessageStream,
        sink: MessageStream,
        encoder: Framer,
        direction: Direction,
        answer: Answer | None,
    ) -> None:
        """One way, then its ending: a failure ends the pair; a side's end
        ends it once both sides have ended (or, without half-close, at once
        if the peer ended it), and else starts the ``fin_timeout`` timer."""
        try:
            await pump_one_way(
                source, sink, encoder, direction, self.on_frame, answer, self.refusal
            )
        except RelayError as exc:
            if exc.side == "upstream" and isinstance(exc.error, SlowReaderError):
                exc.refusal = self.notice("down", exc.error)
            self.fail(exc)  # the other way ends with it
            return
        except trio.ClosedResourceError as exc:
            # Closed under it: by the other way's failure (a send that
            # timed out closes its stream), or by the server.
            self.closed.append(RelayError(SIDES[direction][0], exc))
            self.nursery.cancel_scope.cancel()
            return
        side = SIDES[direction][0]
        ended = self.ended
        ended.append(side)
        if len(ended) == 2 or (not self.half_close and ended_by_its_peer(source)):
            self.nursery.cancel_scope.cancel()  # done: the timers go too
        elif self.fin_timeout is not None:
            self.nursery.start_soon(self.end_unfinished, side, self.fin_timeout)

    async def end_unfinished(self, ended_side: str, timeout: float) -> None:
        """Once ``ended_side`` has ended: fail the other side when no bytes
        moved for ``timeout`` seconds."""
        await _until_still(self.moved, timeout)
        other = "upstream" if ended_side == "client" else "client"
        error = IdleTimeoutError(
            f"not finished: no bytes for {timeout:g} s after the {ended_side} side ended"
        )
        self.fail(RelayError(other, error))

    async def end_if_idle(self, timeout: float) -> None:
        """Fail the client side when no bytes moved either way for ``timeout`` seconds."""
        await _until_still(self.moved, timeout)
        error = IdleTimeoutError(f"no bytes either way for {timeout:g} s")
        self.fail(RelayError("client", error, refusal=self.notice("up", error)))

    async def outcome(self) -> tuple[str, ...]:
        """Once the nursery is done: the sides that ended, in order, or the
        first failure raised, after the client is told why if it can hear."""
        failures, closed = self.failures, self.closed
        if failures and failures[0].refusal is not None:
            # The down way stopped between frames: the client hears why now.
            await tell_the_client(self.client, failures[0].refusal)
        if failures or closed:
            raise (failures or closed)[0]
        return tuple(self.ended)


def ended_by_its_peer(stream: MessageStream) -> bool:
    """Whether ``stream``'s input ended because its peer ended it (not
    stopped by the server: :meth:`~trioecho.MessageStream.stop_receiving`)."""
    return stream.close_reason == CloseReason.PEER_CLOSED


async def _until_still(moved: Callable[[], int], timeout: float) -> None:
    """Return once ``moved()`` has not changed for ``timeout`` seconds,
    looked at every quarter of it (no cost per message): between
    ``timeout`` and 1.25 times it after the last change."""
    seen, since = moved(), trio.current_time()
    while True:
        await trio.sleep(timeout / 4)
        now, count = trio.current_time(), moved()
        if count != seen:
            seen, since = count, now
        elif now - since >= timeout:
            return
