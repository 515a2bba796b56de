"""The C pump (``csrc/pump.c``): the readiness hub serves echo sessions in C.

The only module that imports ``trioecho._pump_ffi``; nothing cffi-typed
leaves it.  The pump's contract and rules are in ``csrc/pump.h``: one C
call per turn of the hub does ``epoll_wait(0)`` and, for each ready socket
whose connection is attached, reads, answers (the C echo session) and
sends, with no Python per message.  It returns what Python must see: the
events of sockets with no connection attached, and the connections owed a
turn, whose memory account must be updated, or handed back.

Its twin is the Python inline step (:meth:`SocketTransport.serve_inline`
with the session's step), which serves the same sessions when the pump is
off: ``TRIOECHO_PUREPYTHON=1``, ``TRIOECHO_PUMP=0``, or no C extension.
The differential tests run both on the same traffic.
"""

from __future__ import annotations

import os
from struct import Struct
from typing import Any

from trioecho.framing.base import Buffer

__all__ = [
    "ACCOUNT",
    "BUDGET",
    "ENDED",
    "END_OF_INPUT",
    "EVENT",
    "INPUT",
    "INPUT_MORE",
    "MESSAGES",
    "MESSAGES_MORE",
    "NO_MEMORY",
    "PUMP_AGAIN",
    "PUMP_WAIT",
    "SHORT_SEND",
    "SOCKET_ERROR",
    "STEPPED",
    "STEP_FAILED",
    "Pump",
    "PumpedConnection",
    "pump_enabled",
]

(
    PUMP_WAIT,
    PUMP_AGAIN,
    EVENT,
    ACCOUNT,
    END_OF_INPUT,
    ENDED,
    SHORT_SEND,
    SOCKET_ERROR,
    NO_MEMORY,
    INPUT,
    INPUT_MORE,
    MESSAGES,
    MESSAGES_MORE,
) = range(13)
# Not the pump's, Python's hand-backs: a connection whose memory account
# does not let it read now (ACCOUNT, and the budget said no); a read's step
# that returned None (the session ended, or the budget: what the caller
# does next is in its run); a step that raised (the task raises it).
BUDGET, STEPPED, STEP_FAILED = 13, 14, 15
# The bytes one turn reads for Python at most (reading connections).
INBOX_BYTES = 1 << 20

try:
    from trioecho._pump_ffi import ffi, lib
except ImportError:  # not built: the twin serves
    ffi = lib = None
else:
    _names = ["WAIT", "AGAIN", "EVENT", "ACCOUNT", "END_OF_INPUT"]
    _names += ["ENDED", "SHORT_SEND", "SOCKET_ERROR", "NO_MEMORY", "INPUT", "INPUT_MORE"]
    _names += ["MESSAGES", "MESSAGES_MORE"]
    if [getattr(lib, f"TE_PUMP_{name}") for name in _names] != list(range(13)):
        raise ImportError("the outcomes differ between csrc/pump.h and trioecho.io.pump")

# te_pump_event: fd, mask, outcome.
_EVENT = Struct("@iIi")
if ffi is not None and ffi.sizeof("te_pump_event") != _EVENT.size:
    raise ImportError("te_pump_event's layout does not match its struct format")


def _check_read_size(read_size: int) -> None:
    if lib is None:
        raise RuntimeError("the C pump is not built")
    if read_size < 1:
        raise ValueError(f"read_size must be at least 1, not {read_size}")


def pump_enabled() -> bool:
    """Whether hubs serve echo sessions with the C pump: the extension is
    built, and neither ``TRIOECHO_PUREPYTHON=1`` nor ``TRIOECHO_PUMP=0`` is set."""
    if lib is None:
        return False
    if os.environ.get("TRIOECHO_PUREPYTHON", "") not in ("", "0"):
        return False
    return os.environ.get("TRIOECHO_PUMP", "1") not in ("", "0")


