"""Sans-IO framers: split a byte stream into messages and encode messages.

TCP delivers a stream of bytes, not messages: two quick sends can arrive in one
read ("sticky packets") and one message can arrive over several reads.  A
framer fixes that.  One framer serves one connection:

* ``feed(data)`` takes the bytes of one read and returns every frame it
  completes, in order, as a list of ``bytes``.  Incomplete bytes are kept.
* ``feed_eof()`` is called when the peer closes its side; it raises
  :class:`IncompleteFrameError` if an unfinished frame is buffered.
* ``encode(payload)`` / ``encode_many(payloads)`` return the bytes to send.
  They refuse (never truncate) a payload that cannot be framed.  ``max_frame``
  limits what a framer *accepts*; what it sends is limited by the wire format
  alone (the header's width; a line must not hold its delimiter), as in
  Netty's and tokio's codecs.

Framings:

``LengthPrefixedFramer``
    an unsigned length of 1, 2, 3, 4 or 8 bytes (default 4, big endian), then
    that many payload bytes.  The length counts the payload only; zero is
    valid.  Netty's options: ``length_offset`` bytes before the length field,
    ``length_adjustment`` added to its value (-4 when it counts itself), and
    ``include_header`` to keep the bytes before the payload in each frame.  A
    length over ``max_frame`` (default 1 MiB) fails as soon as the header is
    complete, before any of the body is awaited or buffered.
``VarintFramer``
    the length as an unsigned LEB128 varint (protobuf's delimited format,
    MQTT's remaining length) of at most ``max_length_bytes``; the same
    offset and header options.  Over-long and non-minimal varints fail.
``FixedLengthFramer``
    every frame ``frame_size`` bytes.
``LineFramer``
    payloads separated by a delimiter (default ``b"\\n"``; any 1 to 8 bytes),
    or by the first to occur of up to 8 delimiters.
    One ``\\r`` before the delimiter is removed too (``strip_cr=True``, the
    default, as in Netty's and tokio's line decoders: telnet and Windows
    clients send ``\\r\\n``); ``strip_cr=False`` keeps it.  A line
    over ``max_frame`` bytes (default 64 KiB, delimiter and stripped ``\\r``
    excluded) fails as soon as it can no longer end within the limit.
    ``on_too_long="discard"`` reports the over-long line once and then drops
    it through its delimiter and carries on (Netty's discard mode).
``PhasedFramer``
    one framing for a stream's first frame, another after it (PostgreSQL's
    startup packet); see ``trioecho.framing.presets``.
``RawFramer``
    no framing: each chunk received is one message (the seed's wire format).

Errors: a frame over ``max_frame`` raises :class:`FrameTooLongError`, a
malformed header (a negative adjusted length, a bad varint)
:class:`MalformedFrameError`; their ``frames`` attribute holds the frames
completed before the bad one.  After that error the framer is broken and
raises it again on every ``feed``, except for an over-long line in discard
mode, where it keeps the bytes after the bad line: call ``feed(b"")`` to get
the frames they complete.  Bytes are never lost or reordered, and memory
stays bounded by ``max_frame`` plus the header plus one read.

Framers are not thread-safe: one framer, one task.
"""

from trioecho.framing import presets
from trioecho.framing.base import DEFAULT_MAX_FRAME, DEFAULT_MAX_LINE, FRAMINGS, Buffer, Framer
from trioecho.framing.config import FramingConfig, make_framer
from trioecho.framing.fixed import FixedLengthFramer, RawFramer
from trioecho.framing.length import LengthFieldFramer, LengthPrefixedFramer, VarintFramer
from trioecho.framing.lines import LineFramer
from trioecho.framing.phased import PhasedFramer

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_LINE",
    "FRAMINGS",
    "Buffer",
    "FixedLengthFramer",
    "Framer",
    "FramingConfig",
    "LengthFieldFramer",
    "LengthPrefixedFramer",
    "LineFramer",
    "PhasedFramer",
    "RawFramer",
    "VarintFramer",
    "make_framer",
    "presets",
]
