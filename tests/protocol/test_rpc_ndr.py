"""NDR32/NDR64 stubs of RequestActivation against captured stubs and spec 3.4 bytes."""

from __future__ import annotations

import struct

import pytest
from rpc_vectors import Exchange, load_conversations

from protocol.errors import HRESULT_INVALID_DATA, RPC_X_BAD_STUB_DATA, RpcFault, WireAction
from protocol.rpc.codec import build_pdu
from protocol.rpc.constants import TransferSyntax
from protocol.rpc.ndr import (
    StubResult,
    unwrap_request_stub,
    unwrap_response_stub,
    wrap_error_stub,
    wrap_request_stub,
    wrap_response_stub,
)
from protocol.rpc.pdus import Response

NDR32, NDR64 = TransferSyntax.NDR32, TransferSyntax.NDR64
SYNTAX = {"ndr32": NDR32, "ndr64": NDR64}


def _captured(ptype: str) -> list[tuple[str, Exchange]]:
    return [
        (conversation.client, exchange)
        for conversation in load_conversations()
        for connection in conversation.connections
        for exchange in connection
        if exchange.ptype == ptype
    ]


REQUESTS = _captured("request")
RESPONSES = _captured("response")


@pytest.mark.parametrize(("client", "exchange"), REQUESTS)
def test_captured_request_stubs(client: str, exchange: Exchange) -> None:
    syntax = SYNTAX[exchange.ndr]
    kms = exchange.request_kms()
    assert len(kms) in (252, 260)  # v4, v5/v6 requests (spec 0.4)
    assert unwrap_request_stub(exchange.stub, syntax) == kms
    wrapped = wrap_request_stub(kms, syntax)
    if client == "vlmcs":
        assert wrapped == exchange.stub
    else:  # py-kms' client pads its 252-byte v4 stub with 4 zero bytes; those are ignored
        assert exchange.stub in (wrapped, wrapped + bytes(4))


@pytest.mark.parametrize(("client", "exchange"), RESPONSES)
def test_captured_response_stubs(client: str, exchange: Exchange) -> None:
    syntax = SYNTAX[exchange.ndr]
    kms = exchange.response_kms()
    assert wrap_response_stub(kms, syntax) == exchange.stub
    assert unwrap_response_stub(exchange.stub, syntax) == StubResult(hresult=0, payload=kms)


def test_spec_ndr32_and_ndr64_response_prefixes() -> None:
    """spec 3.4.1/3.4.2 captured prefixes for a 160-byte v4 response."""
    kms = bytes(range(160))
    ndr32 = wrap_response_stub(kms, NDR32)
    assert ndr32[:12] == bytes.fromhex("a0000000 00000200 a0000000")
    assert ndr32[12:] == kms + bytes(4)
    ndr64 = wrap_response_stub(kms, NDR64)
    assert ndr64[:24] == bytes.fromhex("a0000000 00000000 0000020000000000 a000000000000000")
    assert ndr64[24:] == kms + bytes(4)


def test_spec_error_response_pdu_for_0x8007000d() -> None:
    """spec 3.4.3: vlmcsd answering a KMS v7.0 request, byte for byte."""
    stub = wrap_error_stub(HRESULT_INVALID_DATA, NDR32)
    assert stub == bytes.fromhex("00000000 00000000 0d000780")
    pdu = Response(call_id=2, alloc_hint=len(stub), context_id=0, stub=stub)
    assert build_pdu(pdu) == bytes.fromhex(
        "05000203100000002400000002000000 0c000000000000000000000000000000 0d000780"
    )


def test_ndr64_error_stub_is_20_bytes() -> None:
    stub = wrap_error_stub(0xC004F042, NDR64)
    assert stub == bytes(16) + bytes.fromhex("42f004c0")
    assert unwrap_response_stub(stub, NDR64) == StubResult(hresult=0xC004F042, payload=None)
    assert unwrap_response_stub(wrap_error_stub(5, NDR32), NDR32) == StubResult(5, None)


