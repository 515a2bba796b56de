"""A line-oriented client for the echo service: ``trioecho client``.

Reads lines from standard input, sends each one (without its line ending) as
a message, and prints the greeting and every reply.  ``q`` ends the session,
as does the end of input, so it works both interactively and in a pipe::

    printf 'a\\nb\\nq\\n' | trioecho client
"""

from __future__ import annotations

import ssl
import sys
from typing import BinaryIO, TextIO

import trio

from ._errors import TLSHandshakeError
from .echo import QUIT
from .framing import FramingConfig
from .server import RAW_RECEIVE_SIZE, format_address
from .stream import DEFAULT_RECEIVE_SIZE, MessageStream
from .tls import do_handshake

__all__ = ["run_client"]


def _show(message: bytes) -> str:
    return message.decode("utf-8", errors="backslashreplace")


def _strip_line_ending(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


async def run_client(
    host: str,
    port: int,
    framing: FramingConfig,
    *,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> int:
    """Talk to the service at ``host``:``port`` (over TLS with ``ssl_context``,
    checking the certificate against ``server_name``, default ``host``);
    return the process exit code."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    where = format_address((host, port))
    transport: trio.abc.Stream
    try:
        transport = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        print(f"trioecho client: cannot connect to {where}: {exc.strerror or exc}", file=stderr)
        return 1
    if ssl_context is not None:
        tls = trio.SSLStream(transport, ssl_context, server_hostname=server_name or host)
        try:
            await do_handshake(tls)
        except TLSHandshakeError as exc:
            print(f"trioecho client: TLS handshake with {where} failed: {exc.reason}", file=stderr)
            return 1
        transport = tls
    receive_size = RAW_RECEIVE_SIZE if framing.framing == "raw" else DEFAULT_RECEIVE_SIZE
    async with MessageStream(transport, framing.new_framer(), receive_size=receive_size) as stream:
        try:
            print(_show(await stream.receive_message()), file=stdout, flush=True)
            while True:
                line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
                if not line:
                    return 0
                message = _strip_line_ending(line)
                await stream.send_message(message)
                if message == QUIT:
                    return 0
                print(_show(await stream.receive_message()), file=stdout, flush=True)
        except trio.EndOfChannel:
            print(f"trioecho client: {where} closed the connection", file=stderr)
            return 1
        except Exception as exc:
            print(f"trioecho client: {type(exc).__name__}: {exc}", file=stderr)
            return 1