class PumpedConnection:
    """One connection's state in C, freed with this object: what serves it
    (an echo session, or forwarding to a sink), its unconsumed input, the
    bytes owed to the task, and its counters.

    ``PumpedConnection(address, owner, raw, read_size)`` serves the C echo
    session at ``address`` (a ``te_echo``, kept alive by ``owner``);
    :meth:`forwarding` passes the input on to another socket; :meth:`reading`
    reads for Python, which answers with :meth:`reply`.
    """

    __slots__ = ("_conn", "_owner")

    def __init__(self, session_address: int, owner: object, raw: bool, read_size: int) -> None:
        _check_read_size(read_size)
        conn = lib.te_pump_conn_new(ffi.cast("void *", session_address), int(raw), read_size)
        self._own(conn, owner)

    @classmethod
    def forwarding(
        cls, framer_address: int, owner: object, sink_fd: int, due: int, read_size: int
    ) -> PumpedConnection:
        """Input passed on to the socket ``sink_fd`` as it arrives, every
        header checked by the C length framer at ``framer_address`` (kept
        alive by ``owner``); ``due`` is what the frame in progress still owes."""
        _check_read_size(read_size)
        self = cls.__new__(cls)
        conn = lib.te_pump_forward_new(ffi.cast("void *", framer_address), sink_fd, due, read_size)
        self._own(conn, owner)
        return self

    @classmethod
    def reading(
        cls, read_size: int, framer_address: int | None = None, owner: object = None
    ) -> PumpedConnection:
        """Input read for Python: each service that read bytes is ``INPUT``
        or ``INPUT_MORE`` (owe it a turn after), the bytes one item of the
        pump's :attr:`Pump.items`; Python answers with :meth:`reply`.  With
        the C length framer at ``framer_address`` (kept alive by ``owner``)
        the bytes are split first: ``MESSAGES`` or ``MESSAGES_MORE``, the
        messages as many items, an unfinished one kept in C
        (:meth:`set_input`, :meth:`take_input`)."""
        _check_read_size(read_size)
        self = cls.__new__(cls)
        framer = ffi.NULL if framer_address is None else ffi.cast("void *", framer_address)
        self._own(lib.te_pump_reader_new(framer, read_size), owner)
        return self

    def _own(self, conn: Any, owner: object) -> None:
        if conn == ffi.NULL:
            raise MemoryError("cannot allocate the pump's connection state")
        self._conn = ffi.gc(conn, lib.te_pump_conn_free)
        self._owner = owner  # what the C state points to lives as long as this

    @property
    def due(self) -> int:
        """Forwarding: what the frame in progress still owes."""
        return int(self._conn.due)

    def set_due(self, due: int) -> None:
        """Forwarding: what the frame in progress still owes."""
        self._conn.due = due

    @property
    def sink_failed(self) -> bool:
        """After ``SOCKET_ERROR``: whether it was the send to the sink."""
        return bool(self._conn.kind == lib.TE_PUMP_FORWARD and self._conn.status == 1)

    def want_output(self, waiting: bool) -> None:
        """Whether Python waits to write this socket: its output edges are
        then reported (``EVENT``)."""
        self._conn.want_output = int(waiting)

    def reply(self, fd: int, data: Buffer) -> int:
        """Reading: send ``data`` on the socket ``fd`` now: ``PUMP_WAIT`` (all
        sent), ``SHORT_SEND`` (the rest is unsent: :meth:`take_unsent`),
        ``SOCKET_ERROR`` (:attr:`error`) or ``NO_MEMORY``."""
        if type(data) is not bytes:
            data = ffi.from_buffer(data)
        return int(lib.te_pump_reply(self._conn, fd, data, len(data)))

    @property
    def handle(self) -> Any:
        return self._conn

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished message held in C."""
        return int(self._conn.in_len)

    @property
    def accounted(self) -> int:
        return int(self._conn.accounted)

    @accounted.setter
    def accounted(self, size: int) -> None:
        self._conn.accounted = size

    @property
    def progress(self) -> int:
        """Reads that completed a message, since this state was made."""
        return int(self._conn.progress)

    @property
    def ending(self) -> tuple[int, int]:
        """After ``ENDED``: the session's status and length."""
        return int(self._conn.status), int(self._conn.length)

    @property
    def error(self) -> int:
        """After ``SOCKET_ERROR``: the errno."""
        return int(self._conn.error)

    def set_input(self, data: bytes) -> None:
        """Make ``data`` the unconsumed input (the session's unfinished message)."""
        if not data:
            lib.te_pump_conn_set_input(self._conn, ffi.NULL, 0)
        elif lib.te_pump_conn_set_input(self._conn, data, len(data)) != 0:
            raise MemoryError("cannot allocate the pump's input buffer")
        self._conn.accounted = len(data)

    def take_input(self) -> bytes:
        """The unconsumed input, removed from the C state."""
        conn = self._conn
        size = conn.in_len
        data = ffi.unpack(ffi.cast("char *", getattr(conn, "in")), size) if size else b""
        lib.te_pump_conn_set_input(conn, ffi.NULL, 0)
        return data

    def take_unsent(self) -> tuple[bytes, int]:
        """The bytes handed to the task to send, and the replies among them
        not counted as sent yet."""
        conn = self._conn
        size = conn.unsent_len
        data = ffi.unpack(ffi.cast("char *", conn.unsent), size) if size else b""
        replies = int(conn.unsent_replies)
        lib.te_pump_conn_clear_unsent(conn)
        return data, replies

    def take_message_counts(self) -> tuple[int, int]:
        """Messages received and replies sent since the last take."""
        conn = self._conn
        counts = int(conn.messages_in), int(conn.messages_out)
        conn.messages_in = conn.messages_out = 0
        return counts

    def take_byte_counts(self) -> tuple[int, int]:
        """Bytes received and sent since the last take."""
        conn = self._conn
        counts = int(conn.bytes_in), int(conn.bytes_out)
        conn.bytes_in = conn.bytes_out = 0
        return counts

    def mark_input_ended(self) -> None:
        """The peer's end of input was seen: read to the end, not to a short read."""
        self._conn.input_ended = 1


