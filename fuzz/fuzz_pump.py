#!/usr/bin/env python3
"""Differential fuzzing: the C pump against a Python twin of its service (atheris).

Each input picks a framing configuration (length prefix, lines or raw, with
their limits, suffix and stop message), the read size, the turn's bytes,
the pump's output buffer, socket buffer sizes (often tiny, so sends come up
short), a chunking of the bytes to write (a chunk may be repeated, to make
frames and replies larger than every buffer) and an ending: the client's
end of input, a reset (it closes with replies unread), or none.

The same client (this harness, synchronously) drives two AF_UNIX socket
pairs with the same writes and reads:

* one served by the C pump (:class:`~trioecho.io.pump.Pump` over an
  edge-triggered epoll set, the connection's state in a
  :class:`~trioecho.io.pump.PumpedConnection`, the C echo session), with
  what the hub and ``MessageStream.run_session`` do around it: update the
  account and owe a turn (ACCOUNT), owe a turn (AGAIN), and on a hand-back
  move the unfinished message back to the session, send the rest of a
  short send, end the session (END_OF_INPUT, ENDED) or fail (SOCKET_ERROR);
* one served by the twin: the Python inline step's loop
  (``SocketTransport.serve_ready``: reads of at most the read size and
  what is left of the turn's bytes, one send per read) with the
  pure-Python echo session, pausing where the pump's contract (``pump.h``)
  pauses: after a read that changed the unfinished message's size (the
  account, then a turn owed), so that both sides read the same bytes at
  the same places.

After every settled step it compares what the client received, the
session's ending (stop, error text, socket errno), the counters (messages
and bytes, in and out) and the unfinished message's size, and crashes on
the first difference.  Run it with the C extensions built with ASan +
UBSan (``fuzz/run SECONDS JOBS pump`` does the build) so that memory
errors in the C code crash too.

    fuzz/run 60 1 pump
    python fuzz/fuzz_pump.py -runs=1000 fuzz/corpus-pump
"""

from __future__ import annotations

import select
import socket
import sys
from dataclasses import dataclass
from typing import Any

import atheris

from trioecho import FramingConfig
from trioecho.io.pump import (
    ACCOUNT,
    END_OF_INPUT,
    ENDED,
    EVENT,
    PUMP_AGAIN,
    PUMP_WAIT,
    SHORT_SEND,
    SOCKET_ERROR,
    Pump,
    PumpedConnection,
)
from trioecho.services.echo_session import EchoOutput, EchoSession

REGISTER = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET  # the hub's
INPUT_EDGE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
INPUT_ENDS = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
MAX_EVENTS = 8
SETTLE_LIMIT = 200_000  # steps without settling: a livelock

DELIMITERS = [b"\n", b"\r\n", b"\0", b"aa", b"aba"]
SUFFIXES = [b"\xe5\xa5\xbd", b"", b"!", b"\n"]
STOPS = [b"q", b"", b"qq"]


@dataclass(frozen=True)
class Params:
    config: FramingConfig
    suffix: bytes
    stop: bytes
    read_size: int
    turn_bytes: int
    out_cap: int
    server_sndbuf: int  # 0: the default
    client_sndbuf: int


def config_from(fdp: atheris.FuzzedDataProvider) -> tuple[FramingConfig, bytes, bytes]:
    """A configuration the pump serves (no discard mode: that is the twin's alone)."""
    kind = fdp.ConsumeIntInRange(0, 2)
    suffix = fdp.PickValueInList(SUFFIXES)
    stop = fdp.PickValueInList(STOPS)
    if kind == 0:
        length_bytes = fdp.PickValueInList([1, 2, 4, 8])
        limit = (1 << (8 * length_bytes)) - 1 - len(suffix)
        max_frame = min(limit, fdp.ConsumeIntInRange(0, 1 << fdp.ConsumeIntInRange(0, 17)))
        config = FramingConfig(
            "len",
            length_bytes=length_bytes,
            byteorder=fdp.PickValueInList(["big", "little"]),
            max_frame=max_frame,
        )
    elif kind == 1:
        config = FramingConfig(
            "line",
            delimiter=fdp.PickValueInList(DELIMITERS),
            strip_cr=fdp.ConsumeBool(),
            max_frame=fdp.ConsumeIntInRange(0, 1 << fdp.ConsumeIntInRange(0, 17)),
        )
    else:
        config = FramingConfig("raw")
    return config, suffix, stop


