"""Framing configurations for real protocols (``trioecho.framing.presets``).

Each function returns a :class:`~trioecho.framing.config.FramingConfig`: pass it to
``MessageStream``, ``MessageServer`` or ``open_message_stream``.  The frames
are whole protocol messages (``include_header=True``), so a relay can pass
them on unchanged: ``encode`` rewrites each one's length field from its size.

========================  =====================================================
preset                    wire format
========================  =====================================================
``postgresql()``          type byte, 4-byte big-endian length counting itself
                          and the body; the client's first message (startup
                          packet, or a request for encryption and then the
                          startup packet) has no type byte
``mqtt()``                fixed-header byte, "remaining length" varint of at
                          most 4 bytes, the rest of the packet
``protobuf_delimited()``  varint length (at most 5 bytes), then the message
========================  =====================================================
"""

from __future__ import annotations

from typing import Literal

from trioecho.errors import FrameTooLongError, FramingError, IdleTimeoutError, SlowReaderError
from trioecho.framing.base import DEFAULT_MAX_FRAME
from trioecho.framing.config import FramingConfig
from trioecho.framing.starttls import StartTLS

__all__ = [
    "MQTT_MAX_REMAINING",
    "POSTGRESQL_IDLE_SESSION_MESSAGE",
    "POSTGRESQL_MAX_MESSAGE",
    "POSTGRESQL_MAX_STARTUP",
    "POSTGRESQL_STARTTLS",
    "FinalAnswer",
    "PostgresNegotiation",
    "error_response",
    "is_encryption_request",
    "mqtt",
    "old_style_error",
    "postgres_refusal",
    "postgresql",
    "protobuf_delimited",
    "refuse_encryption",
]

# PostgreSQL refuses a startup packet over 10,000 bytes (MAX_STARTUP_PACKET_LENGTH).
POSTGRESQL_MAX_STARTUP = 10_000
# PostgreSQL's own limit on a message: what it can allocate at once
# (MaxAllocSize, 1 GB - 1 byte); its readers refuse longer ones, and no
# single value it sends is longer.  A relay streams a message's body through
# (MessageStream.forward_to), so the limit costs no memory: it is the
# protocol's, not the relay's buffer.
POSTGRESQL_MAX_MESSAGE = (1 << 30) - 1
# MQTT's own limit on a packet's remaining length (4 varint bytes).
MQTT_MAX_REMAINING = (1 << 28) - 1  # 268,435,455
# The request codes of SSLRequest (1234.5679) and GSSENCRequest (1234.5680).
_ENCRYPTION_REQUESTS = ((80877103).to_bytes(4, "big"), (80877104).to_bytes(4, "big"))
# PostgreSQL's TLS negotiation: an SSLRequest (length 8, code 1234.5679)
# answered S or N; PostgreSQL 17's direct TLS names ALPN "postgresql".
POSTGRESQL_STARTTLS = StartTLS(
    name="SSLRequest",
    request=(8).to_bytes(4, "big") + _ENCRYPTION_REQUESTS[0],
    accept=b"S",
    refuse=b"N",
    alpn="postgresql",
)


def postgresql(
    side: Literal["client", "server"] = "client", *, max_frame: int = POSTGRESQL_MAX_MESSAGE
) -> FramingConfig:
    """PostgreSQL's frontend/backend protocol (version 3).

    ``side="client"`` frames what a client sends: the startup packet (a
    4-byte length counting itself, then the body; no type byte), then
    messages of a type byte and a 4-byte length counting itself.
    ``side="server"`` frames what the server sends: messages only.
    ``max_frame`` limits a message's body (the bytes after its length); the
    default is PostgreSQL's own limit, :data:`POSTGRESQL_MAX_MESSAGE` (1 GB
    less a byte), which a relay can afford because it streams a message's
    body through rather than holding it (a hook that needs whole frames,
    ``on_frame``, holds each one: give it a smaller limit).

    A client may ask for TLS or GSSAPI encryption first (an 8-byte request
    in the startup packet's form, ``sslmode=prefer``, libpq's default): the
    next packet is then framed as a startup packet too.  The server's answer
    to such a request is one unframed byte, so a relay answers it itself
    (``refuse_encryption``): a relay must see the messages in clear.
    """
    messages = FramingConfig(
        "len", length_offset=1, length_adjustment=-4, include_header=True, max_frame=max_frame
    )
    if side == "server":
        return messages
    if side != "client":
        raise ValueError(f"side must be 'client' or 'server', not {side!r}")
    startup = FramingConfig(
        "len", length_adjustment=-4, include_header=True, max_frame=POSTGRESQL_MAX_STARTUP - 4
    )
    return FramingConfig(
        "len",
        length_offset=1,
        length_adjustment=-4,
        include_header=True,
        max_frame=max_frame,
        first_frame=startup,
        repeat_first_frame=is_encryption_request,
    )


def is_encryption_request(frame: bytes) -> bool:
    """Whether a PostgreSQL startup-form packet asks for TLS (SSLRequest) or
    GSSAPI encryption (GSSENCRequest)."""
    return len(frame) == 8 and frame[4:8] in _ENCRYPTION_REQUESTS


class FinalAnswer(bytes):
    """An answer after which the relay closes the client's connection
    (``reason`` says why, for the log)."""

    reason: str

    def __new__(cls, data: bytes, reason: str) -> FinalAnswer:
        answer = super().__new__(cls, data)
        answer.reason = reason
        return answer


