"""The send rule: how long a send may wait for a peer that reads slowly.

A send the connection cannot take at once waits for the peer to read.  The
transports (and the lossless close) cut it when either:

* **it stalled**: the connection took none of it for ``send_timeout``
  seconds.  The deadline restarts whenever the connection takes more bytes,
  as nginx's ``send_timeout`` ("between two successive write operations"):
  a reader that is slow but steady is never cut by it;
* **the peer reads below the floor**: since the send blocked, the peer has
  taken fewer than ``min_send_rate`` bytes a second over the time past the
  first ``send_timeout`` seconds.  Each byte taken buys ``1 /
  min_send_rate`` seconds more, as Apache's ``mod_reqtimeout`` ``MinRate``
  does for requests: a trickling reader cannot hold its slot and its
  memory for ever, and the time a send may take is bounded by its size
  (``send_timeout + size / min_send_rate``).

In one expression, a send that blocked at ``start`` and has had ``taken``
bytes taken since, the last of them at ``last``, is cut at::

    min(last, start + taken / min_send_rate) + send_timeout

Without a ``send_timeout`` neither rule applies (no limit); without a
``min_send_rate`` only the first does.  "Taken" is what the kernel accepted
on a socket, what a wrapped stream's ``send_all`` accepted (chunk by chunk,
see :mod:`~trioecho.io.stream_transport`), or during the lossless close
what the peer acknowledged (:mod:`~trioecho.io.closing`).
"""

from __future__ import annotations

import math

from trioecho.errors import SlowReaderError

__all__ = ["SendDeadline"]


class SendDeadline:
    """The deadline of one send that waits for its peer (see the module
    docstring).  Created when the wait starts, told of each progress with
    :meth:`took`; :attr:`deadline` is when the send must be cut, in
    ``trio.current_time()`` units, and :meth:`error` says which rule cut it.
    """

    __slots__ = ("_last", "_rate", "_start", "_timeout", "deadline", "taken")

    def __init__(self, send_timeout: float, min_send_rate: float | None, now: float) -> None:
        self._timeout = send_timeout
        self._rate = min_send_rate
        self._start = self._last = now
        self.taken = 0  # bytes taken since the send started to wait
        self.deadline = now + send_timeout

    def took(self, count: int, now: float) -> float:
        """Count ``count`` more bytes taken at ``now`` (none: no progress);
        return the deadline, moved by any progress."""
        if count > 0:
            self.taken += count
            self._last = now
            self.deadline = min(now, self._floor_time()) + self._timeout
        return self.deadline

    def _floor_time(self) -> float:
        """Until when the bytes taken keep the peer above the floor (before
        the ``send_timeout`` of grace)."""
        rate = self._rate
        return math.inf if rate is None else self._start + self.taken / rate

    @property
    def below_floor(self) -> bool:
        """Whether the floor, not a stall, sets the deadline now."""
        return self._floor_time() < self._last

    def error(self, now: float) -> SlowReaderError:
        """The error of a send cut at ``now``: which rule cut it, in one line."""
        if self.below_floor:
            return SlowReaderError(
                f"peer read its replies too slowly: {self.taken} bytes in "
                f"{now - self._start:.1f} s of a blocked send, below "
                f"min_send_rate={self._rate:g} bytes/s"
            )
        return SlowReaderError(
            f"peer did not read its replies: the send stalled for send_timeout={self._timeout}s"
        )
