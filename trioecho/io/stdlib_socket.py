"""The stdlib socket under a Trio socket stream: what the direct-socket
transports and the TLS stream read and write themselves."""

from __future__ import annotations

import socket

import trio

__all__ = ["raw_socket"]


def raw_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The stdlib socket under a plain ``trio.SocketStream``, if there is one.

    ``_sock`` is Trio's (stable but private) attribute holding the
    non-blocking stdlib socket; without it the generic path is used.
    """
    if type(stream) is trio.SocketStream:
        raw = getattr(stream.socket, "_sock", None)
        if isinstance(raw, socket.socket):
            return raw
    return None