def error_response(severity: str, sqlstate: str, message: str) -> bytes:
    """A PostgreSQL ErrorResponse ('E') with the severity (``S`` and ``V``),
    the SQLSTATE (``C``) and the message (``M``)."""
    fields = b"".join(
        code + text.encode() + b"\0"
        for code, text in ((b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + (4 + len(body)).to_bytes(4, "big") + body


_SSL_REQUEST, _GSSENC_REQUEST = _ENCRYPTION_REQUESTS


def old_style_error(message: str) -> bytes:
    """PostgreSQL's error to a protocol 2 client (``send_message_to_frontend``'s
    old style): ``E``, then ``FATAL:``, two spaces and the message, a newline
    and a NUL; no length field."""
    return b"EFATAL:  " + message.encode() + b"\n\0"


class PostgresNegotiation:
    """A relay's answers to one PostgreSQL client's startup packets, as
    PostgreSQL gives them (``ProcessStartupPacket``): the first SSLRequest
    and the first GSSENCRequest each get ``N``; a second one of either kind
    gets PostgreSQL's FATAL ErrorResponse (SQLSTATE 0A000, "unsupported
    frontend protocol 1234.5679") and the connection closes.  A startup
    packet of protocol 1 or 2 gets PostgreSQL's old-style refusal
    (:func:`old_style_error`: "unsupported frontend protocol 2.0"), which the
    server's messages' framing could not pass on (it has no length field),
    and the connection closes.  One object per connection
    (``relay_server(answer_factory=PostgresNegotiation)``)."""

    def __init__(self) -> None:
        self.answered: set[bytes] = set()

    def __call__(self, frame: bytes) -> bytes | None:
        if not is_encryption_request(frame):
            return _refuse_old_protocol(frame)
        code = frame[4:8]
        if code not in self.answered:
            self.answered.add(code)
            return b"N"
        major, minor = int.from_bytes(code[:2], "big"), int.from_bytes(code[2:], "big")
        kind = "SSLRequest" if code == _SSL_REQUEST else "GSSENCRequest"
        message = f"unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"
        return FinalAnswer(error_response("FATAL", "0A000", message), f"a second {kind}: {message}")


def _refuse_old_protocol(frame: bytes) -> FinalAnswer | None:
    """PostgreSQL's refusal of a startup packet whose protocol is older than
    3 (2.0: the old style, with no length field), else None."""
    if len(frame) < 8:
        return None  # no version: the server refuses it (it logs why)
    major, minor = int.from_bytes(frame[4:6], "big"), int.from_bytes(frame[6:8], "big")
    if major >= 3:
        return None
    message = f"unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"
    return FinalAnswer(old_style_error(message), f"a protocol {major}.{minor} startup: {message}")


# PostgreSQL's own words when its idle_session_timeout ends a session (57P05).
POSTGRESQL_IDLE_SESSION_MESSAGE = "terminating connection due to idle-session timeout"


def postgres_refusal(direction: str, error: Exception) -> bytes | None:
    """What a relay tells a PostgreSQL client before it closes the pair:
    a FATAL ErrorResponse.  For a message refused (in either ``direction``):
    SQLSTATE 54000 (program_limit_exceeded) for one over ``max_frame``, else
    08P01 (protocol_violation), its message saying which side sent what.
    For the relay's idle timeout (:class:`~trioecho.errors.IdleTimeoutError`):
    57P05 with PostgreSQL's own message for its ``idle_session_timeout``
    (:data:`POSTGRESQL_IDLE_SESSION_MESSAGE`).  For a send that stalled
    (:class:`~trioecho.errors.SlowReaderError`): 08006 (connection_failure),
    saying which side did not read.  None for any other error."""
    side = "client" if direction == "up" else "server"
    if isinstance(error, FramingError):
        sqlstate = "54000" if isinstance(error, FrameTooLongError) else "08P01"
        return error_response(
            "FATAL", sqlstate, f"the relay refused a message from the {side}: {error}"
        )
    if isinstance(error, IdleTimeoutError):
        return error_response("FATAL", "57P05", POSTGRESQL_IDLE_SESSION_MESSAGE)
    if isinstance(error, SlowReaderError):
        message = f"terminating connection: the {side} stopped reading ({error})"
        return error_response("FATAL", "08006", message)
    return None


def refuse_encryption(frame: bytes) -> bytes | None:
    """A relay's own answer to a PostgreSQL client's frame: ``b"N"`` (no
    encryption: the client goes on in clear, or gives up if it requires it)
    to a request for TLS or GSSAPI encryption, else None (pass it on)."""
    return b"N" if is_encryption_request(frame) else None


def mqtt(*, max_frame: int = MQTT_MAX_REMAINING) -> FramingConfig:
    """MQTT 3.1.1 and 5 control packets, both directions: a fixed-header byte,
    the remaining length (a varint of at most 4 bytes, minimally encoded),
    then that many bytes.  ``max_frame`` limits the remaining length: by
    default the protocol's own limit, :data:`MQTT_MAX_REMAINING`
    (268,435,455; a relay streams a packet's body through), at most that."""
    return FramingConfig(
        "varint",
        length_offset=1,
        max_length_bytes=4,
        include_header=True,
        max_frame=min(max_frame, MQTT_MAX_REMAINING),
    )


def protobuf_delimited(
    *, max_frame: int = DEFAULT_MAX_FRAME, max_length_bytes: int = 5
) -> FramingConfig:
    """Length-delimited protobuf messages (``writeDelimitedTo``,
    ``parseDelimitedFrom``; Netty's ``ProtobufVarint32FrameDecoder``): a varint
    length of at most ``max_length_bytes`` (5: a 32-bit length), then the
    message.  Frames are the messages alone."""
    return FramingConfig("varint", max_length_bytes=max_length_bytes, max_frame=max_frame)
