"""The checks of what a :class:`~trioecho.stream.message_stream.MessageStream`
is given: its transport (a Trio stream it opens a transport over, or a
transport the caller opened), its read size, and the payloads it sends.
"""

from __future__ import annotations

import trio

from trioecho.arguments import check_rate
from trioecho.io.opening import open_transport
from trioecho.io.readiness import Readiness
from trioecho.io.transport import Transport

__all__ = [
    "DEFAULT_RECEIVE_SIZE",
    "RAW_RECEIVE_SIZE",
    "check_payload",
    "check_receive_size",
    "receive_size_for",
    "transport_for",
]

DEFAULT_RECEIVE_SIZE = 64 * 1024
RAW_RECEIVE_SIZE = 1024  # the seed's recv(1024): in raw framing, one read is one message


def receive_size_for(framing: str) -> int:
    """How many bytes a stream of ``framing`` reads at a time."""
    return RAW_RECEIVE_SIZE if framing == "raw" else DEFAULT_RECEIVE_SIZE


def check_receive_size(receive_size: int) -> int:
    """``receive_size``, the most bytes asked of the transport per read:
    ValueError below 1."""
    if receive_size < 1:
        raise ValueError(f"receive_size must be at least 1, not {receive_size}")
    return receive_size


def transport_for(
    transport_stream: trio.abc.Stream | Transport,
    *,
    idle_timeout: float | None,
    send_timeout: float | None,
    min_send_rate: float | None,
    readiness: Readiness | None,
) -> Transport:
    """The transport a stream runs on: ``transport_stream`` if it is one
    (the four options must then be None: they are the transport's), else
    one opened over it with them."""
    if not isinstance(transport_stream, Transport):
        return open_transport(
            transport_stream,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
            min_send_rate=check_rate(min_send_rate, "min_send_rate"),
            readiness=readiness,
        )
    if (
        idle_timeout is not None
        or send_timeout is not None
        or min_send_rate is not None
        or readiness is not None
    ):
        raise ValueError(
            "idle_timeout, send_timeout, min_send_rate and readiness belong to the "
            "Transport when one is given"
        )
    return transport_stream


def check_payload(payload: object) -> None:
    """TypeError, saying what to do, for a payload that is not bytes."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return
    if isinstance(payload, str):
        raise TypeError(
            "a message is bytes, not str: encode the text first, e.g. send_message(text.encode())"
        )
    raise TypeError(
        f"a message is bytes (or a bytearray or memoryview), not {type(payload).__name__}"
    )
