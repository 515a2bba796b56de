"""Messages over a byte stream: :class:`MessageStream` owns a connection's
transport, framer, memory account and counters; :mod:`~trioecho.stream.session`
holds the sans-IO sessions it can serve (:meth:`MessageStream.run_session`);
:func:`open_message_stream` dials a server.

The modules, one concern each:

* :mod:`~trioecho.stream.message_stream`: ``MessageStream``, the message API;
* :mod:`~trioecho.stream.state`: what a stream holds, and its construction;
* :mod:`~trioecho.stream.arguments`: the checks of what a stream is given;
* :mod:`~trioecho.stream.receiving`: the receive side (reads, framer,
  messages held until delivered, the memory budget's admission);
* :mod:`~trioecho.stream.driver`: the one loop that serves a session or a
  forwarding (the C pump, the hub inline, or this task);
* :mod:`~trioecho.stream.session_run`: serving a sans-IO session;
* :mod:`~trioecho.stream.forwarding`: passing the input on to another stream;
* :mod:`~trioecho.stream.pumped`: serving either with the hub's C pump;
* :mod:`~trioecho.stream.session`: the ``Session`` contract, ``RespondSession``;
* :mod:`~trioecho.stream.connect`: dialing a server.
"""

from trioecho.stream.connect import open_message_stream
from trioecho.stream.message_stream import MessageStream
from trioecho.stream.session import RespondSession, Session, SessionOutput

__all__ = ["MessageStream", "RespondSession", "Session", "SessionOutput", "open_message_stream"]
