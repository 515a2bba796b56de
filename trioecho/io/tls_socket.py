"""TLS done by OpenSSL on the socket: a ``trio.abc.Stream`` over a
non-blocking ``ssl.SSLSocket``.

``trio.SSLStream`` runs TLS through memory buffers, moving every record
between OpenSSL and the socket in Python.  :class:`TLSSocketStream` hands
the socket itself to OpenSSL (``SSLContext.wrap_socket``): the handshake and
each read and write are one call into C, which reads or writes the socket
directly.  It is the stream under
:class:`~trioecho.io.socket_tls.TLSSocketTransport`, which serves it like a
plain socket, inline on the readiness hub; ``trio.SSLStream`` stays the
twin (``TRIOECHO_READINESS=trio``, and streams with no socket).

The ``trio.SocketStream`` it is made from gives up its socket to it (the
stdlib socket is detached into the ``SSLSocket``): from then on this stream
owns the descriptor and must be closed (:meth:`TLSSocketStream.aclose`);
closing the ``trio.SocketStream`` does nothing.

What OpenSSL needs, and this module does:

* **A read that wants to write** (a TLS 1.3 key update answered while the
  socket is full): the read waits until the socket is writable, then reads
  again.  Renegotiation, which could make a write want a read, is refused
  by the contexts (:func:`~trioecho.io.tls.server_context`); a write that
  wants a read anyway breaks the stream with a message saying so.
* **A write that did not finish** (``SSLWantWriteError``) must be retried
  with the same bytes: :meth:`~TLSSocketStream.send_all` writes at most
  ``RECORD_BYTES`` at a time and retries the same slice.
* **Bytes OpenSSL holds** after a read: a read of fewer bytes than a record
  leaves the rest inside OpenSSL, and a read of a whole record may leave
  more records in the kernel, with no new readiness event for either.  A
  reader stops only when OpenSSL says it wants more from the socket, or when
  :func:`unread` says neither OpenSSL nor the kernel holds more.
* **close_notify**: :meth:`~TLSSocketStream.send_eof` sends it, then FIN;
  :meth:`~TLSSocketStream.aclose` tries it once without waiting.

Failures raise ``trio.BrokenResourceError`` with the ``ssl.SSLError`` or
``OSError`` as its cause, as ``trio.SSLStream`` does, so the callers'
reasons (:func:`~trioecho.io.tls.do_handshake`,
:func:`~trioecho.io.closing.broken_reason`) read the same on both.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import ssl
import struct
import termios
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from trioecho.framing.base import Buffer
from trioecho.io.stdlib_socket import raw_socket

__all__ = ["RECORD_BYTES", "TLSSocketStream", "send_records", "unread"]

T = TypeVar("T")

# The most a TLS record carries: a write of at most this much is retried
# whole, and each one that finishes is progress for the send rule.
RECORD_BYTES = 16 * 1024

# What a non-blocking SSLSocket raises when it must wait for the socket.
WOULD_BLOCK = (ssl.SSLWantReadError, ssl.SSLWantWriteError)

_INT = struct.Struct("i")  # what FIONREAD writes: a C int


def unread(sock: ssl.SSLSocket) -> bool:
    """True if bytes of ``sock`` wait to be read: the rest of a record in
    OpenSSL (``pending()``), or bytes in the kernel's receive queue that
    OpenSSL has not read (``FIONREAD``).  One ``ioctl`` instead of a read
    that fails with ``SSLWantReadError``, which costs twice as much or more.

    It relies on what the server's and the relay's contexts leave off:
    read-ahead (a read that returned data took one record from the kernel,
    no more) and kernel TLS (``OP_ENABLE_KTLS``: the kernel would hold
    decrypted records that ``FIONREAD`` may not count)."""
    if sock.pending():
        return True
    queued = fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(_INT.size))
    count: int = _INT.unpack(queued)[0]
    return count > 0


def send_records(sock: socket.socket, data: Buffer, sent: int = 0) -> int:
    """Write ``data`` to ``sock`` (an ``ssl.SSLSocket``) from byte ``sent``
    on, at most ``RECORD_BYTES`` per write, until all is written or the
    socket is full; returns the bytes written in all.  A write OpenSSL
    could not finish is not counted: the caller gives the same bytes again
    from there, as OpenSSL requires.
    Raises ``OSError`` if the socket broke, or if OpenSSL wants to read
    (renegotiation, which the server contexts refuse)."""
    try:
        if not sent and len(data) <= RECORD_BYTES:  # one record: one call, no slicing
            return sock.send(data) if len(data) else 0
        view = memoryview(data).cast("B")
        while sent < len(view):
            sent += sock.send(view[sent : sent + RECORD_BYTES])
    except ssl.SSLWantWriteError:
        pass
    except ssl.SSLWantReadError as exc:
        raise OSError("TLS wants to read while sending (renegotiation is not supported)") from exc
    return sent


class TLSSocketStream(trio.abc.HalfCloseableStream):
    """TLS over ``socket_stream``'s socket, done by OpenSSL on the socket
    (see the module docstring).  No handshake yet: call :meth:`do_handshake`.

    Raises ``ValueError`` if ``socket_stream`` is not a plain
    ``trio.SocketStream`` (see :func:`~trioecho.io.stdlib_socket.raw_socket`).
    """

    def __init__(
        self,
        socket_stream: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        raw = raw_socket(socket_stream)
        if raw is None:
            raise ValueError("TLSSocketStream needs a plain trio.SocketStream")
        # The raw socket is detached into the SSLSocket, which owns it now.
        self.socket: ssl.SSLSocket = context.wrap_socket(
            raw,
            server_side=server_side,
            server_hostname=server_hostname,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=False,  # an end without close_notify is a truncation
        )
        self.socket.setblocking(False)
        self._handshaken = False
        self._notify_sent = False
        self._closed = False

    # -- the TLS session ------------------------------------------------------

    async def do_handshake(self) -> None:
        """Run the handshake, waiting for the socket as OpenSSL asks.  Raises
        ``trio.BrokenResourceError`` from the ``ssl.SSLError`` (or
        ``OSError``) if it fails: OpenSSL has written its alert to the
        socket by then, if the socket took it."""
        await self._retried(self.socket.do_handshake)
        self._handshaken = True

    def getpeercert(self) -> dict[str, Any] | None:
        """The peer's verified certificate (``SSLSocket.getpeercert()``)."""
        return self.socket.getpeercert()

    def selected_alpn_protocol(self) -> str | None:
        return self.socket.selected_alpn_protocol()

    def version(self) -> str | None:
        return self.socket.version()

    # -- trio.abc.HalfCloseableStream ----------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._retried(
            self.socket.recv, RECORD_BYTES if max_bytes is None else max_bytes
        )

    async def send_all(self, data: Buffer) -> None:
        sock = self._open_socket()
        size = memoryview(data).nbytes
        sent = 0
        while True:
            try:
                sent = send_records(sock, data, sent)
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            if sent >= size:
                break
            await trio.lowlevel.wait_writable(sock)  # then the same bytes again
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._open_socket())

    async def send_close_notify(self) -> None:
        """Send TLS close_notify, waiting for the socket to take it.  Once:
        later calls (and :meth:`send_eof`) do nothing more for it.  Reading
        goes on: the peer may still send, and its close_notify ends the
        input."""
        sock = self._open_socket()
        if self._notify_sent or not self._handshaken:
            return
        self._notify_sent = True
        while True:
            try:
                sock.unwrap()  # the peer's close_notify had come: TLS is over
                return
            except ssl.SSLWantReadError:
                return  # sent; the peer's close_notify is read by receive_some
            except ssl.SSLWantWriteError:
                await trio.lowlevel.wait_writable(sock)
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc

    async def send_eof(self) -> None:
        """TLS close_notify (:meth:`send_close_notify`), then FIN."""
        await self.send_close_notify()
        try:
            socket.socket.shutdown(self._open_socket(), socket.SHUT_WR)
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def aclose(self) -> None:
        """Close: a close_notify if the socket takes it now (never a wait),
        then the descriptor.  Idempotent."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        sock = self.socket
        if self._handshaken and not self._notify_sent:
            # Not taken now, or no TLS any more: the close ends it anyway.
            with contextlib.suppress(OSError, ValueError):
                sock.unwrap()
        trio.lowlevel.notify_closing(sock)
        sock.close()
        await trio.lowlevel.checkpoint()

    async def end_after_failure(self, seconds: float) -> None:
        """After a failed handshake (whose alert OpenSSL has written): FIN,
        then read and discard the peer's bytes until its end, so that the
        close is no reset (which could destroy the alert); at most
        ``seconds``.  TLS is over: the bytes are read as they come."""
        sock = self.socket
        with trio.move_on_after(seconds):
            try:
                socket.socket.shutdown(sock, socket.SHUT_WR)
                while True:
                    try:
                        if not socket.socket.recv(sock, RECORD_BYTES):
                            return
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(sock)
            except OSError:
                return

    async def _retried(self, operation: Callable[..., T], *args: Any) -> T:
        """``operation(*args)`` on the socket, waiting and calling it again
        while OpenSSL must wait for the socket; its failure raised as
        ``trio.BrokenResourceError``."""
        sock = self._open_socket()
        while True:
            try:
                return operation(*args)
            except ssl.SSLWantReadError:
                await trio.lowlevel.wait_readable(sock)
            except ssl.SSLWantWriteError:
                await trio.lowlevel.wait_writable(sock)
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc

    def _open_socket(self) -> ssl.SSLSocket:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream was closed")
        return self.socket