@pytest.mark.parametrize("syntax", [NDR32, NDR64])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 228])
def test_response_padding_aligns_the_hresult(syntax: TransferSyntax, size: int) -> None:
    kms = bytes([0xAB]) * size
    stub = wrap_response_stub(kms, syntax)
    header = 12 if syntax is NDR32 else 24
    assert len(stub) == header + size + (-size % 4) + 4  # spec 3.4.1: 16 + m + pad(m)
    assert stub[header + size : -4] == bytes(-size % 4)
    assert unwrap_response_stub(stub, syntax) == StubResult(0, kms)


@pytest.mark.parametrize("syntax", [NDR32, NDR64])
def test_zero_length_request_is_passed_up(syntax: TransferSyntax) -> None:
    """An empty KMS message is the KMS layer's to refuse with 0x8007000D (spec 10.11)."""
    assert unwrap_request_stub(wrap_request_stub(b"", syntax), syntax) == b""


@pytest.mark.parametrize("syntax", [NDR32, NDR64])
def test_bytes_after_the_request_array_are_ignored(syntax: TransferSyntax) -> None:
    stub = wrap_request_stub(b"kms", syntax) + b"\x00\x00\x00\x00\x00"
    assert unwrap_request_stub(stub, syntax) == b"kms"


def test_ndr64_request_layout() -> None:
    assert (
        wrap_request_stub(b"xy", NDR64)
        == bytes.fromhex("02000000 00000000 0200000000000000") + b"xy"
    )


BAD_REQUESTS = [
    ("ndr32-short", NDR32, bytes(7)),
    ("ndr64-short", NDR64, bytes(15)),
    ("ndr32-size-mismatch", NDR32, struct.pack("<II", 3, 4) + bytes(4)),
    ("ndr64-size-mismatch", NDR64, struct.pack("<IIQ", 4, 0, 3) + bytes(4)),
    ("ndr32-count-beyond-stub", NDR32, struct.pack("<II", 5, 5) + bytes(4)),
    ("ndr64-count-beyond-stub", NDR64, struct.pack("<IIQ", 5, 0, 5) + bytes(4)),
    ("ndr64-huge-count", NDR64, struct.pack("<IIQ", 1, 0, 1 << 40) + bytes(4)),
]


@pytest.mark.parametrize(
    ("syntax", "stub"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_inconsistent_request_stub_is_bad_stub_data(syntax: TransferSyntax, stub: bytes) -> None:
    with pytest.raises(RpcFault) as caught:
        unwrap_request_stub(stub, syntax, call_id=9, context_id=1)
    error = caught.value
    assert (error.status, error.call_id, error.context_id) == (RPC_X_BAD_STUB_DATA, 9, 1)
    assert error.action is WireAction.FAULT


BAD_RESPONSES = [
    ("ndr32-short", NDR32, bytes(11)),
    ("ndr64-short", NDR64, bytes(19)),
    ("ndr32-null-with-size", NDR32, struct.pack("<III", 4, 0, 0)),
    ("ndr32-null-too-long", NDR32, bytes(16)),
    ("ndr64-null-too-long", NDR64, bytes(24)),
    ("ndr64-non-null-too-short", NDR64, struct.pack("<IIQI", 0, 0, 0x20000, 0)),
    ("ndr32-count-mismatch", NDR32, struct.pack("<III", 4, 0x20000, 5) + bytes(8)),
    ("ndr32-length-mismatch", NDR32, struct.pack("<III", 4, 0x20000, 4) + bytes(12)),
    ("ndr64-count-mismatch", NDR64, struct.pack("<IIQQ", 4, 0, 0x20000, 5) + bytes(8)),
]


@pytest.mark.parametrize(
    ("syntax", "stub"), [c[1:] for c in BAD_RESPONSES], ids=[c[0] for c in BAD_RESPONSES]
)
def test_malformed_response_stub_is_refused(syntax: TransferSyntax, stub: bytes) -> None:
    with pytest.raises(RpcFault) as caught:
        unwrap_response_stub(stub, syntax, call_id=4)
    assert (caught.value.status, caught.value.call_id) == (RPC_X_BAD_STUB_DATA, 4)


def test_any_non_zero_referent_is_accepted() -> None:
    stub = struct.pack("<III", 2, 0x12345678, 2) + b"ok" + bytes(2) + struct.pack("<I", 0)
    assert unwrap_response_stub(stub, NDR32) == StubResult(0, b"ok")