def params_from(fdp: atheris.FuzzedDataProvider) -> Params:
    config, suffix, stop = config_from(fdp)
    return Params(
        config,
        suffix,
        stop,
        read_size=fdp.PickValueInList([1, 2, 3, 7, 64, 1024, 65536]),
        turn_bytes=fdp.PickValueInList([1, 2, 5, 64, 1000, 1 << 20]),
        out_cap=fdp.PickValueInList([64, 65, 100, 4096, 262144]),
        server_sndbuf=fdp.PickValueInList([0, 1, 4096, 65536]),
        client_sndbuf=fdp.PickValueInList([0, 1, 4096]),
    )


def describe(output: EchoOutput) -> tuple[Any, ...]:
    """A session's ending as plain values."""
    if output.error is not None:
        return (type(output.error).__name__, str(output.error))
    return ("stopped",) if output.stopped else ("end of input",)


def drain(sock: socket.socket) -> bytes:
    """Everything ``sock`` can read now."""
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


class Side:
    """One served connection over a socket pair: the server's end in an
    epoll set, the client's driven by the harness.  ``parked``: the hub
    serves it (else its task holds it: sends what it owes, serves again)."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.server, self.client = socket.socketpair()
        for sock, size in (
            (self.server, params.server_sndbuf),
            (self.client, params.client_sndbuf),
        ):
            if size:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            sock.setblocking(False)
        self.fd = self.server.fileno()
        self.epoll = select.epoll()
        self.epoll.register(self.fd, REGISTER)
        self.parked = False
        self.owed = False  # owed a turn of the hub
        self.fresh = True  # handed back since it was last served
        self.input_ended = False
        self.unsent = b""  # the task's to send
        self.unsent_replies = 0  # ... and the replies in it not counted yet
        self.ending: tuple[Any, ...] | None = None
        self.done = False  # the session is over and its task has sent what it owed
        self.counts = [0, 0, 0, 0]  # messages received, sent; bytes received, sent
        self.received = bytearray()  # what the client got
        self.pending = b""  # what the client has still to write
        self.client_open = True

    def close(self) -> None:
        self.epoll.close()
        self.server.close()
        self.client.close()

    # -- the server's side, per implementation --

    def buffered(self) -> int:
        raise NotImplementedError

    def hub_turn(self) -> None:
        raise NotImplementedError

    def serve_now(self) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        """Bring in counts kept elsewhere (the pump's)."""

    # -- common --

    def task_step(self) -> None:
        """The connection's task: send what it owes, then end or serve again."""
        if self.parked or self.done:
            return
        if self.unsent:
            try:
                sent = self.server.send(self.unsent)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.fail(exc.errno)
                return
            self.counts[3] += sent
            self.unsent = self.unsent[sent:]
            if self.unsent:
                return
            self.counts[1] += self.unsent_replies
            self.unsent_replies = 0
        if self.ending is not None:
            self.done = True
            return
        self.serve_now()

    def fail(self, code: int | None) -> None:
        self.ending = ("socket error", code)
        self.unsent = b""
        self.done = True

    def client_step(self, read: bool) -> None:
        if not self.client_open:
            return
        if self.pending:
            try:
                sent = self.client.send(self.pending)
            except BlockingIOError:
                sent = 0
            self.pending = self.pending[sent:]
        if read:
            self.received += drain(self.client)

    def snapshot(self) -> tuple[Any, ...]:
        self.sync()
        return (
            len(self.received),
            len(self.pending),
            tuple(self.counts),
            self.parked,
            self.owed,
            len(self.unsent),
            self.ending,
            self.done,
            self.buffered(),
        )

    def settle(self, read: bool = True) -> tuple[Any, ...]:
        """Step the client, the hub and the task until nothing changes."""
        state = self.snapshot()
        for _ in range(SETTLE_LIMIT):
            self.client_step(read)
            self.hub_turn()
            self.task_step()
            now = self.snapshot()
            if now == state:
                return now
            state = now
        raise AssertionError(f"never settled: {self.params} {state}")

    def end_input(self) -> None:
        """The client's end of input: what it could not write yet is dropped."""
        self.pending = b""
        self.client.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """Close the client with replies unread: the server's socket errs."""
        for _ in range(2):
            self.client_step(read=False)
            self.hub_turn()
            self.task_step()
        self.client.close()
        self.client_open = False


class PumpSide(Side):
    """Served by the C pump, with what the hub and the stream do around it."""

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self.session = EchoSession(
            params.config, suffix=params.suffix, stop=params.stop, implementation="c"
        )
        handle = self.session.pump_handle()
        assert handle is not None
        address, owner, raw = handle
        self.conn = PumpedConnection(address, owner, raw, params.read_size)
        self.pump = Pump(self.epoll.fileno(), MAX_EVENTS, params.turn_bytes, params.out_cap)

    def close(self) -> None:
        self.pump.detach(self.fd)
        super().close()

    def buffered(self) -> int:
        return self.session.buffered if self.fresh else self.conn.buffered

    def sync(self) -> None:
        received, sent = self.conn.take_message_counts()
        self.counts[0] += received
        self.counts[1] += sent
        received, sent = self.conn.take_byte_counts()
        self.counts[2] += received
        self.counts[3] += sent

    def serve_now(self) -> None:
        """``SocketTransport.serve_pumped``: attach, serve once now."""
        if self.fresh:
            self.conn.set_input(self.session.take_input())
            self.fresh = False
        if self.input_ended:
            self.conn.mark_input_ended()
        self.pump.attach(self.fd, self.conn)
        outcome = self.pump.serve(self.fd)
        if outcome != PUMP_WAIT:
            self.pump.detach(self.fd)
        if outcome == ACCOUNT:
            self.conn.accounted = self.conn.buffered
            outcome = PUMP_AGAIN
        if outcome == PUMP_WAIT:
            self.parked = True
        elif outcome != PUMP_AGAIN:  # AGAIN: the task serves again at its next step
            self.hand_back(outcome)

    def hub_turn(self) -> None:
        """``ReadinessHub.run`` and ``_pumped``, for this one connection."""
        owed = [self.fd] if self.owed else []
        self.owed = False
        for fd, mask, outcome in self.pump.turn(owed):
            assert fd == self.fd, (fd, self.fd)
            if outcome == EVENT:
                assert not self.parked, "an event for an attached connection"
                if mask & INPUT_ENDS:
                    self.input_ended = True
                continue
            assert self.parked, f"outcome {outcome} for a detached connection"
            if outcome == ACCOUNT:
                self.conn.accounted = self.conn.buffered
            if outcome in (ACCOUNT, PUMP_AGAIN):
                self.owed = True
                continue
            if mask & INPUT_ENDS:
                self.input_ended = True
            self.pump.detach(self.fd)
            self.parked = False
            self.hand_back(outcome)

    def hand_back(self, outcome: int) -> None:
        """``MessageStream._serve_pumped`` after the transport returned ``outcome``."""
        self.session.put_input(self.conn.take_input())
        self.fresh = True
        self.sync()
        if outcome == SHORT_SEND:
            self.unsent, replies = self.conn.take_unsent()
            assert replies == 0, replies
        elif outcome == END_OF_INPUT:
            self.ending = describe(self.session.feed_eof())
        elif outcome == ENDED:
            self.unsent, self.unsent_replies = self.conn.take_unsent()
            status, length = self.conn.ending
            self.ending = describe(self.session.end_pumped(status, length, self.unsent_replies))
        elif outcome == SOCKET_ERROR:
            self.fail(self.conn.error)
        else:
            raise AssertionError(f"the pump handed back with outcome {outcome}")


class TwinSide(Side):
    """Served by the Python twin with the pure-Python echo session (see the
    module docstring)."""

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self.session = EchoSession(
            params.config, suffix=params.suffix, stop=params.stop, implementation="python"
        )
        self.accounted = 0
        self.error: int | None = None  # after SOCKET_ERROR: the errno

    def buffered(self) -> int:
        return self.session.buffered

    def serve(self) -> int:
        """Read until a short read or the turn's bytes are used, answering
        and sending each read; the pump's outcome for what happened."""
        budget = self.params.turn_bytes
        while True:
            want = min(self.params.read_size, budget)
            try:
                data = self.server.recv(want)
            except BlockingIOError:
                return PUMP_WAIT
            except OSError as exc:
                self.error = exc.errno
                return SOCKET_ERROR
            if not data:
                return END_OF_INPUT
            self.counts[2] += len(data)
            output = self.session.feed(data)
            self.counts[0] += output.received
            if output.stopped or output.error is not None:
                self.unsent, self.unsent_replies = output.data, output.replies
                self.ending = describe(output)
                return ENDED
            self.counts[1] += output.replies
            if output.data:
                try:
                    sent = self.server.send(output.data)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self.error = exc.errno
                    return SOCKET_ERROR
                self.counts[3] += sent
                if sent < len(output.data):
                    self.unsent = output.data[sent:]
                    return SHORT_SEND
            if self.session.buffered != self.accounted:
                return ACCOUNT
            if len(data) < want and not self.input_ended:
                return PUMP_WAIT
            budget -= len(data)
            if budget == 0:
                return PUMP_AGAIN

    def serve_now(self) -> None:
        if self.fresh:
            self.accounted = self.session.buffered
            self.fresh = False
        outcome = self.serve()
        if outcome == ACCOUNT:
            self.accounted = self.session.buffered
            outcome = PUMP_AGAIN
        if outcome == PUMP_WAIT:
            self.parked = True
        elif outcome != PUMP_AGAIN:
            self.hand_back(outcome)

    def hub_turn(self) -> None:
        served = False  # once a turn: an edge after the owed turn waits for the next
        owed, self.owed = self.owed, False
        if owed and self.parked:
            served = True
            self.after(self.serve())
        for _, mask in self.epoll.poll(0, MAX_EVENTS):
            if mask & INPUT_ENDS:
                self.input_ended = True
            if not self.parked or not mask & INPUT_EDGE:
                continue
            if served:
                self.after(PUMP_AGAIN)
                continue
            served = True
            self.after(self.serve())

    def after(self, outcome: int) -> None:
        if outcome == PUMP_WAIT:
            return
        if outcome == ACCOUNT:
            self.accounted = self.session.buffered
        if outcome in (ACCOUNT, PUMP_AGAIN):
            self.owed = True
            return
        self.parked = False
        self.hand_back(outcome)

    def hand_back(self, outcome: int) -> None:
        self.fresh = True
        if outcome == END_OF_INPUT:
            self.ending = describe(self.session.feed_eof())
        elif outcome == SOCKET_ERROR:
            self.fail(self.error)
        # SHORT_SEND, ENDED: serve() left what the task sends


def chunks_from(fdp: atheris.FuzzedDataProvider, params: Params) -> list[bytes]:
    """The client's writes: chunks of the input, some repeated (frames and
    replies larger than the buffers), at most ``limit`` bytes in all (a few
    KiB where each read or turn takes a few bytes: every byte costs a turn)."""
    small = min(params.read_size, params.turn_bytes) < 64
    limit = 8192 if small else 200_000
    chunks = []
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        chunks.append(chunk * fdp.PickValueInList([1, 1, 1, 2, 50, 300]))
    chunks.append(fdp.ConsumeBytes(fdp.remaining_bytes()))
    writes = []
    for chunk in chunks:
        writes.append(chunk[:limit])
        limit -= len(writes[-1])
    return writes


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    params = params_from(fdp)
    ending = fdp.PickValueInList(["end of input", "reset", "none"])
    chunks = chunks_from(fdp, params)
    sides: list[Side] = [PumpSide(params), TwinSide(params)]
    try:
        traces: list[list[tuple[Any, ...]]] = [[], []]
        for side, trace in zip(sides, traces, strict=True):
            trace.append(side.settle())  # the task's first serve: parked
            for chunk in chunks:
                side.pending += chunk
                trace.append(side.settle())
            if ending == "end of input":
                side.end_input()
            elif ending == "reset":
                side.reset()
            trace.append(side.settle(read=side.client_open))
        pumped, twin = sides
        if pumped.received != twin.received or traces[0] != traces[1]:
            raise AssertionError(
                f"the pump and its twin differ: {params} ending={ending}\n"
                f" pump: {traces[0][-1]} received {bytes(pumped.received)[:200]!r}\n"
                f" twin: {traces[1][-1]} received {bytes(twin.received)[:200]!r}\n"
                f" traces: {traces}"
            )
    finally:
        for side in sides:
            side.close()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
