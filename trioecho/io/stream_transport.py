"""The transport over any ``trio.abc.Stream`` (TLS, in-memory streams, a
socket when the hub is not used): the stream's own methods.

A wrapped stream's ``send_all`` says nothing until it has sent everything,
so the send rule (:mod:`~trioecho.io.send_deadline`) sees progress chunk by
chunk: a send of more than ``SEND_CHUNK`` bytes (16 KiB, one TLS record)
goes in chunks of that size, and each chunk the stream accepts moves the
deadline.  A peer must so take a chunk within ``send_timeout`` seconds: on
these streams, a reader slower than ``SEND_CHUNK / send_timeout`` bytes a
second counts as stalled (546 bytes a second with a 30 s timeout).  A send
of one chunk or less is one call, as before.
"""

from __future__ import annotations

import math

import trio

from trioecho.errors import ConnectionClosedError
from trioecho.framing.base import Buffer
from trioecho.io.closing import broken_reason
from trioecho.io.send_deadline import SendDeadline
from trioecho.io.transport import Transport

__all__ = ["SEND_CHUNK", "StreamTransport"]

SEND_CHUNK = 16 * 1024


class StreamTransport(Transport):
    """A transport over any ``trio.abc.Stream``, through its own methods."""

    __slots__ = ()

    async def receive_some(self, max_bytes: int, deadline: float = math.inf) -> bytes | None:
        self._claim_receiving()
        try:
            if self._stopping:
                return None
            self._unyielded = 0
            with trio.CancelScope(deadline=deadline) as scope:
                self._receive_scope = scope
                try:
                    data = bytes(await self.stream.receive_some(max_bytes))
                    self.bytes_received += len(data)
                    return data
                except trio.BrokenResourceError as exc:
                    raise ConnectionClosedError(
                        f"connection broken while receiving: {broken_reason(exc)}"
                    ) from exc
                finally:
                    self._receive_scope = None
            if self._stopping:
                return None
            raise self._idle_timeout_error()
        finally:
            self._receiving = False

    async def send_all(self, data: Buffer) -> None:
        self._check_can_send()
        timeout = self.send_timeout
        held = self.on_held_send
        limit: SendDeadline | None = None  # a chunked send's, once it starts
        now = trio.current_time()
        with trio.CancelScope(deadline=math.inf if timeout is None else now + timeout) as scope:
            self._sending = True
            try:
                size = memoryview(data).nbytes
                if held is not None:  # the stream cannot say whether it will wait
                    held(size)
                if size <= SEND_CHUNK:
                    await self.stream.send_all(data)
                    self.bytes_sent += size
                else:
                    if timeout is not None:
                        limit = SendDeadline(timeout, self.min_send_rate, now)
                    await self._send_chunks(data, size, scope, limit)
            except trio.BrokenResourceError as exc:
                raise ConnectionClosedError(
                    f"connection broken while sending: {broken_reason(exc)}"
                ) from exc
            finally:
                self._sending = False
                if held is not None:
                    held(0)
            return
        assert scope.cancelled_caught and timeout is not None  # only the deadline cancels it
        if limit is None:  # one call, nothing taken: a stall
            limit = SendDeadline(timeout, None, now)
        error = limit.error(trio.current_time())
        # Shielded: a task woken by this close (the relay's other pump) may
        # cancel ours, and the error that says why must not be lost.
        # Forceful: a TLS close_notify to a peer that does not read would wait.
        self._closed = True
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)
        raise error

    async def _send_chunks(
        self, data: Buffer, size: int, scope: trio.CancelScope, limit: SendDeadline | None
    ) -> None:
        """Send ``data`` (``size`` bytes) ``SEND_CHUNK`` bytes at a time; each
        chunk the stream accepts is progress: it moves ``scope``'s deadline
        by ``limit`` (None: no limit) and lowers the bytes the send holds."""
        view = memoryview(data).cast("B")
        held = self.on_held_send
        for start in range(0, size, SEND_CHUNK):
            chunk = view[start : start + SEND_CHUNK]
            await self.stream.send_all(chunk)
            self.bytes_sent += len(chunk)
            if limit is not None:
                scope.deadline = limit.took(len(chunk), trio.current_time())
            if held is not None:
                held(size - start - len(chunk))

    def stop_receiving(self) -> None:
        self._stopping = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()
