"""trioecho: a Trio TCP message service with real framing.

``MessageServer`` serves connections with the seed tutorial's handler model
(``BaseRequestHandler``), each as a ``MessageStream`` of framed messages.

The sans-IO framers (``LineFramer``, ``LengthPrefixedFramer``, ``RawFramer``)
split a byte stream into messages, and ``EchoSession`` answers them the echo
service's way; their hot loops are C (``csrc/``, built with cffi), each
with a pure-Python twin.  ``Transport`` (``trioecho.io.transport``) moves the
bytes: a socket directly, or any ``trio.abc.Stream``.  ``FRAMER_IMPLEMENTATION`` says which one is
active: ``"c"`` or ``"python"`` (``TRIOECHO_PUREPYTHON=1`` selects the twin).

In front of the handler, the server can read a PROXY protocol header
(``ProxyProtocolConfig``; parser in ``trioecho.server.proxy``) and speak TLS
(``ssl_context``; contexts from ``trioecho.io.tls``); ``trioecho --workers N``
runs N processes on one port (``trioecho.workers.supervisor``).
"""

from trioecho._version import __version__
from trioecho.errors import (
    ConnectionClosedError,
    DelimiterInPayloadError,
    FrameTooLongError,
    FramingError,
    GreetingError,
    IdleTimeoutError,
    IncompleteFrameError,
    LoadGeneratorError,
    MalformedFrameError,
    MemoryBudgetError,
    ProtocolRefusedError,
    ProxyProtocolError,
    RelayError,
    SinkError,
    SlowReaderError,
    TLSHandshakeError,
    TrioEchoError,
)
from trioecho.framing import presets
from trioecho.framing.base import DEFAULT_MAX_FRAME, DEFAULT_MAX_LINE, FRAMINGS, Framer
from trioecho.framing.config import FramingConfig, make_framer
from trioecho.framing.fixed import FixedLengthFramer, RawFramer
from trioecho.framing.implementation import IMPLEMENTATION as FRAMER_IMPLEMENTATION
from trioecho.framing.length import LengthPrefixedFramer, VarintFramer
from trioecho.framing.lines import LineFramer
from trioecho.framing.phased import PhasedFramer
from trioecho.io.budget import MemoryBudget
from trioecho.io.keepalive import KeepAlive
from trioecho.io.transport import Transport
from trioecho.reasons import CloseReason
from trioecho.server.accept import ProxyProtocolConfig
from trioecho.server.config import ServerConfig
from trioecho.server.handler import BaseRequestHandler
from trioecho.server.server import MessageServer
from trioecho.services.echo_session import EchoOutput, EchoSession
from trioecho.services.relay_config import RelayConfig
from trioecho.stream.connect import open_message_stream, open_unix_message_stream
from trioecho.stream.message_stream import MessageStream
from trioecho.stream.session import RespondSession, Session, SessionOutput

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_LINE",
    "FRAMER_IMPLEMENTATION",
    "FRAMINGS",
    "BaseRequestHandler",
    "CloseReason",
    "ConnectionClosedError",
    "DelimiterInPayloadError",
    "EchoOutput",
    "EchoSession",
    "FixedLengthFramer",
    "FrameTooLongError",
    "Framer",
    "FramingConfig",
    "FramingError",
    "GreetingError",
    "IdleTimeoutError",
    "IncompleteFrameError",
    "KeepAlive",
    "LengthPrefixedFramer",
    "LineFramer",
    "LoadGeneratorError",
    "MalformedFrameError",
    "MemoryBudget",
    "MemoryBudgetError",
    "MessageServer",
    "MessageStream",
    "PhasedFramer",
    "ProtocolRefusedError",
    "ProxyProtocolConfig",
    "ProxyProtocolError",
    "RawFramer",
    "RelayConfig",
    "RelayError",
    "RespondSession",
    "ServerConfig",
    "Session",
    "SessionOutput",
    "SinkError",
    "SlowReaderError",
    "TLSHandshakeError",
    "Transport",
    "TrioEchoError",
    "VarintFramer",
    "__version__",
    "make_framer",
    "open_message_stream",
    "open_unix_message_stream",
    "presets",
]
