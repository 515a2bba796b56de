"""A line-oriented client for the echo service: ``trioecho client``.

Reads lines from standard input, sends each one (without its line ending) as
a message, and prints the greeting and every reply.  ``q`` ends the session,
as does the end of input, so it works both interactively and in a pipe::

    printf 'a\\nb\\nq\\n' | trioecho client
"""

from __future__ import annotations

import os
import ssl
import sys
from typing import TextIO

import trio

from trioecho.errors import GreetingError, TLSHandshakeError, TrioEchoError
from trioecho.framing.config import FramingConfig
from trioecho.logtext import format_address
from trioecho.services.echo import QUIT
from trioecho.services.echo_session import GREETING
from trioecho.services.greeting import expect_greeting
from trioecho.stream.connect import open_message_stream

__all__ = ["LineReader", "run_client"]


def _show(message: bytes) -> str:
    return message.decode("utf-8", errors="backslashreplace")


def _strip_line_ending(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


class LineReader:
    """Lines from a file descriptor, read in a worker thread.

    ``os.read`` holds no lock, so a read abandoned by Ctrl-C cannot block the
    interpreter's shutdown (a ``BufferedReader`` in that thread would: "could
    not acquire lock for <stdin>", a fatal error).
    """

    def __init__(self, fd: int, chunk: int = 65536) -> None:
        self._fd = fd
        self._chunk = chunk
        self._buffer = b""
        self._eof = False

    async def readline(self) -> bytes:
        """The next line with its ending, or what is left at the end (b"" once done)."""
        while b"\n" not in self._buffer and not self._eof:
            data = await trio.to_thread.run_sync(
                os.read, self._fd, self._chunk, abandon_on_cancel=True
            )
            self._eof = not data
            self._buffer += data
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line


async def run_client(
    host: str,
    port: int,
    framing: FramingConfig,
    *,
    stdin: int | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> int:
    """Talk to the service at ``host``:``port`` (over TLS with ``ssl_context``,
    checking the certificate against ``server_name``, default ``host``),
    reading lines from the file descriptor ``stdin``; return the exit code:
    0 after ``q`` or the end of input, 1 if the connection failed or broke."""
    lines = LineReader(stdin if stdin is not None else sys.stdin.fileno())
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    where = format_address((host, port))
    try:
        stream = await open_message_stream(
            host, port, framing=framing, ssl_context=ssl_context, server_hostname=server_name
        )
    except OSError as exc:
        print(f"trioecho client: cannot connect to {where}: {exc.strerror or exc}", file=stderr)
        return 1
    except TLSHandshakeError as exc:
        print(f"trioecho client: TLS handshake with {where} failed: {exc.reason}", file=stderr)
        return 1
    async with stream:
        try:
            await expect_greeting(stream, framing)
            print(_show(GREETING), file=stdout, flush=True)
            while True:
                line = await lines.readline()
                if not line:
                    return 0
                message = _strip_line_ending(line)
                await stream.send_message(message)
                if message == QUIT:
                    return 0
                print(_show(await stream.receive_message()), file=stdout, flush=True)
        except GreetingError as exc:
            print(f"trioecho client: {where}: {exc}", file=stderr)
            return 1
        except trio.EndOfChannel:
            print(f"trioecho client: {where} closed the connection", file=stderr)
            return 1
        except (TrioEchoError, OSError, trio.BrokenResourceError) as exc:
            print(f"trioecho client: {type(exc).__name__}: {exc}", file=stderr)
            return 1
