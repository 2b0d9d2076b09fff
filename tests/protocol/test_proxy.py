"""The PROXY protocol v2 header (HAProxy's proxy-protocol.txt, section 2.2), sans I/O.

Expected bytes are written by hand from the spec's layout, or are a header HAProxy itself
wrote (published as a hex dump in seriousben/experiment-proxy-protocol's README); none come
from code of ours.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ProtocolError, ProxyHeaderError, WireAction
from protocol.proxy import ProxyCommand, ProxyHeader, parse_proxy_header

SIG = "0d0a0d0a000d0a515549540a"

# v2 PROXY (0x21), INET STREAM (0x11), 12 bytes follow; 10.1.2.3 -> 10.0.0.1, 54321 -> 1688
TCP4 = bytes.fromhex(SIG + "21" + "11" + "000c" + "0a010203" + "0a000001" + "d431" + "0698")
HAPROXY_TCP4 = bytes.fromhex(SIG + "2111000cac130001ac130003a6520050")
# v2 PROXY, INET6 STREAM (0x21), 36 bytes follow; 2001:db8::1 -> 2001:db8::2, 49152 -> 1688
TCP6 = bytes.fromhex(
    SIG
    + "21"
    + "21"
    + "0024"
    + "20010db8000000000000000000000001"
    + "20010db8000000000000000000000002"
    + "c000"
    + "0698"
)
LOCAL = bytes.fromhex(SIG + "20000000")  # v2 LOCAL, UNSPEC, nothing follows


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (TCP4, ProxyHeader(ProxyCommand.PROXY, ("10.1.2.3", 54321), ("10.0.0.1", 1688), 28)),
        (
            HAPROXY_TCP4,
            ProxyHeader(ProxyCommand.PROXY, ("172.19.0.1", 42578), ("172.19.0.3", 80), 28),
        ),
        (
            TCP6,
            ProxyHeader(ProxyCommand.PROXY, ("2001:db8::1", 49152), ("2001:db8::2", 1688), 52),
        ),
        (LOCAL, ProxyHeader(ProxyCommand.LOCAL, None, None, 16)),
        # LOCAL with addresses: a health check's, which the receiver must ignore
        (
            bytes.fromhex(SIG + "2011000c") + TCP4[16:],
            ProxyHeader(ProxyCommand.LOCAL, None, None, 28),
        ),
        # PROXY over UNSPEC: the spec lets the receiver keep the real endpoints
        (bytes.fromhex(SIG + "21000000"), ProxyHeader(ProxyCommand.PROXY, None, None, 16)),
        # TLVs after the addresses (PP2_TYPE_NOOP, type 0x04, two bytes of value) are skipped
        (
            bytes.fromhex(SIG + "21110011") + TCP4[16:] + bytes.fromhex("0400020000"),
            ProxyHeader(ProxyCommand.PROXY, ("10.1.2.3", 54321), ("10.0.0.1", 1688), 33),
        ),
    ],
)
def test_headers_from_the_spec(data: bytes, expected: ProxyHeader) -> None:
    assert parse_proxy_header(data) == expected
    assert parse_proxy_header(data + b"\x05\x00\x0b") == expected, "what follows is not taken"


def test_every_prefix_of_a_header_waits_for_more() -> None:
    for end in range(len(TCP6)):
        assert parse_proxy_header(TCP6[:end]) is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes.fromhex("05000b0310000000"), "signature"),  # an RPC bind: fails at byte 1
        (b"PROXY TCP4 10.1.2.3 10.0.0.1 54321 1688\r\n", "signature"),  # version 1's text
        (bytes.fromhex(SIG[:-2] + "0b"), "signature"),
        (bytes.fromhex(SIG + "11110000"), "version 1"),
        (bytes.fromhex(SIG + "22110000"), "command 2"),
        (bytes.fromhex(SIG + "21410000"), "0x41"),
        (bytes.fromhex(SIG + "21130000"), "0x13"),
        (bytes.fromhex(SIG + "21110004") + bytes(4), "too short"),  # INET needs 12
        (bytes.fromhex(SIG + "21210010") + bytes(16), "too short"),  # INET6 needs 36
    ],
)
def test_malformed_headers_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError, match=reason):
        parse_proxy_header(data)


def test_a_bad_header_closes_the_connection() -> None:
    assert issubclass(ProxyHeaderError, ProtocolError)
    assert ProxyHeaderError.action is WireAction.CLOSE


@given(st.binary(max_size=64))
def test_any_bytes_parse_wait_or_raise_the_one_error(data: bytes) -> None:
    for candidate in (data, bytes.fromhex(SIG) + data):
        with contextlib.suppress(ProxyHeaderError):
            parse_proxy_header(candidate)
