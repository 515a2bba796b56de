"""Transports: bytes in and out of one connection, with deadlines.

The layer under :class:`~trioecho.stream.message_stream.MessageStream` and the echo
session, and the only code of trioecho that touches Trio's socket
internals.  One interface, two implementations:

* :class:`SocketTransport` over a plain ``trio.SocketStream``: it calls the
  non-blocking socket directly and waits only when the kernel has nothing
  for it (the stream's own methods add a few scheduler round trips per
  call), by default through the run's :mod:`readiness hub <trioecho.io.hub>`
  (the socket registered once in a shared edge-triggered epoll set), else
  with Trio's ``wait_readable``/``wait_writable`` (``readiness="trio"``,
  ``TRIOECHO_READINESS=trio``: one ``epoll_ctl`` re-arm per wait);
* :class:`StreamTransport` over any other ``trio.abc.Stream``: TLS,
  in-memory, anything with ``receive_some``/``send_all``.

:func:`open_transport` picks one.  The interface:

``await receive_some(max_bytes, deadline)``
    the next bytes: ``b""`` at the end of the stream, ``None`` once
    :meth:`stop_receiving` was called (also when it interrupts a wait);
    raises :class:`IdleTimeoutError` if nothing arrived by ``deadline``
    (``trio.current_time()`` units, ``math.inf`` for none) and
    :class:`ConnectionClosedError` if the peer or the network broke it.
``await send_all(data)``
    send every byte; when the peer reads too slowly, by the send rule of
    :mod:`~trioecho.io.send_deadline` (no progress for ``send_timeout``
    seconds, or below ``min_send_rate`` bytes a second once past
    ``send_timeout``), close the transport and raise
    :class:`SlowReaderError`, whose message says which rule cut it.  A send
    the connection takes at once costs nothing more.
``stop_receiving()``
    wake a waiting receive, and end every later one with ``None``.

Both raise ``trio.ClosedResourceError`` after ``aclose()`` and
``trio.BusyResourceError`` when two tasks receive (or send) at once.

Deadlines: a wait for input normally runs in a cancel scope carrying the
deadline.  Entering and leaving a scope costs more than the rest of a
request/reply exchange, so a server with many connections can take the
deadlines over (:meth:`hand_over_deadlines`): a socket wait then needs no
scope, and one task calls :meth:`expire_if_idle` on every transport now and
then, which wakes a wait past its deadline.

Checkpoints: a call that has to wait yields to Trio; one that completes at
once yields at least every ``CHECKPOINT_EVERY`` calls
(:meth:`checkpoint_due`), so cancellation and other tasks get their
turn without a scheduler round trip per message.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import Callable
from typing import Any

import trio

from trioecho.errors import ConnectionClosedError, IdleTimeoutError
from trioecho.framing.base import Buffer
from trioecho.io.closing import broken_reason, drain_until_eof
from trioecho.io.pump import PumpedConnection
from trioecho.io.send_deadline import SendDeadline
from trioecho.io.tls import peer_certificate
from trioecho.io.tls_socket import TLSSocketStream

__all__ = ["CHECKPOINT_EVERY", "InlineStep", "PumpedAnswer", "Transport"]

CHECKPOINT_EVERY = 16
# close_gracefully(): input still discarded once every reply is delivered.
# How a direct-socket transport waits: "hub" (trioecho.io.hub, the default) or
# "trio" (Trio's own wait_readable/wait_writable).
# serve_inline()'s step: the bytes of one read (b"" at the end of the input)
# in, the bytes to send out, or None to hand the connection back to its task.
InlineStep = Callable[[bytes], "Buffer | None"]
# What answers a reading connection the C pump serves: called with the
# bytes it read, or the messages it split (SocketTransport.serve_pumped).
PumpedAnswer = Callable[[Any], "Buffer | None"]


class Transport:
    """What both transports share; see the module docstring for the interface.

    ``idle_timeout`` is only named in the idle error's message (the caller
    passes each receive its deadline).  ``send_timeout`` and
    ``min_send_rate`` are the send rule (:mod:`~trioecho.io.send_deadline`),
    read at each send that has to wait (and by :meth:`close_gracefully`):
    the send is cut (:class:`~trioecho.errors.SlowReaderError`) when the
    peer has taken none of it for ``send_timeout`` seconds (the deadline
    restarts whenever it takes more) or when, once past ``send_timeout``,
    it has averaged under ``min_send_rate`` bytes a second since the send
    began to wait.  None: no limit, no floor (without ``send_timeout``,
    neither applies).
    """

    __slots__ = (
        "_closed",
        "_receive_scope",
        "_receiving",
        "_sending",
        "_stopping",
        "_unyielded",
        "bytes_received",
        "bytes_sent",
        "idle_timeout",
        "min_send_rate",
        "on_held_send",
        "send_timeout",
        "stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        idle_timeout: float | None = None,
        send_timeout: float | None = None,
        min_send_rate: float | None = None,
    ) -> None:
        self.stream = stream
        self.idle_timeout = idle_timeout  # only for the error's message
        # The send rule (trioecho.io.send_deadline): a send that waits is cut
        # after send_timeout seconds without progress, or below min_send_rate.
        self.send_timeout = send_timeout
        self.min_send_rate = min_send_rate
        self._closed = False
        self._stopping = False
        self._receiving = False
        self._receive_scope: trio.CancelScope | None = None  # a receive's, while it waits
        self._sending = False
        self._unyielded = 0  # calls since the last checkpoint
        self.bytes_received = 0  # read from the connection (after TLS: the plain bytes)
        self.bytes_sent = 0  # taken by the connection
        # Told the bytes a send holds while it waits for the peer to read
        # (then 0): the message stream's memory account listens.
        self.on_held_send: Callable[[int], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sending(self) -> bool:
        """Whether a send is waiting for the peer to read now."""
        return self._sending

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop_receiving` was called."""
        return self._stopping

    @property
    def can_serve_inline(self) -> bool:
        """Whether :meth:`serve_inline` is available (a socket on the hub)."""
        return False

    @property
    def can_pump(self) -> bool:
        """Whether :meth:`serve_pumped` is available (a socket on a hub
        with the C pump)."""
        return False

    @property
    def pump_sink(self) -> int:
        """The descriptor the C pump may forward to now, or -1 (a transport
        that is not a plain socket on a hub cannot be sent to from C)."""
        return -1

    async def serve_pumped(
        self,
        conn: PumpedConnection,
        on_account: Callable[[int], bool],
        deadline: float = math.inf,
        sink: int = -1,
        answer: PumpedAnswer | None = None,
    ) -> int | None:
        """Have the hub's C pump serve this connection until it needs its
        task; see :class:`SocketTransport`."""
        raise NotImplementedError(f"{type(self).__name__} cannot be served by the pump")

    async def receive_some(self, max_bytes: int, deadline: float = math.inf) -> bytes | None:
        raise NotImplementedError

    async def send_all(self, data: Buffer) -> None:
        raise NotImplementedError

    def send_nowait(self, data: Buffer) -> Buffer | None:
        """Send what the connection takes now, without waiting; return the
        rest (None when all of it went).  A transport that cannot tell
        without waiting (a ``trio.abc.Stream``: TLS, in memory) takes
        nothing: the caller sends the rest with :meth:`send_all`.  Raises
        :class:`ConnectionClosedError` if the connection broke,
        ``trio.ClosedResourceError`` after close, ``trio.BusyResourceError``
        while another send waits."""
        self._check_can_send()
        return data

    def _check_can_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the message stream was closed")
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")

    async def serve_inline(
        self, step: InlineStep, max_bytes: int, deadline: float = math.inf
    ) -> Buffer | None:
        """Have the readiness hub serve this connection with ``step`` until
        it needs its task; see :class:`SocketTransport`."""
        raise NotImplementedError(f"{type(self).__name__} cannot serve a session inline")

    def addresses(self) -> tuple[Any, Any] | None:
        """``(local, peer)``: the socket addresses under the stream (through
        TLS), or None for a stream with no socket (in memory) or one the
        network already broke."""
        stream: object = self.stream
        while not isinstance(stream, trio.SocketStream | TLSSocketStream):
            stream = getattr(stream, "transport_stream", None)
            if stream is None:
                return None
        try:
            return stream.socket.getsockname(), stream.socket.getpeername()
        except OSError:
            return None

    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's verified TLS certificate (see
        :func:`~trioecho.io.tls.peer_certificate`), or None."""
        return peer_certificate(self.stream)

    def stop_receiving(self) -> None:
        raise NotImplementedError

    def hand_over_deadlines(self) -> None:
        """Let the caller enforce receive deadlines with :meth:`expire_if_idle`."""

    @property
    def deadlines_handed_over(self) -> bool:
        return False

    def expire_if_idle(self, now: float) -> bool:
        """If a receive is waiting past its deadline, wake it (it raises
        :class:`IdleTimeoutError`) and return True."""
        return False

    def renew_deadline(self, deadline: float) -> None:
        """Move the deadline of a waiting :meth:`serve_inline` (deadlines
        handed over); no effect otherwise."""

    def checkpoint_due(self) -> bool:
        """Count a call that did not wait; True every ``CHECKPOINT_EVERY``
        calls, when the caller must ``await trio.lowlevel.checkpoint()`` (a
        test, so that a call that completes at once creates no coroutine)."""
        self._unyielded += 1
        if self._unyielded >= CHECKPOINT_EVERY:
            self._unyielded = 0
            return True
        return False

    async def send_eof(self) -> None:
        """Close the sending side only (the stream must support half-close)."""
        stream = self.stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            raise TypeError(f"{type(stream).__name__} cannot close only its sending side")
        try:
            await stream.send_eof()
        except trio.BrokenResourceError as exc:
            raise ConnectionClosedError(
                f"connection broken while closing: {broken_reason(exc)}"
            ) from exc

    async def aclose(self) -> None:
        """Close the stream.  Idempotent; closes even when cancelled."""
        self._closed = True
        await self.stream.aclose()

    async def close_gracefully(self, linger: float, limit: float | None = None) -> None:
        """Close without destroying replies in flight, then close for good.

        Closing a TCP socket whose input was not all read makes the kernel
        send a reset, which discards the replies still queued for the peer.
        So: TLS ``close_notify`` first (over TLS, at most ``linger``
        seconds), then FIN, then read and discard the peer's input until its
        own end of stream -- for as long as the peer takes the replies
        queued for it by this transport's send rule
        (:mod:`~trioecho.io.send_deadline`: more of them at least every
        ``send_timeout`` seconds, and above ``min_send_rate``; without a
        ``send_timeout``, at least every ``linger`` seconds), and ``linger``
        seconds more for its end once all are delivered; ``limit`` seconds
        in all (None: no bound but those).  A peer that keeps reading gets
        every reply; the end is a FIN, not a reset.  Input is not what buys
        time: once every reply is delivered, a peer that keeps sending is
        cut off after ``DELIVERED_DRAIN_BYTES`` more.
        """
        stream = self.stream
        tcp = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        self._closed = True
        try:
            with trio.move_on_after(math.inf if limit is None else limit):
                if isinstance(stream, trio.SSLStream | TLSSocketStream):
                    with (
                        trio.move_on_after(linger),
                        contextlib.suppress(trio.BrokenResourceError, ssl.SSLError),
                    ):
                        if isinstance(stream, TLSSocketStream):
                            await stream.send_close_notify()
                        else:
                            await stream.unwrap()
                if isinstance(tcp, trio.abc.HalfCloseableStream):
                    await tcp.send_eof()
                await drain_until_eof(tcp, linger, self.send_timeout, self.min_send_rate)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
            if tcp is not stream:
                await trio.aclose_forcefully(tcp)

    # -- shared helpers ----------------------------------------------------

    def _claim_receiving(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the message stream was closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving from this stream")
        self._receiving = True

    def _idle_timeout_error(self) -> IdleTimeoutError:
        return IdleTimeoutError(f"no complete message within idle_timeout={self.idle_timeout}s")

    def _send_deadline(self) -> SendDeadline | None:
        """The send rule's deadline for a send that starts to wait now, or
        None without a ``send_timeout`` (no limit)."""
        timeout = self.send_timeout
        if timeout is None:
            return None
        return SendDeadline(timeout, self.min_send_rate, trio.current_time())
