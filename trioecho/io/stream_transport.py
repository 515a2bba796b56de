"""The transport over any ``trio.abc.Stream`` (TLS, in-memory streams, a
socket when the hub is not used): the stream's own methods.
"""

from __future__ import annotations

import math

import trio

from trioecho.errors import ConnectionClosedError
from trioecho.framing.base import Buffer
from trioecho.io.closing import broken_reason
from trioecho.io.transport import Transport

__all__ = ["StreamTransport"]


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
        timeout = math.inf if self.send_timeout is None else self.send_timeout
        held = self.on_held_send
        with trio.move_on_after(timeout) as scope:
            self._sending = True
            try:
                if held is not None:  # the stream cannot say whether it will wait
                    held(len(data))
                await self.stream.send_all(data)
                self.bytes_sent += memoryview(data).nbytes
            except trio.BrokenResourceError as exc:
                raise ConnectionClosedError(
                    f"connection broken while sending: {broken_reason(exc)}"
                ) from exc
            finally:
                self._sending = False
                if held is not None:
                    held(0)
            return
        assert scope.cancelled_caught
        # Shielded: a task woken by this close (the relay's other pump) may
        # cancel ours, and the error that says why must not be lost.
        # Forceful: a TLS close_notify to a peer that does not read would wait.
        self._closed = True
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)
        raise self._slow_reader_error()

    def stop_receiving(self) -> None:
        self._stopping = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()
