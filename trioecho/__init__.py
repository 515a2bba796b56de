"""trioecho: a Trio TCP message service with real framing.

``MessageServer`` serves connections with the seed tutorial's handler model
(``BaseRequestHandler``), each as a ``MessageStream`` of framed messages.

The sans-IO framers (``LineFramer``, ``LengthPrefixedFramer``, ``RawFramer``)
split a byte stream into messages, and ``EchoSession`` answers them the echo
service's way; their hot loops are C (``csrc/``, built with cffi), each
with a pure-Python twin.  ``Transport`` (``trioecho.transport``) moves the
bytes: a socket directly, or any ``trio.abc.Stream``.  ``FRAMER_IMPLEMENTATION`` says which one is
active: ``"c"`` or ``"python"`` (``TRIOECHO_PUREPYTHON=1`` selects the twin).

In front of the handler, the server can read a PROXY protocol header
(``ProxyProtocolConfig``; parser in ``trioecho.proxy``) and speak TLS
(``ssl_context``; contexts from ``trioecho.tls``); ``trioecho --workers N``
runs N processes on one port (``trioecho.workers``).
"""

from ._backend import IMPLEMENTATION as FRAMER_IMPLEMENTATION
from ._errors import (
    ConnectionClosedError,
    DelimiterInPayloadError,
    FrameTooLongError,
    FramingError,
    IdleTimeoutError,
    IncompleteFrameError,
    MalformedFrameError,
    ProxyProtocolError,
    SlowReaderError,
    TLSHandshakeError,
    TrioEchoError,
)
from ._version import __version__
from .accept import ProxyProtocolConfig
from .connect import open_message_stream
from .framing import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_LINE,
    FRAMINGS,
    FixedLengthFramer,
    Framer,
    FramingConfig,
    LengthPrefixedFramer,
    LineFramer,
    PhasedFramer,
    RawFramer,
    VarintFramer,
    make_framer,
    presets,
)
from .server import BaseRequestHandler, MessageServer
from .session import EchoOutput, EchoSession, RespondSession, SessionOutput
from .stream import MessageStream, Session
from .transport import Transport

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_LINE",
    "FRAMER_IMPLEMENTATION",
    "FRAMINGS",
    "BaseRequestHandler",
    "ConnectionClosedError",
    "DelimiterInPayloadError",
    "EchoOutput",
    "EchoSession",
    "FixedLengthFramer",
    "FrameTooLongError",
    "Framer",
    "FramingConfig",
    "FramingError",
    "IdleTimeoutError",
    "IncompleteFrameError",
    "LengthPrefixedFramer",
    "LineFramer",
    "MalformedFrameError",
    "MessageServer",
    "MessageStream",
    "PhasedFramer",
    "ProxyProtocolConfig",
    "ProxyProtocolError",
    "RawFramer",
    "RespondSession",
    "Session",
    "SessionOutput",
    "SlowReaderError",
    "TLSHandshakeError",
    "Transport",
    "TrioEchoError",
    "VarintFramer",
    "__version__",
    "make_framer",
    "open_message_stream",
    "presets",
]
