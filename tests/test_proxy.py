"""The PROXY protocol parser (sans-IO): versions 1 and 2, limits, every split."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import proxyheaders

from trioecho import ProxyProtocolError
from trioecho.server.accept import ProxyProtocolConfig, parse_networks
from trioecho.server.proxy import (
    MAX_V1_LENGTH,
    MAX_V2_PAYLOAD,
    V2_SIGNATURE,
    ProxyHeader,
    parse_proxy_header,
)

PAYLOAD = b"hello\n"


def test_v1_tcp4() -> None:
    data = b"PROXY TCP4 192.0.2.10 127.0.0.1 56324 9999\r\n"
    assert parse_proxy_header(data + PAYLOAD) == ProxyHeader(
        1, "PROXY", "INET", ("192.0.2.10", 56324), ("127.0.0.1", 9999), len(data)
    )


def test_v1_tcp6() -> None:
    data = b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n"
    assert parse_proxy_header(data) == ProxyHeader(
        1, "PROXY", "INET6", ("2001:db8::1", 65535), ("::1", 0), len(data)
    )


def test_v1_unknown_ignores_the_rest_of_the_line() -> None:
    for data in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n"):
        assert parse_proxy_header(data + PAYLOAD) == ProxyHeader(
            1, "PROXY", "UNSPEC", None, None, len(data)
        )


def test_v1_longest_header_is_107_bytes() -> None:
    # The spec's worst case: UNKNOWN followed by two full IPv6 addresses.
    longest = (
        b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
    )
    assert len(longest) == MAX_V1_LENGTH
    header = parse_proxy_header(longest)
    assert header is not None and header.length == MAX_V1_LENGTH
    tcp6 = longest.replace(b"UNKNOWN", b"TCP6")
    assert parse_proxy_header(tcp6) == ProxyHeader(
        1,
        "PROXY",
        "INET6",
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
        104,
    )
    with pytest.raises(ProxyProtocolError, match="longer than 107 bytes"):
        parse_proxy_header(b"PROXY UNKNOWN " + b"x" * 93 + b"\r\n")
    # The limit holds before the line ends: no need to wait for a CRLF.
    with pytest.raises(ProxyProtocolError, match="longer than 107 bytes"):
        parse_proxy_header(b"PROXY TCP4 " + b"1" * 200)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2 3\r\n", "expected 'TCP4"),
        (b"PROXY TCP4 192.0.2.1 127.0.0.1 1\r\n", "expected 'TCP4"),
        (b"PROXY UDP4 192.0.2.1 127.0.0.1 1 2\r\n", "expected 'TCP4"),
        (b"PROXY TCP4  192.0.2.1 127.0.0.1 1 2\r\n", "expected 'TCP4"),
        (b"PROXY TCP4 ::1 127.0.0.1 1 2\r\n", "not an IPv4 address"),
        (b"PROXY TCP6 192.0.2.1 ::1 1 2\r\n", "not an IPv6 address"),
        (b"PROXY TCP4 192.0.2.300 127.0.0.1 1 2\r\n", "bad address"),
        (b"PROXY TCP4 192.0.2.1 127.0.0.1 65536 2\r\n", "out of range"),
        (b"PROXY TCP4 192.0.2.1 127.0.0.1 01 2\r\n", "bad port"),
        (b"PROXY TCP4 192.0.2.1 127.0.0.1 +1 2\r\n", "bad port"),
        (b"PROXY TCP4 192.0.2.1 127.0.0.1 1 -2\r\n", "bad port"),
        (b"PROXY TCP4 192.0.2.1\n127.0.0.1", "stray CR or LF"),
        (b"PROXY TCP4 192.0.2.1\rX", "stray CR or LF"),
        # Found by fuzz/fuzz_proxy.py: accepted whole, refused when cut short.
        (b"PROXY UNKNOWN \n\x01\r\n", "stray CR or LF"),
        (b"PROXY TCP4 192.0.2.1\r127.0.0.1 1 2\r\n", "stray CR or LF"),
        (b"PROXY TCP4 \xff.0.2.1 127.0.0.1 1 2\r\n", "bad address"),
    ],
)
def test_v1_malformed(line: bytes, error: str) -> None:
    with pytest.raises(ProxyProtocolError, match=error):
        parse_proxy_header(line)


def test_v2_inet_with_tlvs() -> None:
    tlvs = ((0x01, b"echo"), (0x05, b"\x00" * 20), (0xE0, b""))
    data = proxyheaders.v2(("198.51.100.7", 40000), ("127.0.0.1", 9999), tlvs=tlvs)
    assert data[12:14] == b"\x21\x11"
    assert parse_proxy_header(data + PAYLOAD) == ProxyHeader(
        2, "PROXY", "INET", ("198.51.100.7", 40000), ("127.0.0.1", 9999), len(data), tlvs
    )


def test_v2_inet6() -> None:
    data = proxyheaders.v2(("2001:db8::7", 1), ("2001:db8::1", 443))
    assert len(data) == 16 + 36
    assert parse_proxy_header(data) == ProxyHeader(
        2, "PROXY", "INET6", ("2001:db8::7", 1), ("2001:db8::1", 443), 52
    )


def test_v2_unix() -> None:
    data = proxyheaders.v2("/run/client.sock", "/run/trioecho.sock")
    assert len(data) == 16 + 216
    assert parse_proxy_header(data) == ProxyHeader(
        2, "PROXY", "UNIX", "/run/client.sock", "/run/trioecho.sock", 232
    )


def test_v2_local_ignores_addresses() -> None:
    data = proxyheaders.v2(("198.51.100.7", 40000), command=0, tlvs=((1, b"x"),))
    assert parse_proxy_header(data) == ProxyHeader(2, "LOCAL", "INET", None, None, len(data))
    # The block is discarded unread, even when it could not hold the family.
    short = v2_raw(0x20, 0x21, 3, b"abc")
    assert parse_proxy_header(short) == ProxyHeader(2, "LOCAL", "INET6", None, None, 19)
    bare = V2_SIGNATURE + b"\x20\x00\x00\x00"  # LOCAL, UNSPEC, no addresses
    assert parse_proxy_header(bare + PAYLOAD) == ProxyHeader(2, "LOCAL", "UNSPEC", None, None, 16)


def test_v2_unspec_proxy_keeps_the_connection_address() -> None:
    data = proxyheaders.v2(None, tlvs=((0x04, b"x"),))
    assert parse_proxy_header(data) == ProxyHeader(
        2, "PROXY", "UNSPEC", None, None, len(data), ((0x04, b"x"),)
    )


def v2_raw(version_command: int, family_protocol: int, length: int, body: bytes = b"") -> bytes:
    return (
        V2_SIGNATURE + bytes([version_command, family_protocol]) + struct.pack("!H", length) + body
    )


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (v2_raw(0x11, 0x11, 12, b"\0" * 12), "version 1, expected 2"),
        (v2_raw(0x31, 0x11, 12, b"\0" * 12), "version 3, expected 2"),
        (v2_raw(0x22, 0x11, 12, b"\0" * 12), "unknown command 0x2"),
        (v2_raw(0x21, 0x41, 12, b"\0" * 12), "unknown family/protocol 0x41"),
        (v2_raw(0x21, 0x13, 12, b"\0" * 12), "unknown family/protocol 0x13"),
        (v2_raw(0x21, 0x11, 11, b"\0" * 11), "cannot hold an INET address block"),
        (v2_raw(0x21, 0x21, 35, b"\0" * 35), "cannot hold an INET6 address block"),
        (v2_raw(0x21, 0x31, 215, b"\0" * 215), "cannot hold an UNIX address block"),
        (v2_raw(0x21, 0x11, MAX_V2_PAYLOAD + 1), "more than the limit of 4096"),
        (v2_raw(0x21, 0x11, 0xFFFF), "more than the limit"),
        (v2_raw(0x21, 0x11, 14, b"\0" * 12 + b"\x01\x00"), "truncated TLV"),
        (v2_raw(0x21, 0x11, 16, b"\0" * 12 + b"\x01\x00\x02x"), "overruns the header"),
    ],
)
def test_v2_malformed(data: bytes, error: str) -> None:
    with pytest.raises(ProxyProtocolError, match=error):
        parse_proxy_header(data)


def test_the_length_limit_holds_before_the_payload_arrives() -> None:
    # Only 16 bytes of a header announcing 65,535 more: refused at once.
    with pytest.raises(ProxyProtocolError, match="more than the limit"):
        parse_proxy_header(v2_raw(0x21, 0x11, 0xFFFF))


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"hello\n",
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"\r\n\r\n\x00\r\nQUIT!",
        b"PROXY\r\n",
    ],
)
def test_no_header(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError, match="no PROXY protocol header"):
        parse_proxy_header(data)


def test_versions_not_accepted() -> None:
    with pytest.raises(ProxyProtocolError, match="version 1 header, but only version 2"):
        parse_proxy_header(proxyheaders.v1(("192.0.2.1", 1)), versions=(2,))
    with pytest.raises(ProxyProtocolError, match="version 2 header, but only version 1"):
        parse_proxy_header(proxyheaders.v2(("192.0.2.1", 1)), versions=(1,))


HEADERS = [
    proxyheaders.v1(("192.0.2.1", 1234)),
    proxyheaders.v1(("2001:db8::2", 80), ("2001:db8::1", 9999)),
    proxyheaders.v1(None),
    proxyheaders.v2(("192.0.2.1", 1234), tlvs=((1, b"h2"),)),
    proxyheaders.v2(("2001:db8::2", 80)),
    proxyheaders.v2("/a", "/b"),
    proxyheaders.v2(None, command=0),
]


@pytest.mark.parametrize("data", HEADERS)
def test_every_prefix_is_unfinished_and_the_header_ends_where_it_should(data: bytes) -> None:
    for end in range(len(data)):
        assert parse_proxy_header(data[:end]) is None, end
    header = parse_proxy_header(data + b"PROXY TCP4 payload that looks like a header\r\n")
    assert header is not None and header.length == len(data)


@given(
    version=st.sampled_from([1, 2]),
    ip=st.ip_addresses(),
    source_port=st.integers(0, 65535),
    destination_port=st.integers(0, 65535),
    payload=st.binary(max_size=64),
)
def test_round_trip(
    version: int, ip: object, source_port: int, destination_port: int, payload: bytes
) -> None:
    source = (str(ip), source_port)
    destination = ("::1" if ":" in source[0] else "127.0.0.1", destination_port)
    data = (proxyheaders.v1 if version == 1 else proxyheaders.v2)(source, destination)
    header = parse_proxy_header(data + payload)
    assert header is not None
    assert (header.version, header.source, header.destination, header.length) == (
        version,
        source,
        destination,
        len(data),
    )


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_proxy_protocol_error(data: bytes) -> None:
    try:
        header = parse_proxy_header(data)
    except ProxyProtocolError:
        return
    assert header is None or header.length <= len(data)


@given(st.binary(min_size=0, max_size=200))
def test_arbitrary_v2_bodies_never_escape_the_error_type(body: bytes) -> None:
    data = V2_SIGNATURE + body
    try:
        header = parse_proxy_header(data)
    except ProxyProtocolError:
        return
    assert header is None or 16 <= header.length <= len(data)


def test_allow_list() -> None:
    config = ProxyProtocolConfig.from_options("auto", "10.0.0.0/8, 192.0.2.7,2001:db8::/32")
    assert config is not None
    assert config.versions == (1, 2)
    assert config.allows("10.1.2.3")
    assert config.allows("192.0.2.7")
    assert not config.allows("192.0.2.8")
    assert config.allows("2001:db8::99")
    assert config.allows("::ffff:10.0.0.1")  # IPv4-mapped
    assert not config.allows("127.0.0.1")
    assert not config.allows("not an address")
    default = ProxyProtocolConfig.from_options("v2")
    assert default is not None and default.versions == (2,)
    assert default.allows("127.0.0.1") and default.allows("::1")
    assert not default.allows("192.0.2.1")
    assert ProxyProtocolConfig.from_options("off") is None


def test_bad_options() -> None:
    with pytest.raises(ValueError, match=r"not an IP network: '10\.0\.0\.0/33'"):
        parse_networks(["10.0.0.0/33"])
    with pytest.raises(ValueError, match=r"not an IP network: 'example\.com'"):
        ProxyProtocolConfig.from_options("auto", "example.com")
    with pytest.raises(ValueError, match="mode must be one of off, v1, v2, auto"):
        ProxyProtocolConfig.from_options("v3")
    with pytest.raises(ValueError, match="timeout must be positive"):
        ProxyProtocolConfig(timeout=0)
