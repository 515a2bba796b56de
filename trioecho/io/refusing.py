"""Closing a listening socket without resetting a connection in its queue.

Closing a listening TCP socket resets every connection the kernel has
already accepted for it and that nobody has taken with ``accept()`` yet: the
client connected, maybe sent its first message, and gets a reset.  A server
that stops for good (a drain, a shutdown) therefore does three things:

1. :func:`refuse_new_connections` attaches a classic BPF filter to the
   listening socket that drops every packet that opens a connection (SYN
   without ACK).  Nothing new joins the queue from then on; handshakes
   already under way still complete (their final ACK passes), and every
   other packet is untouched.  A dropped client sends its SYN again after
   one second (Linux's first retransmission); by then the socket is closed
   and the kernel refuses it (``ECONNREFUSED``), which a load balancer
   retries on another host;
2. it keeps accepting until :func:`queued_connections` is 0 (the kernel's
   own count, ``tcpi_unacked`` of a listening socket's ``TCP_INFO``);
3. it closes the socket: no connection was queued, none is reset.

On a socket shared by several processes (``--workers``) the filter is on
the one socket they share, so every worker's accepting stops taking new
connections at once, and each empties the queue before it closes.

Linux only; on a socket that is not TCP (a unix socket) nothing is done:
:func:`refuse_new_connections` returns False and :func:`queued_connections`
answers 0.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence

import trio

__all__ = ["empty_accept_queues", "queued_connections", "refuse_new_connections"]

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
# A listening socket's TCP_INFO: tcpi_unacked (offset 24) is its accept
# queue's length (linux/net/ipv4/tcp.c, tcp_get_info).
_TCP_INFO_SIZE = 104
_UNACKED_OFFSET = 24
# Polling the queue while it empties (the accept loop runs meanwhile).
QUEUE_POLL = 0.01


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


# The filter runs with the packet at its TCP header: byte 13 holds the flags.
_DROP_CONNECTION_OPENINGS = (
    (0x30, 0, 0, 13),  # ldb [13]            A = TCP flags
    (0x45, 1, 0, 0x10),  # jset #ACK, keep     an ACK (a handshake completing, data)
    (0x45, 1, 0, 0x02),  # jset #SYN, drop     a SYN without ACK: a new connection
    (0x06, 0, 0, 0xFFFFFFFF),  # keep: ret #-1 (the whole packet)
    (0x06, 0, 0, 0),  # drop: ret #0
)


# A listening socket: Python's or Trio's.
_Socket = socket.socket | trio.socket.SocketType


def _is_tcp(sock: _Socket) -> bool:
    return sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM


def refuse_new_connections(sock: _Socket) -> bool:
    """From now on, drop every SYN that opens a connection to the listening
    ``sock`` (see the module docstring); True if done, False for a socket
    that is not TCP.  Raises ``OSError`` if the kernel refuses the filter."""
    if not _is_tcp(sock):
        return False
    program = (_SockFilter * len(_DROP_CONNECTION_OPENINGS))(
        *(_SockFilter(*instruction) for instruction in _DROP_CONNECTION_OPENINGS)
    )
    fprog = _SockFprog(len(_DROP_CONNECTION_OPENINGS), program)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))  # the kernel copies it
    return True


def queued_connections(sock: _Socket) -> int:
    """How many connections the kernel holds in the listening ``sock``'s
    accept queue now (0 for a socket that is not TCP)."""
    if not _is_tcp(sock):
        return 0
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    return int(struct.unpack_from("I", info, _UNACKED_OFFSET)[0])


async def empty_accept_queues(sockets: Sequence[_Socket], limit: float) -> int:
    """Refuse new connections on every listening socket of ``sockets``, then
    wait (at most ``limit`` seconds) until their queues are empty while the
    caller's accept loop takes what is queued.  Returns how many connections
    are still queued at the end (0 unless accepting was stuck, e.g. at the
    connection limit): closing the sockets then resets those."""
    for sock in sockets:
        refuse_new_connections(sock)
    with trio.move_on_after(limit):
        while True:
            # A handshake under way when the filter was attached completes
            # within a round trip: look again one poll later.
            await trio.sleep(QUEUE_POLL)
            if not any(queued_connections(sock) for sock in sockets):
                return 0
    return sum(queued_connections(sock) for sock in sockets)
