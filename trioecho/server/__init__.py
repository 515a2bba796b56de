"""The server: the handler model (:mod:`~trioecho.server.handler`), the
listening sockets (:mod:`~trioecho.server.listeners`), each connection's
accept stage, PROXY header and TLS handshake (:mod:`~trioecho.server.accept`,
:mod:`~trioecho.server.proxy`), and :class:`MessageServer`, which runs them
with the settings of a :class:`ServerConfig` (:mod:`~trioecho.server.config`).
"""

from trioecho.server.config import ServerConfig
from trioecho.server.handler import BaseRequestHandler, Handler
from trioecho.server.server import MessageServer

__all__ = ["BaseRequestHandler", "Handler", "MessageServer", "ServerConfig"]
