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
limited by the wire format only (see :mod:`trioecho.stream.session`).

:class:`EchoHandler` serves an :class:`EchoSession` (the sans-IO protocol,
in C with a pure-Python twin) with ``MessageStream.run_session``: on plain
TCP the readiness hub runs it inline on every read.
:class:`RespondEchoHandler` answers with a Python ``respond()`` per message
instead, inline too, and :class:`GenericEchoHandler` with an ``async def
handle()`` loop in the connection's task (``receive_messages``, a Python
``bytes`` per message, the replies framed by the stream's framer in one
write).  All three put the same bytes on the wire.  Each defines either
``handle`` or ``respond``, as every handler must; what they share is
:class:`BaseEchoHandler`.
"""

from __future__ import annotations

import functools
import logging

import trio

from trioecho.errors import FrameTooLongError, FramingError
from trioecho.framing.base import Framer, drops_too_long
from trioecho.framing.config import FramingConfig
from trioecho.framing.length import LengthFieldFramer
from trioecho.logtext import format_address
from trioecho.reasons import CloseReason
from trioecho.server.handler import BaseRequestHandler
from trioecho.services.echo_session import GREETING, QUIT, REPLY_SUFFIX, EchoSession, engine_answers
from trioecho.stream.session import RespondSession

__all__ = [
    "GREETING",
    "QUIT",
    "REPLY_SUFFIX",
    "BaseEchoHandler",
    "EchoHandler",
    "GenericEchoHandler",
    "RespondEchoHandler",
    "reply_to",
]

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


class BaseEchoHandler(BaseRequestHandler):
    """What the echo's handlers share: the greeting, the answer to one
    message (:meth:`answer`), the generic path (:meth:`answer_messages`) and
    the log line of a dropped over-long line.  Not a handler by itself (it
    defines neither ``handle`` nor ``respond``)."""

    async def send_greeting(self) -> None:
        """Send the greeting, framed like every message."""
        stream = self.request
        framing = stream.framing
        if isinstance(framing, FramingConfig):
            await stream.send_framed(_framed_greeting(framing))  # builds no framer
        else:
            await stream.send_framed(greeting_frame(stream.framer))

    def answer(self, message: bytes) -> bytes | None:
        """The echo's answer to one message: ``message + 好``, or at ``q``
        None and the end of the session (:meth:`end_session`)."""
        if message == QUIT:
            self.end_session()
            return None
        # reply_to(message), written out: a call more per message is 53 ns,
        # 7% of a pipelined respond() message (0.75 against 0.67 µs).
        return message + REPLY_SUFFIX

    def dropped_line(self, error: FramingError) -> None:
        where = format_address(self.client_address)
        logger.warning("%s: dropped an over-long line: %s", where, error)

    async def answer_messages(self) -> None:
        """Answer messages until ``q`` or the end of the stream, through the
        generic path: ``receive_messages``, a ``bytes`` per message, the
        replies framed by the stream's framer in one write."""
        stream = self.request
        framer = stream.framer
        while True:
            try:
                batch = await stream.receive_messages()
            except FrameTooLongError as exc:
                if drops_too_long(framer):
                    self.dropped_line(exc)
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
                replies.append(reply_to(message))
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
                await stream.send_framed(data, count)
            if stopped:
                stream.close_reason = CloseReason.STOP_MESSAGE
                return


class EchoHandler(BaseEchoHandler):
    """Greets, then answers each message with ``message + 好`` until ``q``.

    The plain framings (one delimiter, bare lengths, raw) are answered by an
    :class:`EchoSession` (C, with its pure-Python twin), the others by
    :meth:`~BaseEchoHandler.answer` through the stream's framer (a
    :class:`RespondSession`): either way a sans-IO session, which the
    readiness hub serves inline on plain TCP.  An over-long line in discard
    mode is logged and dropped.  Messages the stream had already read (a
    subclass that received before calling this) go through the generic path.
    """

    async def handle(self) -> None:
        """Greet, then answer until ``q`` or the end of the input."""
        await self.send_greeting()
        stream = self.request
        if stream.has_pending:
            await self.answer_messages()  # bytes the stream already read belong to its framer
            return
        session: EchoSession | RespondSession | None = self.echo_session()
        if session is None:
            # answer() per message, inline, as a respond() handler is served.
            session = self._session = RespondSession(stream.framer, self.answer)
        await stream.run_session(session, on_dropped=self.dropped_line)

    def echo_session(self) -> EchoSession | None:
        """The C echo session for the stream's framing, or None where
        :meth:`~BaseEchoHandler.answer` answers instead."""
        framing = self.request.framing
        if isinstance(framing, FramingConfig) and engine_answers(framing):
            return EchoSession(framing)
        return None


class RespondEchoHandler(BaseEchoHandler):
    """The echo as a ``respond()`` handler: greets from :meth:`setup`, then
    answers every framing with the Python :meth:`~BaseEchoHandler.answer`,
    served inline like a user's ``respond`` handler (``serve --handler
    respond``)."""

    async def setup(self) -> None:
        await self.send_greeting()

    respond = BaseEchoHandler.answer  # one call per message, as a user's respond()


class GenericEchoHandler(EchoHandler):
    """:class:`EchoHandler` as an ``async def handle()`` handler: each message
    received as ``bytes`` (``receive_messages``), the replies framed by the
    stream's framer and sent in one write, all in the connection's task
    (``serve --handler handle``, ``--generic``)."""

    async def handle(self) -> None:
        await self.send_greeting()
        await self.answer_messages()
