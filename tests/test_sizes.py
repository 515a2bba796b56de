"""Every size a server accepts is answered, on a real server process.

Valid messages whose sizes cross every internal boundary -- 0 and 1 byte,
the receive size (64 KiB), the framer's scratch space (64 KiB), the echo
session's output capacity (256 KiB, for the reply: the size where the first
release froze), and the configured ``--max-frame`` -1/0 -- go to a real
server on each of its three paths (the C echo session, ``--generic``, the
pure-Python twins) and come back byte for byte, while a second client
(the canary) keeps getting its replies within a second.
"""

from __future__ import annotations

import itertools
import socket

import pytest
from support.serverproc import Canary, connect, recv_exactly, server_process

from trioecho.framing.base import DEFAULT_MAX_FRAME
from trioecho.services.echo import GREETING, REPLY_SUFFIX
from trioecho.services.echo_session import DEFAULT_ECHO_CAPACITY
from trioecho.stream.message_stream import DEFAULT_RECEIVE_SIZE

PATHS = {
    "c": ((), None),
    "generic": (("--generic",), None),
    "python": ((), {"TRIOECHO_PUREPYTHON": "1"}),
}
LINE_MAX_FRAME = DEFAULT_ECHO_CAPACITY + 40_000
FRAMER_SCRATCH = 64 * 1024  # trioecho.framing._cframer._SCRATCH_CAPACITY


def sizes(max_frame: int, framing_bytes: int) -> list[int]:
    """Payload sizes at each boundary, -1/0/+1, up to max_frame.
    ``framing_bytes``: what a reply adds besides the suffix (header or delimiter)."""
    reply_extra = framing_bytes + len(REPLY_SUFFIX)
    points = {
        0,
        1,
        DEFAULT_RECEIVE_SIZE,
        DEFAULT_RECEIVE_SIZE - framing_bytes,  # the whole frame fills one read
        FRAMER_SCRATCH,
        DEFAULT_ECHO_CAPACITY - reply_extra,  # the reply fills the output buffer
        max_frame,
    }
    found = {p + d for p, d in itertools.product(points, (-1, 0, 1))}
    return sorted(s for s in found if 0 <= s <= max_frame)


def encode(framing: str, payload: bytes) -> bytes:
    if framing == "len":
        return len(payload).to_bytes(4, "big") + payload
    return payload + b"\n"


def exchange(sock: socket.socket, framing: str, size: int) -> None:
    message = bytes([65 + size % 26]) * size
    sock.sendall(encode(framing, message))
    expected = encode(framing, message + REPLY_SUFFIX)
    reply = recv_exactly(sock, len(expected))
    assert reply == expected, f"{framing} {size}: {len(reply)} bytes back"


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("framing", ["len", "line"])
def test_every_size_up_to_max_frame_is_answered(framing: str, path: str) -> None:
    options, env = PATHS[path]
    max_frame = DEFAULT_MAX_FRAME if framing == "len" else LINE_MAX_FRAME
    server_options = ["--framing", framing, *options]
    if framing == "line":
        server_options += ["--max-frame", str(max_frame)]
    with server_process(*server_options, env=env) as server:
        canary = Canary(server.port, framing, stall=1.0)
        with connect(server.port, timeout=20) as sock:
            assert recv_exactly(sock, len(encode(framing, GREETING))) == encode(framing, GREETING)
            every = sizes(max_frame, 4 if framing == "len" else 1)
            assert 262_138 in every or framing == "line"  # the first release froze here
            for size in every:
                exchange(sock, framing, size)
            # and all of them at once, as one pipelined burst
            sock.sendall(b"".join(encode(framing, bytes([97 + s % 26]) * s) for s in every))
            for size in every:
                expected = encode(framing, bytes([97 + size % 26]) * size + REPLY_SUFFIX)
                assert recv_exactly(sock, len(expected)) == expected
            # one byte over the limit: refused, the connection closed, the server fine
            sock.sendall(encode(framing, b"x" * (max_frame + 1)))
            assert recv_exactly(sock, 1) == b""
        canary.check()
        server.wait_for_log("FrameTooLongError")
        assert not [line for line in server.log if "Traceback" in line or "handler raised" in line]
