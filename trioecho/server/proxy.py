"""The PROXY protocol, versions 1 and 2, receiving side (sans-IO).

A load balancer such as HAProxy (``send-proxy`` / ``send-proxy-v2``) opens
each backend connection with one header that names the real client.  This
module parses that header as HAProxy's ``doc/proxy-protocol.txt`` defines it;
it does no I/O (``trioecho.server.accept`` reads the header off a socket).

:func:`parse_proxy_header` takes the first bytes of a connection and returns
a :class:`ProxyHeader`, or ``None`` while the bytes are a valid but
unfinished header, or raises :class:`ProxyProtocolError`.  It never reads
past the header: ``header.length`` bytes belong to it, the rest is the
connection's own data.  Limits, all checked before a length is trusted:

* version 1: at most 107 bytes, the CRLF included (the spec's bound);
* version 2: 16 bytes plus ``length``, which must hold the address block of
  the announced family and be at most :data:`MAX_V2_PAYLOAD`; TLVs must fit
  the announced length exactly (their contents are skipped).

As the spec requires, the receiver does not guess: when the PROXY protocol
is on, every connection must start with a header of an accepted version.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections.abc import Collection

from trioecho.errors import ProxyProtocolError

__all__ = [
    "MAX_HEADER_LENGTH",
    "MAX_V1_LENGTH",
    "MAX_V2_PAYLOAD",
    "V2_SIGNATURE",
    "ProxyHeader",
    "parse_proxy_header",
]

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_V1_LENGTH = 107  # "PROXY UNKNOWN " + 2 x 39 + 2 x 5 + 3 spaces + CRLF
# Version 2's length field allows 65,535 bytes.  The address blocks need at
# most 216 (AF_UNIX); the rest is TLVs, which trioecho skips.  HAProxy's own
# TLVs (ALPN, authority, unique ID, SSL details) fit in a few hundred bytes.
MAX_V2_PAYLOAD = 4096
MAX_HEADER_LENGTH = 16 + MAX_V2_PAYLOAD
_V2_HEADER = struct.Struct("!12sBBH")  # signature, version/command, family/protocol, length
_V2_ADDRESS_LENGTH = {0: 0, 1: 12, 2: 36, 3: 216}  # by family: UNSPEC, INET, INET6, UNIX
_V2_FAMILIES = {0: "UNSPEC", 1: "INET", 2: "INET6", 3: "UNIX"}
_V2_PROTOCOLS = {0: "UNSPEC", 1: "STREAM", 2: "DGRAM"}
_V2_COMMANDS = {0: "LOCAL", 1: "PROXY"}

Address = tuple[str, int] | str


@dataclasses.dataclass(frozen=True)
class ProxyHeader:
    """One parsed PROXY protocol header.

    ``version`` is 1 or 2.  ``command`` is ``"PROXY"`` (a relayed connection)
    or ``"LOCAL"`` (version 2: the proxy's own connection, e.g. a health
    check).  ``family`` is ``"INET"``, ``"INET6"``, ``"UNIX"`` or
    ``"UNSPEC"`` (version 1's ``UNKNOWN``).  ``source`` and ``destination``
    are ``(host, port)`` for INET/INET6, a path for UNIX, and ``None`` when
    the header carries no usable address (LOCAL, UNSPEC/UNKNOWN): the
    receiver then keeps the connection's own addresses.  ``tlvs`` holds
    version 2's (type, value) pairs.  ``length`` is the header's size on the
    wire.
    """

    version: int
    command: str
    family: str
    source: Address | None
    destination: Address | None
    length: int
    tlvs: tuple[tuple[int, bytes], ...] = ()


def parse_proxy_header(
    data: bytes | bytearray | memoryview, versions: Collection[int] = (1, 2)
) -> ProxyHeader | None:
    """Parse the header at the start of ``data``; see the module docstring.

    ``versions`` lists the accepted versions; a header of another version is
    an error.  Returns ``None`` if ``data`` is a valid beginning of a header
    that has not ended yet: every byte of ``data`` then belongs to the header.
    """
    data = bytes(data[:MAX_HEADER_LENGTH])
    for prefix, version in ((V1_PREFIX, 1), (V2_SIGNATURE, 2)):
        if data[: len(prefix)] == prefix[: len(data)]:
            if len(data) < len(prefix):
                return None
            if version not in versions:
                raise ProxyProtocolError(
                    f"PROXY protocol version {version} header, but only version "
                    f"{' or '.join(map(str, sorted(versions)))} is accepted"
                )
            return _parse_v1(data) if version == 1 else _parse_v2(data)
    raise ProxyProtocolError(f"no PROXY protocol header: the connection starts with {data[:16]!r}")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, MAX_V1_LENGTH)
    if end < 0:
        if len(data) >= MAX_V1_LENGTH:
            raise ProxyProtocolError(f"PROXY protocol v1 header longer than {MAX_V1_LENGTH} bytes")
        if b"\n" in data or (b"\r" in data[:-1]):
            raise ProxyProtocolError("PROXY protocol v1 header: stray CR or LF")
        return None
    line = data[len(V1_PREFIX) : end]
    length = end + 2
    if b"\r" in line or b"\n" in line:
        raise ProxyProtocolError("PROXY protocol v1 header: stray CR or LF")
    if line == b"UNKNOWN" or line.startswith(b"UNKNOWN "):
        # The spec: the receiver must ignore anything after UNKNOWN.
        return ProxyHeader(1, "PROXY", "UNSPEC", None, None, length)
    fields = line.split(b" ")
    if len(fields) != 5 or fields[0] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(
            f"PROXY protocol v1 header: expected 'TCP4|TCP6 SRC DST SPORT DPORT', got {line!r}"
        )
    family = "INET" if fields[0] == b"TCP4" else "INET6"
    version = 4 if family == "INET" else 6
    source = (_v1_address(fields[1], version), _v1_port(fields[3]))
    destination = (_v1_address(fields[2], version), _v1_port(fields[4]))
    return ProxyHeader(1, "PROXY", family, source, destination, length)


def _v1_address(field: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(field.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError(f"PROXY protocol v1 header: bad address {field!r}") from None
    if address.version != version:
        raise ProxyProtocolError(
            f"PROXY protocol v1 header: {field!r} is not an IPv{version} address"
        )
    return str(address)


def _v1_port(field: bytes) -> int:
    # Decimal 0..65535 without a sign or leading zeros (int() would accept both).
    if not (field.isdigit() and field.isascii()) or (field[:1] == b"0" and field != b"0"):
        raise ProxyProtocolError(f"PROXY protocol v1 header: bad port {field!r}")
    port = int(field)
    if port > 65535:
        raise ProxyProtocolError(f"PROXY protocol v1 header: port {port} out of range")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < _V2_HEADER.size:
        return None
    _, version_command, family_protocol, payload_length = _V2_HEADER.unpack_from(data)
    version, command_code = version_command >> 4, version_command & 0x0F
    family_code, protocol_code = family_protocol >> 4, family_protocol & 0x0F
    if version != 2:
        raise ProxyProtocolError(f"PROXY protocol v2 header: version {version}, expected 2")
    if command_code not in _V2_COMMANDS:
        raise ProxyProtocolError(f"PROXY protocol v2 header: unknown command {command_code:#x}")
    if family_code not in _V2_FAMILIES or protocol_code not in _V2_PROTOCOLS:
        raise ProxyProtocolError(
            f"PROXY protocol v2 header: unknown family/protocol {family_protocol:#04x}"
        )
    if payload_length > MAX_V2_PAYLOAD:
        raise ProxyProtocolError(
            f"PROXY protocol v2 header: {payload_length} bytes of addresses and TLVs, "
            f"more than the limit of {MAX_V2_PAYLOAD}"
        )
    command = _V2_COMMANDS[command_code]
    family = _V2_FAMILIES[family_code]
    length = _V2_HEADER.size + payload_length
    if command == "LOCAL":
        # The proxy speaks for itself (a health check): the spec says to
        # discard the whole block, family included, and keep the real addresses.
        return None if len(data) < length else ProxyHeader(2, command, family, None, None, length)
    address_length = _V2_ADDRESS_LENGTH[family_code]
    if payload_length < address_length:
        raise ProxyProtocolError(
            f"PROXY protocol v2 header: length {payload_length} cannot hold an {family} "
            f"address block ({address_length} bytes)"
        )
    if len(data) < length:
        return None
    payload = data[_V2_HEADER.size : length]
    tlvs = _v2_tlvs(payload[address_length:])
    if family == "UNSPEC":  # no addresses: keep the connection's own
        return ProxyHeader(2, command, family, None, None, length, tlvs)
    source, destination = _v2_addresses(family, payload[:address_length])
    return ProxyHeader(2, command, family, source, destination, length, tlvs)


def _v2_addresses(family: str, block: bytes) -> tuple[Address, Address]:
    if family == "UNIX":
        return _unix_path(block[:108]), _unix_path(block[108:])
    size = 4 if family == "INET" else 16
    source_ip = ipaddress.ip_address(block[:size])
    destination_ip = ipaddress.ip_address(block[size : 2 * size])
    source_port, destination_port = struct.unpack_from("!HH", block, 2 * size)
    return (str(source_ip), source_port), (str(destination_ip), destination_port)


def _unix_path(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="backslashreplace")


def _v2_tlvs(block: bytes) -> tuple[tuple[int, bytes], ...]:
    tlvs = []
    offset = 0
    while offset < len(block):
        if len(block) - offset < 3:
            raise ProxyProtocolError("PROXY protocol v2 header: truncated TLV")
        kind = block[offset]
        size = int.from_bytes(block[offset + 1 : offset + 3], "big")
        offset += 3
        if size > len(block) - offset:
            raise ProxyProtocolError(
                f"PROXY protocol v2 header: TLV {kind:#04x} of {size} bytes overruns the header"
            )
        tlvs.append((kind, block[offset : offset + size]))
        offset += size
    return tuple(tlvs)
