"""Messages over a byte stream: :class:`MessageStream` owns a connection's
transport, framer, memory account and counters; :mod:`~trioecho.stream.session`
holds the sans-IO sessions it can serve (:meth:`MessageStream.run_session`);
:func:`open_message_stream` dials a server.
"""

from trioecho.stream.connect import open_message_stream
from trioecho.stream.message_stream import MessageStream
from trioecho.stream.session import RespondSession, Session, SessionOutput

__all__ = ["MessageStream", "RespondSession", "Session", "SessionOutput", "open_message_stream"]
