"""Sending on the direct-socket transport: a send the socket takes at once
costs one call; the rest waits for the peer to read, by the send rule
(:mod:`~trioecho.io.send_deadline`), with the kernel's user timeout
suspended meanwhile and the C pump sending to the socket no more.
"""

from __future__ import annotations

import math

import trio

from trioecho.framing.base import Buffer
from trioecho.io.keepalive import restore_user_timeout, suspend_user_timeout
from trioecho.io.socket_base import SocketTransportBase

__all__ = ["SocketSending"]


class SocketSending(SocketTransportBase):
    """The direct-socket transport's sends (see the module docstring)."""

    __slots__ = ()

    async def send_all(self, data: Buffer) -> None:
        self._check_can_send()
        # The common case, all sent at once, without a wait: no await before
        # it is done, so no other task can send meanwhile.
        try:
            rest = self._send_now(data)
        except OSError as exc:
            raise self._socket_error(exc, "sending") from exc
        if rest is not None:
            await self._send_rest(rest)
        elif self.checkpoint_due():
            await trio.lowlevel.checkpoint()

    def send_nowait(self, data: Buffer) -> Buffer | None:
        self._check_can_send()
        try:
            return self._send_now(data)
        except OSError as exc:
            raise self._socket_error(exc, "sending") from exc

    async def _send_rest(self, rest: Buffer) -> None:
        """Send ``rest``, waiting for the peer to read as needed, by the send
        rule (:mod:`~trioecho.io.send_deadline`): each time the kernel takes
        more, the deadline moves; past it, close and raise SlowReaderError."""
        self._sending = True
        if self._watch is not None:
            self._watch.release_as_sink()  # the pump sends to it no more meanwhile
        limit = self._send_deadline()
        unsent: Buffer | None = rest
        held = self.on_held_send
        # The send rule, not the kernel's user timeout, decides while we wait.
        user_timeout = suspend_user_timeout(self._socket)
        try:
            with trio.CancelScope(deadline=math.inf if limit is None else limit.deadline) as scope:
                while unsent is not None:
                    if held is not None:
                        held(len(unsent))
                    self._unyielded = 0
                    await self._wait_writable()
                    waiting = len(unsent)
                    try:
                        unsent = self._send_now(unsent)
                    except OSError as exc:
                        raise self._socket_error(exc, "sending") from exc
                    taken = waiting - (0 if unsent is None else len(unsent))
                    if limit is not None and taken:
                        scope.deadline = limit.took(taken, trio.current_time())
                return
        finally:
            self._sending = False
            restore_user_timeout(self._socket, user_timeout)
            if held is not None:
                held(0)
        assert limit is not None  # only its deadline cancels the scope
        error = limit.error(trio.current_time())
        # Shielded: a task woken by this close (the relay's other pump) may
        # cancel ours, and the error that says why must not be lost.
        with trio.CancelScope(shield=True):
            await self.aclose()
        raise error

    async def _wait_writable(self) -> None:
        watch = self._watch
        try:
            if watch is None:
                await trio.lowlevel.wait_writable(self._socket)
            else:
                await watch.wait_writable()
        except trio.ClosedResourceError:
            if self._closed:
                raise
            if watch is not None and watch.closed:
                self._watch_lost()
            # Otherwise a receive on another task was woken by notify_closing
            # (stop_receiving, idle timeout): the socket is open; try again.
