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
delimiter, then each read of up to 1024 bytes is one message.  Every
message the server accepts (up to ``max_frame``) is answered: a reply is
limited by the wire format only (see :mod:`trioecho.session`).

:class:`EchoHandler` is a loop of transport receive, :class:`EchoSession`
(the sans-IO protocol, in C with a pure-Python twin) and transport send.
:class:`GenericEchoHandler` answers through the generic message path
instead (``receive_messages``, a Python ``bytes`` per message, the
replies framed by the stream's framer in one write) with the same bytes on
the wire.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import cast

import trio

from ._errors import FrameTooLongError, FramingError
from .framing import Framer, FramingConfig, LengthFieldFramer, LineFramer
from .server import BaseRequestHandler, format_address
from .session import GREETING, QUIT, REPLY_SUFFIX, EchoSession

__all__ = ["GREETING", "QUIT", "REPLY_SUFFIX", "EchoHandler", "GenericEchoHandler", "reply_to"]

logger = logging.getLogger("trioecho.echo")


@functools.lru_cache(maxsize=64)
def _framed_greeting(framing: FramingConfig) -> bytes:
    return greeting_frame(framing.new_framer())


def greeting_frame(framer: Framer) -> bytes:
    """The greeting, framed by ``framer``.  A framer whose frames keep their
    header (``include_header``) gets zero bytes before its length field."""
    if isinstance(framer, LengthFieldFramer):
        return framer.encode_parts(bytes(framer.length_offset), GREETING)
    return framer.encode(GREETING)


def reply_to(message: bytes) -> bytes:
    """The echo service's reply to one message."""
    return message + REPLY_SUFFIX


class EchoHandler(BaseRequestHandler):
    """Greets, then answers each message with ``message + 好`` until ``q``.

    The replies to each read are built by an :class:`EchoSession` and sent
    in one write; an over-long line in discard mode is logged and dropped.
    Messages the stream had already read (a subclass that received before
    calling this) go through the generic path.
    """

    generic = False

    async def handle(self) -> None:
        stream = self.request
        framing = stream.framing
        fast = isinstance(framing, FramingConfig) and framing.plain and not self.generic
        if fast:
            # Framed once per configuration: the fast path builds no framer.
            greeting = _framed_greeting(cast(FramingConfig, framing))
        else:
            greeting = greeting_frame(stream.framer)
        await stream.transport.send_all(greeting)
        stream.messages_sent += 1
        if not fast or stream.has_pending:
            # Bytes the stream already read belong to its framer.
            await self.answer_messages()
            return
        session = EchoSession(framing)
        transport = stream.transport
        account = transport.account
        receive_size = stream.receive_size
        # stream.idle_deadline(), inline: it is renewed with every message.
        timeout = transport.idle_timeout
        now = trio.current_time
        deadline = math.inf if timeout is None else now() + timeout
        while True:
            data = await transport.receive_some(receive_size, deadline)
            if data is None:
                return  # stop_receiving(): shutting down
            ended = not data
            wire, replies, received, stopped, error, dropped = (
                session.feed_eof() if ended else session.feed(data)
            )
            data = None  # an idle connection holds neither its last message ...
            if account is not None and account.buffered != session.buffered:
                account.set_buffered(session.buffered)
            if (received or dropped) and timeout is not None:
                deadline = now() + timeout
            stream.messages_received += received
            for too_long in dropped:
                self._log_dropped(too_long)
            if wire:
                await transport.send_all(wire)
                stream.messages_sent += replies
                wire = b""  # ... nor its last reply
            if error is not None:
                raise error
            if stopped or ended:
                return

    def _log_dropped(self, error: FramingError) -> None:
        where = format_address(self.client_address)
        logger.warning("%s: dropped an over-long line: %s", where, error)

    async def answer_messages(self) -> None:
        """Answer messages until ``q`` or the end of the stream."""
        stream = self.request
        framer = stream.framer
        transport = stream.transport
        while True:
            try:
                batch = await stream.receive_messages()
            except FrameTooLongError as exc:
                if isinstance(framer, LineFramer) and framer.on_too_long == "discard":
                    self._log_dropped(exc)
                    continue
                raise
            except trio.EndOfChannel:
                return
            replies: list[bytes] = []
            stopped = False
            for message in batch:
                if message == QUIT:
                    stopped = True
                    break
                replies.append(message + REPLY_SUFFIX)
            batch = []  # hold the replies only while they are sent
            message = b""
            if replies:
                try:
                    data = framer.encode_many(replies)
                except FramingError:
                    # Send the replies before the one that cannot be framed
                    # (send_message raises its error): none owed before it is lost.
                    for reply in replies:
                        await stream.send_message(reply)
                    raise  # not reached: one of them cannot be framed
                count = len(replies)
                replies = []  # only the framed bytes are held while a slow peer reads
                await transport.send_all(data)
                stream.messages_sent += count
            if stopped:
                return


class GenericEchoHandler(EchoHandler):
    """:class:`EchoHandler` through the generic path: each message received as
    ``bytes`` (``receive_messages``), the replies framed by the stream's framer
    and sent in one write (``serve --generic``)."""

    generic = True
