"""The I/O layer: the only code that touches sockets or Trio's internals.

* :mod:`~trioecho.io.transport`: the transport interface; its two
  implementations, :mod:`~trioecho.io.socket_transport` (direct socket
  calls, assembled from :mod:`~trioecho.io.socket_base`: the state, the
  receive and the plain send; :mod:`~trioecho.io.socket_sending`: the send
  that waits by the send rule; :mod:`~trioecho.io.socket_inline`: inline
  serving; :mod:`~trioecho.io.socket_pumped`: serving by the C pump) and
  :mod:`~trioecho.io.stream_transport` (any ``trio.abc.Stream``: TLS,
  in-memory); :mod:`~trioecho.io.opening` picks one for a stream.
* :mod:`~trioecho.io.hub`: the readiness hub (one edge-triggered epoll set
  for all connections, and its turn); :mod:`~trioecho.io.watch`: one
  socket's registration, its waits and its attachment to the C pump
  (:mod:`~trioecho.io.pump`); :mod:`~trioecho.io.parking`: how a task parks
  on a watch; :mod:`~trioecho.io.readiness` chooses the hub or Trio's own
  waits.
* :mod:`~trioecho.io.send_deadline`: the send rule, how long a send may
  wait for a slow reader.
* :mod:`~trioecho.io.closing`: the lossless close; :mod:`~trioecho.io.tls`:
  TLS contexts and the handshake; :mod:`~trioecho.io.keepalive`: TCP
  keepalive and ``TCP_USER_TIMEOUT``, which find a peer that vanished.
* :mod:`~trioecho.io.budget`: the memory budget every connection draws on;
  :mod:`~trioecho.io.memory`: giving freed memory back to the system.
"""
