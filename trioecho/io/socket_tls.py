"""The direct-socket transport over TLS: a
:class:`~trioecho.io.tls_socket.TLSSocketStream`'s ``ssl.SSLSocket``, read
and written by OpenSSL in C, served like a plain socket -- on the readiness
hub, inline, with the same waits, deadlines, send rule and close.

What differs from plain TCP, each below:

* a read that must wait raises ``ssl.SSLWantReadError`` (or, for a key
  update answered while the socket is full, ``SSLWantWriteError``: then
  the next input retries it), not ``BlockingIOError``;
* a short read does not mean the socket is empty (OpenSSL reads one record
  at a time), and an edge-triggered hub announces no bytes already in the
  kernel: a short read counts as the end of the input at hand only if
  neither OpenSSL nor the kernel holds unread bytes
  (:func:`~trioecho.io.tls_socket.unread`); else the inline step reads on,
  and the task path reads again before it waits;
* a write goes at most a record (16 KiB) at a time, and one OpenSSL could
  not finish (``SSLWantWriteError``) is left as the unsent rest, starting
  with that same slice, as OpenSSL requires of the retry;
* the C pump reads and writes plain sockets only: it never serves this
  transport and never forwards to it.

``trio.SSLStream`` under :class:`~trioecho.io.stream_transport.StreamTransport`
is its twin (``TRIOECHO_READINESS=trio``); the tests run on both.
"""

from __future__ import annotations

from trioecho.framing.base import Buffer
from trioecho.io.socket_transport import SocketTransport
from trioecho.io.tls_socket import WOULD_BLOCK, send_records, unread

__all__ = ["TLSSocketTransport"]


class TLSSocketTransport(SocketTransport):
    """:class:`~trioecho.io.socket_transport.SocketTransport` over an
    ``ssl.SSLSocket`` (see the module docstring)."""

    __slots__ = ()

    _WOULD_BLOCK = WOULD_BLOCK
    _SHORT_READ_EMPTIES = False

    @property
    def can_pump(self) -> bool:
        return False

    @property
    def pump_sink(self) -> int:
        return -1

    def _nothing_unread(self) -> bool:
        return not unread(self._socket)  # type: ignore[arg-type]

    def _send_now(self, data: Buffer) -> Buffer | None:
        """Send what OpenSSL and the socket take now, a record's worth at a
        time (:func:`~trioecho.io.tls_socket.send_records`); the rest
        (starting with bytes OpenSSL must be given again), or None if all
        went."""
        sent = send_records(self._socket, data)
        self.bytes_sent += sent
        if sent >= len(data):
            return None
        return memoryview(data).cast("B")[sent:]
