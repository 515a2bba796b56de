"""Fault injection for the worker tests (on PYTHONPATH for their servers only):
a process whose echo session receives ``freeze`` spins forever without
yielding, as the first release did on a 262,138-byte message -- its event
loop stops turning while the process keeps running."""

from __future__ import annotations

from typing import Any

from trioecho.services import echo_session as session

_feed = session.EchoSession.feed


def _freezing_feed(self: session.EchoSession, data: Any) -> session.EchoOutput:
    if b"freeze" in bytes(data):
        while True:
            pass
    return _feed(self, data)


session.EchoSession.feed = _freezing_feed  # type: ignore[method-assign]
# Served by the Python step, where the patched feed runs (the C pump would
# answer "freeze" in C).
session.EchoSession.pump_handle = lambda self: None  # type: ignore[method-assign]
