"""The I/O layer: the only code that touches sockets or Trio's internals.

* :mod:`~trioecho.io.transport`: the transport interface; its two
  implementations, :mod:`~trioecho.io.socket_transport` (direct socket
  calls, inline serving) and :mod:`~trioecho.io.stream_transport` (any
  ``trio.abc.Stream``: TLS, in-memory); :mod:`~trioecho.io.opening` picks
  one for a stream.
* :mod:`~trioecho.io.hub`: the readiness hub (one edge-triggered epoll set
  for all connections); :mod:`~trioecho.io.readiness` chooses it or Trio's
  own waits.
* :mod:`~trioecho.io.send_deadline`: the send rule, how long a send may
  wait for a slow reader.
* :mod:`~trioecho.io.closing`: the lossless close; :mod:`~trioecho.io.tls`:
  TLS contexts and the handshake; :mod:`~trioecho.io.keepalive`: TCP
  keepalive and ``TCP_USER_TIMEOUT``, which find a peer that vanished.
* :mod:`~trioecho.io.budget`: the memory budget every connection draws on;
  :mod:`~trioecho.io.memory`: giving freed memory back to the system.
"""
