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

With ``TRIOECHO_FUZZ_PUMP=read`` (``fuzz/run SECONDS JOBS pump-read``) it
fuzzes the pump's READ kind instead (:meth:`PumpedConnection.reading`):
one to three connections on one pump, each reading for Python (``INPUT``)
or split by the C length framer (``MESSAGES``), with a length-family
configuration of a small ``max_frame``, streams of valid frames (sizes 0,
1, around ``max_frame``), bad headers, garbage and truncated frames, cut
into random writes, tiny read sizes, turn bytes and inboxes (down to 1),
Python answering with :meth:`PumpedConnection.reply` (short sends, the
rest sent by the task) and the client's end of input, a reset or none.
The hub's and the stream's part is played as ``ReadinessHub`` and
``MessageStream._serve_pumped_reads`` play it.  The twins: the bytes the
client wrote (``INPUT``: delivered in order, none lost or repeated, the end
of the input only after all of them) and the pure-Python framer's
``feed()`` over the same bytes (``MESSAGES``: the same frames; where it
raises, the pump ends at the same bad header, holding the bytes from it
on, and the C framer given them back raises the same error).

    fuzz/run 60 1 pump-read
    TRIOECHO_FUZZ_PUMP=read python fuzz/fuzz_pump.py -runs=1000 fuzz/corpus-pump-read