class Pump:
    """The C pump of one hub's epoll set (``epoll_fd``, which the hub
    registers sockets in and closes): see the module docstring."""

    __slots__ = (
        "_inbox_len",
        "_item_count",
        "_out",
        "_out_cap",
        "_owed",
        "_owed_cap",
        "_pump",
        "items",
        "max_events",
    )

    def __init__(
        self,
        epoll_fd: int,
        max_events: int,
        turn_bytes: int,
        out_cap: int,
        inbox_cap: int = INBOX_BYTES,
    ) -> None:
        if lib is None:
            raise RuntimeError("the C pump is not built")
        if (
            max_events < 1
            or turn_bytes < 1
            or out_cap < lib.TE_PUMP_MIN_OUTPUT
            or not 1 <= inbox_cap <= lib.TE_PUMP_MAX_INBOX
        ):
            raise ValueError(
                f"bad pump sizes: max_events={max_events} turn_bytes={turn_bytes} "
                f"out_cap={out_cap} inbox_cap={inbox_cap} (at least 1, 1, "
                f"{lib.TE_PUMP_MIN_OUTPUT} and 1, inbox_cap at most {lib.TE_PUMP_MAX_INBOX})"
            )
        pump = lib.te_pump_new(epoll_fd, max_events, turn_bytes, out_cap, inbox_cap)
        if pump == ffi.NULL:
            raise MemoryError("cannot allocate the pump")
        self._pump = ffi.gc(pump, lib.te_pump_free)
        self.max_events = max_events
        self._owed_cap = 0
        self._owed: Any = ffi.NULL
        self._out_cap = 0
        self._out: Any = None
        self._inbox_len = ffi.new("size_t *")
        self._item_count = ffi.new("size_t *")
        # What the last turn (or serve) read for reading connections, in
        # the order of their outcomes: one item (the bytes read) per
        # INPUT(_MORE), and its messages (as many as its mask says) per
        # MESSAGES(_MORE).
        self.items: list[bytes] = []
        self._reserve(64)

    def _reserve(self, owed: int) -> None:
        if owed > self._owed_cap:
            self._owed_cap = max(owed, 2 * self._owed_cap)
            self._owed = ffi.new("int[]", self._owed_cap)
            self._out_cap = self._owed_cap + 2 * self.max_events
            self._out = ffi.new("te_pump_event[]", self._out_cap)

    def attach(self, fd: int, conn: PumpedConnection) -> None:
        if lib.te_pump_attach(self._pump, fd, conn.handle) != 0:
            raise MemoryError("cannot grow the pump's table")

    def detach(self, fd: int) -> None:
        lib.te_pump_detach(self._pump, fd)

    def serve(self, fd: int) -> int:
        """Serve the attached ``fd`` now; its outcome (detached if handed
        back).  What it read for Python (``INPUT``, ``MESSAGES``) is :attr:`items`."""
        mask = ffi.new("uint32_t *")
        outcome = int(lib.te_pump_serve(self._pump, fd, mask))
        self._take_items()
        return outcome

    def release_input(self) -> None:
        """Drop :attr:`items` once Python took them."""
        self.items = []

    def _take_items(self) -> None:
        pump = self._pump
        bounds = lib.te_pump_items(pump, self._item_count)
        count = self._item_count[0]
        if not count:
            if self.items:
                self.items = []
            return
        start = lib.te_pump_inbox(pump, self._inbox_len)
        inbox = ffi.buffer(start, self._inbox_len[0])  # each slice copies its item out
        flat = ffi.unpack(bounds, 2 * count)
        self.items = [inbox[flat[i] : flat[i + 1]] for i in range(0, 2 * count, 2)]

    def turn(self, owed: list[int]) -> list[tuple[int, int, int]]:
        """One turn (see ``te_pump_turn``): the ``(fd, mask, outcome)`` Python
        must see; what it read for Python is :attr:`items`."""
        n_owed = len(owed)
        if n_owed:
            self._reserve(n_owed)
            self._owed[0:n_owed] = owed
        count = lib.te_pump_turn(self._pump, self._owed, n_owed, self._out, self._out_cap)
        if count <= 0:
            if self.items:
                self.items = []
            if count < 0:
                raise OSError(ffi.errno, os.strerror(ffi.errno))
            return []
        self._take_items()
        return list(_EVENT.iter_unpack(ffi.buffer(self._out, count * _EVENT.size)))
