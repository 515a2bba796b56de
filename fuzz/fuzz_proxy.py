#!/usr/bin/env python3
"""Fuzzing the PROXY protocol parser (atheris, Python coverage).

The parser is pure Python, so there is no memory to corrupt; what can go
wrong is an exception other than ``ProxyProtocolError`` (a crash of the
connection task, not a clean close) or a broken promise that
``trioecho.server.accept.receive_proxy_header`` relies on when it consumes bytes
off the socket.  Each input checks all of them:

* the outcome is a header, ``None`` (unfinished) or ``ProxyProtocolError``;
* ``None``: every prefix is also unfinished, so every byte belongs to the
  header (the reader consumes them);
* a header: it ends within the bytes given, it is the same when only its
  own bytes are given and whatever follows it, and one byte less is
  unfinished (the reader consumes exactly ``length`` bytes);
* an error stays an error whatever bytes follow (more data never repairs it).

    python fuzz/fuzz_proxy.py -max_total_time=60
"""

from __future__ import annotations

import struct
import sys

import atheris

with atheris.instrument_imports(include=["trioecho.server.proxy"]):
    from trioecho import ProxyProtocolError
    from trioecho.server.proxy import V2_SIGNATURE, ProxyHeader, parse_proxy_header

VERSIONS = [(1,), (2,), (1, 2)]
# Inputs start with a real signature most of the time, to get past it.
STARTS = [b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", V2_SIGNATURE]


def outcome(data: bytes, versions: tuple[int, ...]) -> ProxyHeader | str | None:
    try:
        return parse_proxy_header(data, versions)
    except ProxyProtocolError as exc:
        return f"error: {exc}"


def build(fdp: atheris.FuzzedDataProvider) -> bytes:
    start: bytes = fdp.PickValueInList(STARTS)
    if start == V2_SIGNATURE and fdp.ConsumeBool():
        # A plausible fixed part, then a body of about the announced length.
        command = fdp.ConsumeIntInRange(0x20, 0x22)
        family = fdp.PickValueInList([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, 0x13, 0x41])
        length = fdp.ConsumeIntInRange(0, 300)
        start += bytes([command, family]) + struct.pack("!H", length)
    tail: bytes = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400))
    return start + tail


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    versions = fdp.PickValueInList(VERSIONS)
    data = build(fdp)
    more = fdp.ConsumeBytes(16) or b"\n"
    result = outcome(data, versions)
    if result is None:
        cut = fdp.ConsumeIntInRange(0, len(data))
        assert outcome(data[:cut], versions) is None, (data, cut)
    elif isinstance(result, ProxyHeader):
        assert 0 < result.length <= len(data), (data, result)
        assert outcome(data[: result.length], versions) == result, data
        assert outcome(data[: result.length] + more, versions) == result, data
        assert outcome(data[: result.length - 1], versions) is None, data
    else:
        assert isinstance(outcome(data + more, versions), str), (data, more)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
