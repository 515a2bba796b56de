"""Sans-IO sessions: what :meth:`~trioecho.stream.MessageStream.run_session`
serves, bytes in and reply bytes out.

:class:`Session` is the contract; :class:`SessionOutput` is what each
``feed`` returns; :class:`RespondSession` turns a function that answers one
message into a session, with any framer.  The echo service's own session,
with its C engine, is :class:`trioecho.services.echo_session.EchoSession`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol, cast

from trioecho.errors import FrameTooLongError, FramingError
from trioecho.framing.base import Buffer, Framer, drops_too_long

__all__ = ["RespondSession", "Session", "SessionOutput"]


class SessionOutput(NamedTuple):
    """What one ``feed`` (or ``feed_eof``) of a session produced
    (:class:`EchoSession`, :class:`RespondSession`)."""

    data: bytes
    """The framed replies, in order, to send as they are."""
    replies: int
    """Messages answered (the replies in ``data``)."""
    received: int
    """Messages consumed: the ones answered, and the stop message."""
    stopped: bool = False
    """The stop message arrived: the session is over."""
    error: FramingError | None = None
    """The error that ended the session, after the replies in ``data``."""
    dropped: tuple[FrameTooLongError, ...] = ()
    """Discard mode: the over-long lines dropped (the session goes on)."""


_NOTHING = SessionOutput(b"", 0, 0)
_REPLY_TYPES = (bytes, bytearray, memoryview)  # what a respond() may return, besides None


class Session(Protocol):
    """A sans-IO protocol :meth:`MessageStream.run_session` can serve.

    ``feed(data)`` takes the bytes of one read and returns a
    :class:`SessionOutput`: the framed replies to send, how many replies and
    messages that was, whether the session stopped, the error that ended it
    (after the replies in ``data``), and the over-long lines it dropped.
    ``feed_eof()`` says the peer ended its input.  ``buffered`` is the bytes
    of an unfinished message it holds.  Neither may block; an exception they
    raise (other than in the output) is a bug, raised in the stream's task.
    """

    @property
    def buffered(self) -> int: ...

    def feed(self, data: bytes) -> SessionOutput: ...

    def feed_eof(self) -> SessionOutput: ...


class RespondSession:
    """A function that answers message by message, as a sans-IO session.

    ``framer`` splits the input; ``respond(message)`` returns the reply to
    one message (framed by ``framer``), or None for no reply.  The replies
    to one read are framed together (``encode_many``), so they go out in
    one write.  After :meth:`stop` (called from ``respond``) the session
    ends once that message's reply is sent: the messages after it are not
    answered.  Errors, as :class:`EchoSession` reports them:

    * input that breaks the framing ends the session with that
      :class:`FramingError` as ``error``, after the replies to the messages
      before it; an over-long line in discard mode is ``dropped`` instead;
    * a reply the framer cannot encode (a line holding the delimiter) ends
      the session with that error, after the replies before it;
    * a reply that is neither bytes-like (``bytes``, ``bytearray``,
      ``memoryview``) nor None is a bug of ``respond``: ``TypeError`` naming
      it, its class and the type returned;
    * an exception ``respond`` raises is its own bug: it propagates.

    ``received`` counts the messages given to ``respond``.
    """

    __slots__ = ("_discard", "_ending", "_framer", "_respond", "_stopping")

    def __init__(self, framer: Framer, respond: Callable[[bytes], bytes | None]) -> None:
        self._framer = framer
        self._respond = respond
        self._discard = drops_too_long(framer)
        self._stopping = False
        self._ending: SessionOutput | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished message the framer holds."""
        return self._framer.buffered

    @property
    def over(self) -> bool:
        return self._ending is not None

    def stop(self) -> None:
        """End the session after the reply to the message being answered."""
        self._stopping = True

    def feed(self, data: Buffer) -> SessionOutput:
        """Take the bytes of one read; return the replies they complete."""
        if self._ending is not None:
            return self._ending
        frames, error, dropped = self._split(data)
        return self._answered(frames, error, dropped)

    def _answered(
        self,
        frames: list[bytes],
        error: FramingError | None,
        dropped: tuple[FrameTooLongError, ...],
    ) -> SessionOutput:
        """The output for ``frames``, the error that ended the input after
        them, and the lines dropped."""
        replies: list[bytes] = []
        received = 0
        respond = self._respond
        for message in frames:
            received += 1
            reply = respond(message)
            if reply is not None:
                if type(reply) is not bytes and not isinstance(reply, _REPLY_TYPES):
                    raise _wrong_reply(respond, reply)
                replies.append(reply)
            if self._stopping:
                error = None  # the input after the stop message is not read
                break
        wire, answered, encode_error = self._encode(replies)
        error = encode_error or error
        if self._stopping or error is not None:
            self._ending = SessionOutput(b"", 0, 0, stopped=self._stopping, error=error)
            return SessionOutput(wire, answered, received, self._stopping, error, dropped)
        if dropped:
            return SessionOutput(wire, answered, received, dropped=dropped)
        return SessionOutput(wire, answered, received)

    def answer(self, messages: list[bytes]) -> SessionOutput:
        """Answer ``messages`` that the C pump split from the input with this
        session's framer (:meth:`take_splitting`): as :meth:`feed` answers
        the messages of one read."""
        if self._ending is not None:
            return self._ending
        return self._answered(messages, None, ())

    def take_splitting(self) -> tuple[object, bytes] | None:
        """Hand the splitting of the input to the C pump: the framer's C
        scanner and its unfinished message (the pump's until
        :meth:`restore_splitting`), or None where the pump cannot split
        for this framer (see ``Framer.splitting_state``; a line framer in
        discard mode, say)."""
        splitting_state = getattr(self._framer, "splitting_state", None)
        if splitting_state is None or self._discard or self._ending is not None:
            return None
        return cast("tuple[object, bytes] | None", splitting_state())

    def restore_splitting(self, held: bytes) -> None:
        """Take back the unfinished message from the C pump."""
        self._framer.restore_splitting(held)  # type: ignore[attr-defined]

    def feed_eof(self) -> SessionOutput:
        """The peer closed its side; ``error`` is an :class:`IncompleteFrameError`
        if the stream ended inside a message."""
        if self._ending is not None:
            return self._ending
        try:
            self._framer.feed_eof()
        except FramingError as exc:
            self._ending = SessionOutput(b"", 0, 0, error=exc)
            return self._ending
        return _NOTHING

    def _split(
        self, data: Buffer
    ) -> tuple[list[bytes], FramingError | None, tuple[FrameTooLongError, ...]]:
        """The messages of one read, the error that ends the input, and
        the over-long lines dropped (discard mode)."""
        framer = self._framer
        try:
            return framer.feed(data), None, ()
        except FramingError as exc:
            frames, exc.frames = exc.frames, []
            if not (self._discard and isinstance(exc, FrameTooLongError)):
                return frames, exc, ()
            dropped = [exc]
        while True:  # discard mode: go on after each dropped line
            try:
                frames += framer.feed(b"")
                return frames, None, tuple(dropped)
            except FrameTooLongError as exc:
                frames += exc.frames
                exc.frames = []
                dropped.append(exc)

    def _encode(self, replies: list[bytes]) -> tuple[bytes, int, FramingError | None]:
        """The replies framed, how many, and the error of the first one
        that cannot be framed (the replies before it are kept)."""
        if not replies:
            return b"", 0, None
        framer = self._framer
        try:
            return framer.encode_many(replies), len(replies), None
        except FramingError:
            pass
        parts = []
        for reply in replies:
            try:
                parts.append(framer.encode(reply))
            except FramingError as exc:
                return b"".join(parts), len(parts), exc
        raise AssertionError("encode_many() refused replies that encode() frames one by one")


def _wrong_reply(respond: Callable[[bytes], bytes | None], reply: object) -> TypeError:
    """The error for a reply ``respond`` should not have returned."""
    owner = getattr(respond, "__self__", None)
    name = getattr(respond, "__name__", None) or repr(respond)
    where = f"{type(owner).__name__}.{name}()" if owner is not None else f"{name}()"
    hint = ": encode the text first, e.g. return text.encode()" if isinstance(reply, str) else ""
    return TypeError(
        f"{where} must return bytes (or a bytearray or memoryview) or None, "
        f"not {type(reply).__name__}{hint}"
    )
