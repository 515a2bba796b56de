"""PROXY protocol headers as a load balancer writes them (for tests)."""

from __future__ import annotations

import ipaddress
import struct

from trioecho.server.proxy import V2_SIGNATURE

FAMILY = {"UNSPEC": 0, "INET": 1, "INET6": 2, "UNIX": 3}


def v1(source: tuple[str, int] | None, destination: tuple[str, int] | None = None) -> bytes:
    """``PROXY TCP4|TCP6 ...\\r\\n``, or ``PROXY UNKNOWN\\r\\n`` without a source."""
    if source is None:
        return b"PROXY UNKNOWN\r\n"
    destination = destination or ("::1" if ":" in source[0] else "127.0.0.1", 9999)
    kind = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {kind} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()


def v2(
    source: tuple[str, int] | str | None,
    destination: tuple[str, int] | str | None = None,
    *,
    command: int = 1,
    tlvs: tuple[tuple[int, bytes], ...] = (),
    protocol: int = 1,
) -> bytes:
    """A version 2 header; ``source`` None means AF_UNSPEC, a str a UNIX path."""
    if source is None:
        family, block = "UNSPEC", b""
    elif isinstance(source, str):
        assert isinstance(destination, str)
        family = "UNIX"
        block = source.encode().ljust(108, b"\0") + destination.encode().ljust(108, b"\0")
    else:
        source_ip = ipaddress.ip_address(source[0])
        if not isinstance(destination, tuple):
            destination = ("127.0.0.1" if source_ip.version == 4 else "::1", 9999)
        family = "INET" if source_ip.version == 4 else "INET6"
        block = (
            source_ip.packed
            + ipaddress.ip_address(destination[0]).packed
            + struct.pack("!HH", source[1], destination[1])
        )
    block += b"".join(bytes([kind]) + struct.pack("!H", len(value)) + value for kind, value in tlvs)
    return (
        V2_SIGNATURE
        + bytes([0x20 | command, FAMILY[family] << 4 | protocol])
        + struct.pack("!H", len(block))
        + block
    )
