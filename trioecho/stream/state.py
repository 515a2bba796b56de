"""What a :class:`~trioecho.stream.message_stream.MessageStream` holds, and
how it is built from its arguments: its transport, its framer (or the
configuration that builds it when first used), its read size, its share of
the memory budget, the messages read but not yet delivered, the run that
serves it (a session or a forwarding) and its counters.

:class:`StreamState` is the base of ``MessageStream`` (which documents the
arguments); the receive side (:mod:`~trioecho.stream.receiving`) and the
runs (:mod:`~trioecho.stream.session_run`, :mod:`~trioecho.stream.forwarding`)
work on this state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from trioecho.errors import FrameTooLongError
from trioecho.framing.base import Framer
from trioecho.framing.config import FramingConfig, framing_config, new_framer
from trioecho.io.budget import Account
from trioecho.io.readiness import Readiness
from trioecho.io.transport import Transport
from trioecho.logtext import format_address
from trioecho.reasons import CloseReason
from trioecho.stream.arguments import DEFAULT_RECEIVE_SIZE, check_receive_size, transport_for
from trioecho.stream.receiving import NO_MESSAGES

if TYPE_CHECKING:
    from trioecho.stream.forwarding import _Forwarding
    from trioecho.stream.session_run import _SessionRun

__all__ = ["StreamState"]


class StreamState(trio.abc.AsyncResource):
    """The state of a message stream; see ``MessageStream`` for the arguments."""

    __slots__ = (
        "_account",
        "_at_eof",
        "_close_reason",
        "_error",
        "_forwarding",
        "_framer",
        "_framing",
        "_next",
        "_pending",
        "_receive_size",
        "_receiving",
        "_resume",
        "_run",
        "lines_dropped",
        "messages_received",
        "messages_sent",
        "transport",
        "transport_stream",
    )

    def __init__(
        self,
        transport_stream: trio.abc.Stream | Transport,
        framer: Framer | FramingConfig | str | None = None,
        *,
        receive_size: int = DEFAULT_RECEIVE_SIZE,
        idle_timeout: float | None = None,
        send_timeout: float | None = None,
        min_send_rate: float | None = None,
        readiness: Readiness | None = None,
        account: Account | None = None,
    ) -> None:
        if not isinstance(transport_stream, trio.abc.Stream | Transport):
            raise TypeError(
                "MessageStream needs a trio.abc.Stream (or a Transport), "
                f"not {type(transport_stream).__name__}"
            )
        self._receive_size = check_receive_size(receive_size)
        self.transport = transport_for(
            transport_stream,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
            min_send_rate=min_send_rate,
            readiness=readiness,
        )
        self.transport_stream = self.transport.stream
        self._account = account
        if account is not None:
            self.transport.on_held_send = account.set_sending
        # A FramingConfig builds its framer when first needed (a session
        # never needs one: an idle connection holds less).
        self._framing: FramingConfig | None = None
        self._framer: Framer | None = None
        if isinstance(framer, FramingConfig | str):
            self._framing = framing_config(framer, "framer")
        else:
            self._framer = new_framer(framer)
        # Messages read but not yet delivered: _pending[_next:].  A list and an
        # index rather than a deque: an idle connection keeps it small.
        self._pending: list[bytes] = NO_MESSAGES
        self._next = 0
        self._error: FrameTooLongError | None = None  # raise once _pending is empty
        self._resume = False  # discard mode: feed(b"") again after the error
        self._at_eof = False
        self._receiving = False
        self._run: _SessionRun | None = None  # run_session(), while it runs
        self._forwarding: _Forwarding | None = None  # forward_to(), while it runs
        self.messages_received = 0  # complete messages read from the transport
        self.messages_sent = 0  # messages whose bytes the transport accepted
        self.lines_dropped = 0  # over-long lines dropped in discard mode
        self._close_reason: CloseReason | str | None = None

    def __repr__(self) -> str:
        config = self._framing
        framing = config.framing if config is not None else type(self._framer).__name__
        addresses = self.transport.addresses()
        peer = f" with {format_address(addresses[1])}" if addresses is not None else ""
        state = "closed" if self.transport.closed else "open"
        return (
            f"<MessageStream {state}{peer}, framing={framing!r}, "
            f"{self.messages_received} received, {self.messages_sent} sent>"
        )

    def _release_account(self) -> None:
        """Give the memory account back (the stream closed)."""
        if self._account is not None:
            self._account.close()