"""

from __future__ import annotations

import os
import select
import socket
import sys
from dataclasses import dataclass
from typing import Any

import atheris

from trioecho import FramingConfig, FramingError, make_framer
from trioecho.io.pump import (
    ACCOUNT,
    END_OF_INPUT,
    ENDED,
    EVENT,
    INPUT,
    INPUT_MORE,
    MESSAGES,
    MESSAGES_MORE,
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


def socket_pair(server_sndbuf: int, client_sndbuf: int) -> tuple[socket.socket, socket.socket]:
    """A non-blocking socket pair, the server's end first, each end with
    the send buffer given (0: the kernel's)."""
    server, client = socket.socketpair()
    for sock, size in ((server, server_sndbuf), (client, client_sndbuf)):
        if size:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        sock.setblocking(False)
    return server, client


class Side:
    """One served connection over a socket pair: the server's end in an
    epoll set, the client's driven by the harness.  ``parked``: the hub
    serves it (else its task holds it: sends what it owes, serves again)."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.server, self.client = socket_pair(params.server_sndbuf, params.client_sndbuf)
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


# -- the READ kind: the pump reads for Python ----------------------------------
#
# Its twins are the bytes the client wrote (INPUT: delivered in order, none
# lost or repeated, the end of the input only after the last of them) and
# the pure-Python framer's feed() over the same bytes (MESSAGES: the same
# frames, and where feed() raises, the pump stops at the same header).

READ_SETTLE_LIMIT = 100_000  # steps without settling: a livelock
READ_CONNECTIONS = 3  # connections served by one pump, at most
REPLIES = ["none", "echo", "double"]  # what Python answers each read (or its messages) with


@dataclass(frozen=True)
class ReadParams:
    framing: dict[str, Any]  # make_framer's arguments (the length family)
    read_size: int
    turn_bytes: int
    inbox_cap: int
    out_cap: int  # the inbox shrinks back to it after a turn
    max_events: int
    server_sndbuf: int  # 0: the default
    client_sndbuf: int


def read_framing_from(fdp: atheris.FuzzedDataProvider) -> dict[str, Any]:
    """A length-family configuration with a small ``max_frame``."""
    framing = fdp.PickValueInList(["len", "len-field", "varint", "fixed"])
    max_frame = fdp.ConsumeIntInRange(0, 1 << fdp.ConsumeIntInRange(0, 9))
    if framing == "len":
        return {
            "framing": "len",
            "length_bytes": fdp.PickValueInList([1, 2, 4]),
            "byteorder": fdp.PickValueInList(["big", "little"]),
            "max_frame": max_frame,
        }
    if framing == "len-field":
        return {
            "framing": "len",
            "length_bytes": fdp.PickValueInList([1, 2, 3, 4, 8]),
            "byteorder": fdp.PickValueInList(["big", "little"]),
            "max_frame": max_frame,
            "length_offset": fdp.ConsumeIntInRange(0, 4),
            "length_adjustment": fdp.ConsumeIntInRange(-9, 9),
            "include_header": fdp.ConsumeBool(),
        }
    if framing == "varint":
        return {
            "framing": "varint",
            "max_length_bytes": fdp.ConsumeIntInRange(1, 10),
            "max_frame": max_frame,
            "length_offset": fdp.ConsumeIntInRange(0, 4),
            "include_header": fdp.ConsumeBool(),
        }
    return {"framing": "fixed", "frame_size": max(1, max_frame)}


def read_params_from(fdp: atheris.FuzzedDataProvider) -> ReadParams:
    return ReadParams(
        read_framing_from(fdp),
        read_size=fdp.PickValueInList([1, 2, 3, 7, 64, 65536]),
        turn_bytes=fdp.PickValueInList([1, 2, 5, 64, 1000, 1 << 20]),
        inbox_cap=fdp.PickValueInList([1, 2, 3, 5, 64, 4096, 1 << 20]),
        out_cap=fdp.PickValueInList([64, 65, 100, 4096]),
        max_events=fdp.PickValueInList([1, 2, 8]),
        server_sndbuf=fdp.PickValueInList([0, 1, 4096]),
        client_sndbuf=fdp.PickValueInList([0, 1, 4096]),
    )


def max_frame_of(framing: dict[str, Any]) -> int:
    return int(framing.get("max_frame", framing.get("frame_size", 0)))


def body(size: int, seed: int) -> bytes:
    """``size`` bytes, each frame's different (a misplaced split shows)."""
    return bytes((seed + 7 * i) & 0xFF for i in range(size))


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def frame(framing: dict[str, Any], size: int, seed: int) -> bytes:
    """The frame whose header announces a payload of ``size`` bytes (for a
    fixed size: ``frame_size`` bytes), payload included."""
    if framing["framing"] == "fixed":
        return body(framing["frame_size"], seed)
    before = body(framing.get("length_offset", 0), seed ^ 0x55)
    if framing["framing"] == "varint":
        return before + varint(size) + body(size, seed)
    width: int = framing["length_bytes"]
    value: int = (size - framing.get("length_adjustment", 0)) % (1 << (8 * width))
    return before + value.to_bytes(width, framing["byteorder"]) + body(size, seed)


def bad_header(framing: dict[str, Any], fdp: atheris.FuzzedDataProvider) -> bytes:
    """A header the framer refuses (where the framing has one): a length
    over ``max_frame``, a negative length, a varint too long or not minimal."""
    if framing["framing"] == "fixed":
        return b""
    before = body(framing.get("length_offset", 0), 0x33)
    if framing["framing"] == "varint":
        field: bytes = fdp.PickValueInList(
            [
                b"\x80" * framing["max_length_bytes"] + b"\x01",  # too long
                b"\x81\x00",  # not minimal
                varint(framing["max_frame"] + 1),
                b"\xff" * 9 + b"\x02",  # over 64 bits
            ]
        )
        return before + field
    width: int = framing["length_bytes"]
    adjustment: int = framing.get("length_adjustment", 0)
    value: int = fdp.PickValueInList([framing["max_frame"] + 1 - adjustment, -1 - adjustment, -1])
    return before + (value % (1 << (8 * width))).to_bytes(width, framing["byteorder"])


def read_stream_from(fdp: atheris.FuzzedDataProvider, framing: dict[str, Any], limit: int) -> bytes:
    """The bytes one client writes: valid frames of sizes 0, 1 and around
    ``max_frame``, bad headers, garbage, truncated frames, repeats."""
    max_frame = max_frame_of(framing)
    pieces: list[bytes] = []
    total = 0
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        total += len(pieces[-1]) if pieces else 0
        if total >= limit:
            break
        kind = fdp.ConsumeIntInRange(0, 5)
        seed = fdp.ConsumeIntInRange(0, 255)
        if kind == 0:
            sizes = [0, 1, max(0, max_frame - 1), max_frame, seed % (max_frame + 1)]
            pieces.append(frame(framing, fdp.PickValueInList(sizes), seed))
        elif kind == 1:
            pieces.append(bad_header(framing, fdp))
        elif kind == 2:
            pieces.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 12)))
        elif kind == 3:
            whole = frame(framing, seed % (max_frame + 1), seed)
            pieces.append(whole[: fdp.ConsumeIntInRange(0, len(whole))])
        elif kind == 4 and pieces:
            times = fdp.PickValueInList([2, 10, 100])
            pieces.append(pieces[-1] * min(times, 1 + (limit - total) // (1 + len(pieces[-1]))))
        else:
            pieces.append(frame(framing, max_frame + fdp.ConsumeIntInRange(1, 3), seed))
    return b"".join(pieces)[:limit]


def read_chunks_from(fdp: atheris.FuzzedDataProvider, stream: bytes) -> list[bytes]:
    """``stream`` cut into the client's writes."""
    chunks = []
    rest = stream
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        size = fdp.PickValueInList([0, 1, 2, 3, 5, 17, 64, 500, 4096])
        chunks.append(rest[:size])
        rest = rest[size:]
    chunks.append(rest)
    return chunks


def describe_error(exc: FramingError) -> tuple[Any, ...]:
    """A framing error as plain values (its frames apart)."""
    return (
        type(exc).__name__,
        str(exc),
        getattr(exc, "limit", None),
        getattr(exc, "length", None),
        getattr(exc, "value", None),
    )


@dataclass
class Twin:
    """What the pure-Python framer makes of ``data``: its frames, then either
    the error and where its bad header starts, or the unfinished frame's
    size and what its end of input says."""

    frames: list[bytes]
    error: tuple[Any, ...] | None
    header_at: int  # where the bad header starts (error), or the unfinished frame
    eof: tuple[Any, ...] | None


def python_framer(framing: dict[str, Any]) -> Any:
    return make_framer(**framing, implementation="python")


def raises_at(framing: dict[str, Any], data: bytes) -> bool:
    try:
        python_framer(framing).feed(data)
    except FramingError:
        return True
    return False


def twin_of(framing: dict[str, Any], data: bytes) -> Twin:
    framer = python_framer(framing)
    try:
        frames = framer.feed(data)
    except FramingError as exc:
        # The shortest prefix it raises for, by bisection: the byte that
        # completes the bad header; its start is where that prefix's
        # unfinished frame (held before that byte) started.
        low, high = 0, len(data)  # feed(data[:low]) does not raise, feed(data[:high]) does
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if raises_at(framing, data[:middle]) else (middle, high)
        before = python_framer(framing)
        before.feed(data[:low])
        return Twin(exc.frames, describe_error(exc), low - before.buffered, None)
    eof: tuple[Any, ...] | None = None
    try:
        framer.feed_eof()
    except FramingError as exc:
        eof = describe_error(exc)
    return Twin(frames, None, len(data) - framer.buffered, eof)


def drain_server(sock: socket.socket) -> bytes:
    """What is left to read on the server's socket (to its end, or an error)."""
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


class ReadConn:
    """One connection the pump reads for Python, over a socket pair: what
    ``MessageStream._serve_pumped_reads`` and the hub do around it (the
    ``respond`` session's step: answer what was read, or the messages split,
    with ``reply``), the client's writes, and what was delivered."""

    def __init__(
        self,
        params: ReadParams,
        pump: Pump,
        epoll: select.epoll,
        split: bool,
        reply: str,
        chunks: list[bytes],
        ending: str,
    ) -> None:
        self.params = params
        self.pump = pump
        self.split = split
        self.reply_mode = reply
        self.chunks = chunks
        self.ending_kind = ending
        self.server, self.client = socket_pair(params.server_sndbuf, params.client_sndbuf)
        self.fd = self.server.fileno()
        self.epoll = epoll
        epoll.register(self.fd, REGISTER)
        self.framer: Any = None
        if split:
            # The session's framer, whose C scanner the pump splits with.
            self.framer = make_framer(**params.framing, implementation="c")
            state = self.framer.splitting_state()
            assert state is not None, params.framing
            scanner, held = state
            self.framer.restore_splitting(held)
            self.conn = PumpedConnection.reading(params.read_size, scanner.address, scanner)
        else:
            self.conn = PumpedConnection.reading(params.read_size)
        self.attached = False  # the pump serves it (else its task holds it)
        self.parked = False
        self.owed = False
        self.fresh = True  # handed back since it was last served
        self.input_ended = False
        self.unsent = b""  # the task's to send
        self.ending: tuple[Any, ...] | None = None
        self.done = False
        self.written = bytearray()  # what the client wrote
        self.pending = b""  # ... and has still to write
        self.client_open = True
        self.received = bytearray()  # what the client got
        self.delivered = bytearray()  # INPUT: the bytes read for Python
        self.messages: list[bytes] = []  # MESSAGES: the messages split
        self.replied = bytearray()  # what Python answered, in order
        self.reply_failed = False
        self.sent_by_task = 0
        self.held = b""  # the unfinished message at the hand-back
        self.bytes_in = 0
        self.bytes_out = 0

    def __str__(self) -> str:
        return (
            f" split={self.split} reply={self.reply_mode} ending={self.ending_kind}"
            f" -> {self.ending}\n written {bytes(self.written)[:400]!r}\n"
            f" messages {self.messages[:20]!r}\n held {self.held[:200]!r}\n"
            f" delivered {bytes(self.delivered)[:400]!r}"
        )

    def close(self) -> None:
        self.pump.detach(self.fd)
        self.server.close()
        self.client.close()

    # -- what Python does with the pump's outcomes --

    def answer(self, data: bytes | list[bytes]) -> int:
        """The step: take what was read (or split), send the reply from C;
        the reply's outcome (PUMP_WAIT: all sent)."""
        if isinstance(data, list):
            assert self.split, "messages for a connection that does not split"
            assert data, "MESSAGES without messages"
            self.messages += data
            self.conn.accounted = self.conn.buffered  # as _SessionRun.answer does
            read = b"".join(data)
        else:
            assert not self.split, "raw input for a connection that splits"
            assert data, "INPUT without bytes"
            self.delivered += data
            read = data
        wire = {"none": b"", "echo": read, "double": read + read}[self.reply_mode]
        if not wire:
            return PUMP_WAIT
        outcome = self.conn.reply(self.fd, wire)
        if outcome == SOCKET_ERROR:
            self.reply_failed = True
        elif outcome in (PUMP_WAIT, SHORT_SEND):
            self.replied += wire
        else:
            raise AssertionError(f"reply: outcome {outcome}")
        return outcome

    def hand_back(self, outcome: int) -> None:
        """``_serve_pumped_reads`` after ``serve_pumped`` returned ``outcome``:
        the unfinished message back to the framer, then the outcome's due."""
        self.attached = self.parked = False
        self.pump.detach(self.fd)
        self.fresh = True
        held = self.conn.take_input()
        if self.split:
            self.framer.restore_splitting(held)
        else:
            assert not held, f"a connection without a framer held {held!r}"
        if outcome == SHORT_SEND:
            self.unsent, replies = self.conn.take_unsent()
            assert self.unsent and replies == 0, (self.unsent, replies)
            assert self.replied.endswith(self.unsent), "unsent: not the reply's end"
            return
        self.held = held
        if outcome == END_OF_INPUT:
            eof = None
            if self.split:
                try:
                    self.framer.feed_eof()
                except FramingError as exc:
                    eof = describe_error(exc)
            self.ending = ("end of input", eof)
        elif outcome == ENDED:
            assert self.split, "ENDED without a framer"
            try:
                frames = self.framer.feed(b"")  # run.rescan()
                self.ending = ("ended", "no error", frames)
            except FramingError as exc:
                self.ending = ("ended", describe_error(exc), exc.frames)
        elif outcome == SOCKET_ERROR:
            self.ending = ("socket error", "reply" if self.reply_failed else "read")
        else:
            raise AssertionError(f"the pump handed back with outcome {outcome}")

    def task_step(self) -> None:
        """The connection's task: send what it owes, then end or serve again."""
        if self.attached or self.done:
            return
        if self.unsent:
            try:
                sent = self.server.send(self.unsent)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.reply_failed = True
                self.ending = ("socket error", "reply")
                self.held = self.framer_held()
                self.unsent = b""
                self.finish()
                return
            self.sent_by_task += sent
            self.unsent = self.unsent[sent:]
            if self.unsent:
                return
        if self.ending is not None:
            self.finish()
            return
        self.serve_now()

    def framer_held(self) -> bytes:
        """The unfinished message while the task holds the connection (the
        framer's, handed back)."""
        if not self.split:
            return b""
        state = self.framer.splitting_state()
        assert state is not None, "the framer cannot split any more"
        self.framer.restore_splitting(state[1])
        return bytes(state[1])

    def finish(self) -> None:
        """The task ends: its socket leaves the epoll set (the watch closes)."""
        self.done = True
        self.epoll.unregister(self.fd)

    def serve_now(self) -> None:
        """``serve_pumped``'s loop, once: attach, serve now, answer."""
        if self.fresh and self.split:
            state = self.framer.splitting_state()  # reading_connection()
            assert state is not None, "the framer cannot split any more"
            self.conn.set_input(state[1])
        self.fresh = False
        if self.input_ended:
            self.conn.mark_input_ended()
        self.pump.attach(self.fd, self.conn)
        self.attached = True
        outcome = self.pump.serve(self.fd)
        if outcome == PUMP_WAIT:
            self.parked = True
            return
        self.pump.detach(self.fd)
        self.attached = False
        if outcome in (INPUT, INPUT_MORE):
            items = self.pump.items
            assert len(items) == 1, f"INPUT with {len(items)} items"
            read = items[0]
            assert len(read) <= min(self.params.inbox_cap, self.params.turn_bytes), len(read)
            outcome = self.answer(read)
        elif outcome in (MESSAGES, MESSAGES_MORE):
            outcome = self.answer(self.pump.items)
        elif outcome == ACCOUNT:
            self.conn.accounted = self.conn.buffered
            outcome = PUMP_AGAIN
        if outcome not in (PUMP_WAIT, PUMP_AGAIN):  # those: serve again at the next step
            self.hand_back(outcome)

    def outcome(self, mask: int, outcome: int, data: bytes | list[bytes] | None) -> None:
        """The hub's ``_pumped`` and ``_pumped_input`` for this connection."""
        if not self.parked:
            # Served twice in a turn, handed back at the first: the hub drops
            # the second (an AGAIN); anything with input would be lost.
            assert outcome == PUMP_AGAIN, f"outcome {outcome} for a detached connection"
            return
        if data is not None:
            more = outcome in (INPUT_MORE, MESSAGES_MORE)
            outcome = self.answer(data)
            if outcome == PUMP_WAIT:
                self.owed = self.owed or more
                return
        elif outcome == ACCOUNT:
            self.conn.accounted = self.conn.buffered
            self.owed = True
            return
        elif outcome == PUMP_AGAIN:
            self.owed = True
            return
        elif mask & INPUT_ENDS:
            self.input_ended = True
        self.hand_back(outcome)

    # -- the client --

    def client_step(self, read: bool) -> None:
        if not self.client_open:
            return
        if self.pending:
            try:
                sent = self.client.send(self.pending)
            except BlockingIOError:
                sent = 0
            self.written += self.pending[:sent]
            self.pending = self.pending[sent:]
        if read:
            self.received += drain(self.client)

    def end(self) -> None:
        """The client's ending: its end of input, a reset, or none."""
        if self.ending_kind == "end of input":
            self.pending = b""
            self.client.shutdown(socket.SHUT_WR)
        elif self.ending_kind == "reset":
            self.client_step(read=False)
            self.pending = b""
            self.client.close()
            self.client_open = False

    def snapshot(self) -> tuple[Any, ...]:
        return (
            len(self.written),
            len(self.pending),
            len(self.received),
            len(self.delivered),
            len(self.messages),
            self.attached,
            self.owed,
            self.fresh,
            len(self.unsent),
            self.ending is not None,
            self.done,
            self.conn.buffered,
        )


class ReadHarness:
    """Connections read by one pump over one edge-triggered epoll set, and
    the hub's turns."""

    def __init__(self, params: ReadParams) -> None:
        self.params = params
        self.epoll = select.epoll()
        self.pump = Pump(
            self.epoll.fileno(),
            params.max_events,
            params.turn_bytes,
            params.out_cap,
            params.inbox_cap,
        )
        self.conns: dict[int, ReadConn] = {}

    def add(self, split: bool, reply: str, chunks: list[bytes], ending: str) -> ReadConn:
        conn = ReadConn(self.params, self.pump, self.epoll, split, reply, chunks, ending)
        self.conns[conn.fd] = conn
        return conn

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.epoll.close()

    def hub_turn(self) -> None:
        """``ReadinessHub.run``'s turn with the pump: owed connections, then
        the events; what was read for Python taken from the pump's items as
        the hub takes it (an item per INPUT, ``mask`` per MESSAGES)."""
        owed = [fd for fd, conn in self.conns.items() if conn.owed]
        for conn in self.conns.values():
            conn.owed = False
        events = self.pump.turn(owed)
        items, taken, read = self.pump.items, 0, 0
        for fd, mask, outcome in events:
            conn = self.conns[fd]
            data: bytes | list[bytes] | None = None
            if outcome == EVENT:
                assert not conn.attached, "an event for an attached connection"
                if mask & INPUT_ENDS:
                    conn.input_ended = True
                continue
            if outcome in (MESSAGES, MESSAGES_MORE):
                first, taken = taken, taken + mask  # mask: how many
                data = items[first:taken]
                assert mask > 0 and len(data) == mask, (len(items), first, mask)
            elif outcome in (INPUT, INPUT_MORE):
                taken += 1
                assert taken <= len(items), f"INPUT without its item ({len(items)} items)"
                data = items[taken - 1]
                assert len(data) == mask > 0, (len(data), mask)  # mask: its length
                read += mask
            conn.outcome(mask, outcome, data)
        assert taken == len(items), f"{len(items)} items, {taken} given out"
        assert read <= self.params.inbox_cap, f"a turn read {read} bytes"
        self.pump.release_input()

    def snapshot(self) -> tuple[Any, ...]:
        return tuple(conn.snapshot() for conn in self.conns.values())

    def settle(self, read: bool) -> None:
        """Step the clients, the hub and the tasks until nothing changes, no
        connection is owed a turn, and every edge was seen."""
        state = self.snapshot()
        quiet = 0  # steps that changed nothing: one turn may not see every event
        for _ in range(READ_SETTLE_LIMIT):
            for conn in self.conns.values():
                conn.client_step(read)
            self.hub_turn()
            for conn in self.conns.values():
                conn.task_step()
            now = self.snapshot()
            if now != state or any(conn.owed for conn in self.conns.values()):
                quiet = 0
            else:
                quiet += 1
                if quiet > len(self.conns):  # max_events >= 1: every edge was seen
                    return
            state = now
        raise AssertionError(f"never settled: {self.params} {state}")

    def run(self, reads: list[bool]) -> None:
        """The first serve, then each round of writes, then the endings."""
        self.settle(read=True)
        rounds = max(len(conn.chunks) for conn in self.conns.values())
        for index in range(rounds):
            for conn in self.conns.values():
                if index < len(conn.chunks):
                    conn.pending += conn.chunks[index]
            self.settle(read=reads[index % len(reads)])
        for conn in self.conns.values():
            conn.end()
        self.settle(read=True)
        for conn in self.conns.values():
            if conn.attached:
                self.pump.detach(conn.fd)
                conn.attached = conn.parked = False
                conn.held = conn.conn.take_input()
            elif conn.ending is None:  # its task holds it: the framer does
                conn.held = conn.framer_held()
            bytes_in, bytes_out = conn.conn.take_byte_counts()
            conn.bytes_in += bytes_in
            conn.bytes_out += bytes_out


def check_read(conn: ReadConn) -> None:
    """``conn`` against its twins; raises on the first difference."""
    rest = drain_server(conn.server)  # what the pump did not read
    written = bytes(conn.written)
    read = written[: len(written) - len(rest)]
    assert written.endswith(rest), "the server's socket holds bytes the client did not write"
    assert conn.bytes_in == len(read), f"bytes_in {conn.bytes_in}, read {len(read)}"
    kind = conn.ending[0] if conn.ending is not None else None
    stopped = kind == "ended" or conn.reply_failed  # stopped reading before the end
    assert stopped or not rest, f"{len(rest)} bytes never read (ending {conn.ending})"
    if conn.ending_kind == "end of input" and not stopped:
        assert kind == "end of input", f"the end of the input never came: {conn.ending}"
    if conn.ending_kind == "reset":
        assert kind is not None, "the reset never came"
    if conn.ending_kind == "none":
        assert kind in (None, "ended") and not conn.reply_failed, conn.ending
    if not conn.split:
        assert kind != "ended", conn.ending
        assert conn.delivered == read, "the bytes delivered are not the bytes read"
    else:
        twin = twin_of(conn.params.framing, read)
        assert conn.messages == twin.frames, "the messages differ from the framer's"
        assert conn.held == read[twin.header_at :], (
            f"the pump holds {len(conn.held)} bytes, the framer {len(read) - twin.header_at}"
        )
        if twin.error is not None:
            assert kind == "ended" or conn.reply_failed, f"{twin.error}, ending {conn.ending}"
            if kind == "ended":
                assert conn.ending == ("ended", twin.error, []), (conn.ending, twin.error)
        else:
            assert kind != "ended", f"ENDED where the framer raises nothing: {conn.ending}"
            if kind == "end of input":
                assert conn.ending == ("end of input", twin.eof), (conn.ending, twin.eof)
    if conn.client_open and not conn.reply_failed:
        assert conn.received == conn.replied, "the client did not get the replies"
        assert conn.bytes_out + conn.sent_by_task == len(conn.replied), "bytes_out"


def test_read_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    params = read_params_from(fdp)
    small = min(params.read_size, params.turn_bytes, params.inbox_cap) < 64
    limit = 1024 if small else 16384
    harness = ReadHarness(params)
    conn: ReadConn | None = None  # the one being checked
    try:
        for _ in range(fdp.ConsumeIntInRange(1, READ_CONNECTIONS)):
            split = fdp.ConsumeBool()  # splitting and not on one pump, one turn
            reply = fdp.PickValueInList(REPLIES)
            ending = fdp.PickValueInList(["end of input", "reset", "none"])
            stream = read_stream_from(fdp, params.framing, limit)
            harness.add(split, reply, read_chunks_from(fdp, stream), ending)
        harness.run([fdp.ConsumeBool() for _ in range(4)])
        for conn in harness.conns.values():
            check_read(conn)
    except AssertionError as exc:
        shown = harness.conns.values() if conn is None else [conn]  # None: while running
        conns = "\n".join(str(each) for each in shown)
        raise AssertionError(f"the pump and its twin differ: {exc}\n {params}\n{conns}") from None
    finally:
        harness.close()


def main() -> None:
    read = os.environ.get("TRIOECHO_FUZZ_PUMP", "echo") == "read"
    atheris.Setup(sys.argv, test_read_input if read else test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
