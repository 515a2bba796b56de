"""A server on trioecho: greets each client, then answers every message in capitals.

    python examples/shout_server.py [PORT]       # default 9999; 0: a free port

It speaks length-prefixed frames (4-byte big-endian length, then the
payload), so ``trioecho client --framing len --port PORT`` talks to it, and
so does ``examples/shout_client.py``.  It prints ``listening on HOST:PORT``
once it serves; Ctrl-C or SIGTERM stops it gracefully (connections finish
what they received), and a port already in use is a one-line error, exit 1.
"""

from __future__ import annotations

import signal
import sys

import trio

from trioecho import BaseRequestHandler, FramingConfig, MessageServer

GREETING = "你好欢迎你".encode()  # what trioecho's client expects first


class Shout(BaseRequestHandler):
    async def setup(self) -> None:  # then handle(), then finish(), as in socketserver
        print("connected:", self.client_address, flush=True)
        await self.request.send_message(GREETING)

    def respond(self, message: bytes) -> bytes | None:  # each message's reply, served inline
        if message == b"q":
            self.end_session()  # close once this reply (none) is sent
            return None
        return message.upper()


async def main(port: int) -> int:
    server = MessageServer(Shout, host="127.0.0.1", port=port, framing=FramingConfig("len"))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                listeners = await nursery.start(server.serve)  # bound and serving
            except OSError as exc:
                print(
                    f"shout_server: cannot listen on port {port}: {exc.strerror}", file=sys.stderr
                )
                return 1
            host, bound = listeners[0].socket.getsockname()[:2]
            print(f"listening on {host}:{bound}", flush=True)
            async for _ in signals:  # Ctrl-C, SIGTERM: drain, then stop
                server.shutdown()
                break
            await server.wait_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 9999))
