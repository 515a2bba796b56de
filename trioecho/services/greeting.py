"""The client's first step: read the echo service's greeting, and tell a
framing mismatch from a silent server.

The greeting's bytes are known (``你好欢迎你``), so the way a server frames
it tells which framing the server speaks: a line ends in ``\\n``, a
length-prefixed frame starts with the greeting's length in 1, 2, 4 or 8
bytes, raw framing sends the greeting alone.  :func:`expect_greeting` reads
exactly the bytes the client's framing expects (never more: the next bytes
belong to the stream), within a time bound, and raises
:class:`GreetingError` naming the framing the server seems to speak.
"""

from __future__ import annotations

import trio

from trioecho.errors import GreetingError, IdleTimeoutError
from trioecho.framing.config import FramingConfig
from trioecho.services.echo_session import GREETING
from trioecho.stream.message_stream import MessageStream

__all__ = ["DEFAULT_GREETING_TIMEOUT", "expect_greeting", "guess_framing"]

DEFAULT_GREETING_TIMEOUT = 5.0
_QUIET = 0.3  # after a mismatch: how long to collect more bytes to diagnose it
_DIAGNOSE_BYTES = 64


def guess_framing(data: bytes, greeting: bytes = GREETING) -> list[str] | None:
    """The command-line options of the framing in which ``data`` is
    ``greeting``, or None."""
    if data in (greeting + b"\n", greeting + b"\r\n"):
        return ["--framing", "line"]
    if data == greeting:
        return ["--framing", "raw"]
    if len(greeting) < 0x80 and data == bytes([len(greeting)]) + greeting:
        # A one-byte varint and a one-byte length field frame it alike.
        return ["--framing", "varint"]
    for size in (4, 2, 1, 8):
        header, rest = data[:size], data[size:]
        if rest != greeting:
            continue
        options = ["--framing", "len"] + ([] if size == 4 else ["--length-bytes", str(size)])
        if int.from_bytes(header, "big") == len(greeting):
            return options
        if int.from_bytes(header, "little") == len(greeting):
            return [*options, "--byteorder", "little"]
    return None


def _show(data: bytes) -> str:
    return repr(data[:40]) + (" ..." if len(data) > 40 else "")


async def expect_greeting(
    stream: MessageStream,
    framing: FramingConfig,
    *,
    greeting: bytes = GREETING,
    timeout: float = DEFAULT_GREETING_TIMEOUT,
) -> None:
    """Read the greeting from a fresh ``stream`` whose framing is ``framing``.

    Raises :class:`GreetingError` if other bytes come (naming the framing
    they look like), if the server closes first, or if the greeting is not
    complete within ``timeout`` seconds.
    """
    expected = framing.new_framer().encode(greeting)
    deadline = trio.current_time() + timeout
    received = b""
    closed = False
    try:
        while received != expected:
            if not expected.startswith(received):
                received += await _collect(stream, received)
                break
            data = await stream.receive_raw(len(expected) - len(received), deadline)
            if not data:
                closed = True
                break
            received += data
    except IdleTimeoutError:
        pass
    if received == expected and framing.framing == "raw":
        # Raw framing has no ending to check: a server that sends more (a
        # line's delimiter) before the client says anything is not raw.
        received += await _collect(stream, received)
    if received == expected:
        return
    options = guess_framing(received, greeting)
    if options is not None:
        alike = (
            " (or len --length-bytes 1, which frames it alike)" if options[1] == "varint" else ""
        )
        raise GreetingError(
            f"the server's greeting is not in {framing.framing} framing "
            f"({_show(received)}): the server speaks {options[1]} framing{alike}? "
            f"try {' '.join(options)}",
            options=options,
        )
    if not received and closed:
        raise GreetingError("no greeting: the server closed the connection (a trioecho service?)")
    if not received:
        silent = f"no greeting: the server sent nothing within {timeout:g}s"
        if isinstance(stream.transport_stream, trio.SSLStream):
            raise GreetingError(f"{silent} (is it a trioecho service?)")
        raise GreetingError(
            f"{silent}: a TLS server waits for the client to speak first "
            "(try --tls), else is it a trioecho service?"
        )
    raise GreetingError(
        f"expected the greeting in {framing.framing} framing, got {_show(received)}: "
        "not a trioecho echo service?"
    )


async def _collect(stream: MessageStream, received: bytes) -> bytes:
    """More of what a mismatched server sends, for the diagnosis (bounded)."""
    more = b""
    deadline = trio.current_time() + _QUIET
    try:
        while len(received) + len(more) < _DIAGNOSE_BYTES:
            data = await stream.receive_raw(_DIAGNOSE_BYTES, deadline)
            if not data:
                break
            more += data
    except IdleTimeoutError:
        pass
    return more
