"""A client on trioecho's client API: send messages, print the replies.

    python examples/shout_client.py PORT hello world

Connects with ``trioecho.open_message_stream`` (length-prefixed frames, as
``examples/shout_server.py`` and ``trioecho --framing len`` speak), prints
the greeting, then each message's reply, and says ``q`` to end.  With
``--tls CA_FILE`` it speaks TLS, checking the certificate against
``localhost``.
"""

from __future__ import annotations

import argparse
import sys

import trio

from trioecho import FramingConfig, TrioEchoError, open_message_stream
from trioecho.io.tls import client_context


async def main(port: int, messages: list[str], cafile: str | None) -> int:
    try:
        stream = await open_message_stream(
            "localhost",
            port,
            framing=FramingConfig("len"),
            ssl_context=client_context(cafile) if cafile else None,
        )
    except (OSError, TrioEchoError) as exc:
        print(f"shout_client: cannot connect to port {port}: {exc}", file=sys.stderr)
        return 1
    async with stream:
        greeting = await stream.receive_message()
        print(greeting.decode())
        for text in messages:
            await stream.send_message(text.encode())
            print(f"{text} -> {(await stream.receive_message()).decode()}")
        await stream.send_message(b"q")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("messages", nargs="*", default=["hello", "world"])
    parser.add_argument("--tls", metavar="CA_FILE", help="speak TLS, trusting this CA (PEM)")
    args = parser.parse_args()
    try:
        sys.exit(trio.run(main, args.port, args.messages, args.tls))
    except KeyboardInterrupt:
        sys.exit(130)
