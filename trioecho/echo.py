"""The seed tutorial's echo service, byte-exact, on the message server.

* On connect the server sends the greeting ``你好欢迎你`` (UTF-8) as the first
  message.
* Every message is answered with the message followed by ``好`` (UTF-8).
  Messages are bytes and are never decoded: invalid UTF-8 and NUL bytes come
  back unchanged.
* A message equal to ``q`` ends the session: the server closes the
  connection without replying.

Messages that arrived together are answered with one write.  In ``raw``
framing the wire format is exactly the seed's: the greeting with no
delimiter, then each read of up to 1024 bytes is one message.  A message
whose reply would exceed ``max_frame`` closes the connection (the reply
cannot be framed); with the default limits that is a message over 65533
bytes in line framing.
"""

from __future__ import annotations

import logging

from ._errors import FrameTooLongError
from .framing import LineFramer
from .server import BaseRequestHandler, format_address

__all__ = ["GREETING", "QUIT", "REPLY_SUFFIX", "EchoHandler", "GenericEchoHandler", "reply_to"]

logger = logging.getLogger("trioecho.echo")

GREETING = "你好欢迎你".encode()
REPLY_SUFFIX = "好".encode()
QUIT = b"q"


def reply_to(message: bytes) -> bytes:
    """The echo service's reply to one message."""
    return message + REPLY_SUFFIX


class EchoHandler(BaseRequestHandler):
    """Greets, then answers each message with ``message + 好`` until ``q``.

    The replies are built by :meth:`MessageStream.echo`, in C with the C
    framer.  ``GenericEchoHandler`` goes through the generic path instead
    (``receive_messages``, a Python ``bytes`` per message, ``send_messages``);
    both put the same bytes on the wire.
    """

    generic = False

    async def handle(self) -> None:
        stream = self.request
        await stream.send_message(GREETING)
        while True:
            try:
                await stream.echo(REPLY_SUFFIX, QUIT, generic=self.generic)
                return
            except FrameTooLongError as exc:
                framer = stream.framer
                if isinstance(framer, LineFramer) and framer.on_too_long == "discard":
                    where = format_address(self.client_address)
                    logger.warning("%s: dropped an over-long line: %s", where, exc)
                    continue
                raise


class GenericEchoHandler(EchoHandler):
    """:class:`EchoHandler` through the generic path: each message received as
    ``bytes``, the replies sent with ``send_messages`` (``serve --generic``)."""

    generic = True
