"""The RPC layouts as derived (protocol.layout) give construct's own answers, and the spec's.

``protocol.rpc.schema`` is the one declaration of every layout; the codec runs it through
the readers and writers derived from it. Every captured PDU, generated requests, responses,
binds, alter_contexts and their acks, and arbitrary, mutated or truncated bytes parse and
build identically when ``construct`` interprets the same declarations (``interpreted``,
every memo cleared), errors included (same type, same call_id). Fields of the negotiation
PDUs are also checked at the byte offsets of the spec tables, which no shared declaration
can fake.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest
from construct import Struct
from hypothesis import given
from hypothesis import strategies as st
from interpreted import Interpreted, interpreted, layouts, same
from rpc_vectors import all_exchanges

from protocol.rpc import codec, ndr, schema
from protocol.rpc.codec import build_pdu, parse_header, parse_pdu
from protocol.rpc.constants import PFC, PType, TransferSyntax
from protocol.rpc.negotiation import KMS_INTERFACE_ID, NULL_SYNTAX, SYNTAX_IDS, btfn_syntax
from protocol.rpc.pdus import (
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    ContextElement,
    ContextResultItem,
    Fault,
    Request,
    Response,
    SyntaxId,
)

EXCHANGES = all_exchanges()
NEGOTIATION = ("bind", "bind_ack", "alter_context", "alter_context_resp")
NESTED = {"SyntaxId", "ContextElement", "ContextResult", "ALTER_CONTEXT_BODY"}


def built_alike(pdu: Any) -> bytes | None:
    """``build_pdu(pdu)`` once both paths gave the same bytes or the same error (then None)."""
    built = same(build_pdu, pdu)
    return built[1] if built[0] == "ok" else None  # type: ignore[return-value]


def test_every_schema_declaration_is_run_by_exactly_one_derived_layout() -> None:
    declared = {
        name: value
        for name, value in vars(schema).items()
        if isinstance(value, Struct) and name not in NESTED
    }
    derived = [layout.declaration for owner, _, layout in layouts() if owner in (codec, ndr)]
    derived += [
        layout.declaration
        for owner, _, layout in layouts()
        if isinstance(owner, dict) and owner in vars(ndr).values()
    ]
    assert sorted(id(d) for d in derived) == sorted(id(d) for d in declared.values())


def test_the_interpreted_path_is_taken() -> None:
    with interpreted():
        assert isinstance(codec._BIND, Interpreted)
        assert parse_pdu(EXCHANGES[0][1].data) is not None
    assert not isinstance(codec._BIND, Interpreted)


@pytest.mark.parametrize("exchange", [e for _, e in EXCHANGES], ids=[i for i, _ in EXCHANGES])
def test_captured_pdus_agree(exchange: Any) -> None:
    kind, pdu = same(parse_pdu, exchange.data)
    assert kind == "ok"
    same(build_pdu, pdu)
    same(parse_header, exchange.data)


def test_the_truncated_sample_has_every_captured_pdu_type() -> None:
    assert {e.ptype for _, e in EXCHANGES[:12]} == {e.ptype for _, e in EXCHANGES}


@pytest.mark.parametrize(
    "exchange", [e for _, e in EXCHANGES[:12]], ids=[i for i, _ in EXCHANGES[:12]]
)
def test_truncated_captured_pdus_agree(exchange: Any) -> None:
    for end in range(len(exchange.data)):
        frame = bytearray(exchange.data[:end])
        if end >= 10:
            frame[8:10] = end.to_bytes(2, "little")  # keep frag_length consistent
        same(parse_pdu, bytes(frame))


def frame_of(ptype: int, flags: int, body: bytes) -> bytes:
    """``body`` behind a little-endian 5.0 header with a consistent frag_length, call_id 7."""
    header = bytes([5, 0, ptype, flags]) + b"\x10\x00\x00\x00"
    return header + (16 + len(body)).to_bytes(2, "little") + b"\x00\x00\x07\x00\x00\x00" + body


@given(st.binary(max_size=120), st.sampled_from([0x00, 0x02]), st.integers(0, 255))
def test_arbitrary_request_and_response_bodies_agree(body: bytes, ptype: int, flags: int) -> None:
    same(parse_pdu, frame_of(ptype, flags, body))


@given(st.binary(max_size=160), st.sampled_from([PType[name.upper()] for name in NEGOTIATION]))
def test_arbitrary_negotiation_bodies_agree(body: bytes, ptype: int) -> None:
    same(parse_pdu, frame_of(ptype, 0x13, body))


@given(st.binary(max_size=40))
def test_arbitrary_headers_agree(data: bytes) -> None:
    same(parse_header, data)


u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)


@given(
    call_id=u32,
    alloc_hint=st.integers(-1, 2**32),
    context_id=st.integers(-1, 0x10000),
    opnum=u16,
    flags=st.integers(0, 255),
    object_uuid=st.none() | st.uuids(),
    stub=st.binary(max_size=64),
)
def test_generated_requests_agree(
    call_id: int,
    alloc_hint: int,
    context_id: int,
    opnum: int,
    flags: int,
    object_uuid: uuid.UUID | None,
    stub: bytes,
) -> None:
    pdu = Request(
        call_id=call_id,
        pfc_flags=PFC(flags),
        alloc_hint=alloc_hint,
        context_id=context_id,
        opnum=opnum,
        object_uuid=object_uuid,
        stub=stub,
    )
    built = built_alike(pdu)
    if built is not None:
        same(parse_pdu, built)


@given(call_id=u32, alloc_hint=u32, context_id=u16, cancel=st.integers(0, 256), stub=st.binary())
def test_generated_responses_agree(
    call_id: int, alloc_hint: int, context_id: int, cancel: int, stub: bytes
) -> None:
    pdu = Response(
        call_id=call_id,
        pfc_flags=PFC.FIRST_FRAG | PFC.LAST_FRAG,
        alloc_hint=alloc_hint,
        context_id=context_id,
        cancel_count=cancel,
        stub=stub,
    )
    built = built_alike(pdu)
    if built is not None:
        same(parse_pdu, built)


# --- bind, alter_context and their acks (spec 2.2, 2.3) ----------------------------------

NDR32 = next(iter(SYNTAX_IDS.values()))
# The syntaxes of a KMS negotiation (which the fast parser shares), near misses, and any.
KNOWN = [KMS_INTERFACE_ID, NULL_SYNTAX, *SYNTAX_IDS.values(), btfn_syntax(3), btfn_syntax(1)]


def ints(bits: int, *, wide: bool) -> st.SearchStrategy[int]:
    """Unsigned ``bits``-bit values; ``wide`` adds one past either end, refused by both paths."""
    return st.integers(-1 if wide else 0, 2**bits if wide else 2**bits - 1)


def negotiation_pdus(*, wide: bool) -> st.SearchStrategy[Any]:
    """Binds, alter_contexts and their acks: 0..3 contexts or results, 0..3 transfer syntaxes.

    Secondary addresses of 0..8 digits give every padding length (spec 2.3: L = digits + 1);
    with ``wide``, also any text, so non-ASCII (refused when building) and NUL (refused when
    parsing).
    """
    syntaxes = st.sampled_from(KNOWN) | st.builds(SyntaxId, st.uuids(), ints(32, wide=wide))
    elements = st.builds(
        ContextElement,
        ints(16, wide=wide),
        syntaxes,
        st.lists(syntaxes, max_size=3).map(tuple),
    )
    results = st.builds(ContextResultItem, ints(16, wide=wide), ints(16, wide=wide), syntaxes)
    addresses = st.text("0123456789", max_size=8)
    common = {
        "call_id": ints(32, wide=wide),
        "pfc_flags": st.builds(PFC, u8),
        "rpc_vers": u8,
        "rpc_vers_minor": u8,
        "auth_length": u16,
        "max_xmit_frag": ints(16, wide=wide),
        "max_recv_frag": u16,
        "assoc_group_id": ints(32, wide=wide),
    }
    proposal = {"contexts": st.lists(elements, max_size=3).map(tuple)}
    reply = {
        "secondary_address": addresses | st.text(max_size=4) if wide else addresses,
        "results": st.lists(results, max_size=3).map(tuple),
    }
    return st.one_of(
        st.builds(Bind, **common, **proposal),
        st.builds(AlterContext, **common, **proposal),
        st.builds(BindAck, **common, **reply),
        st.builds(AlterContextResp, **common, **reply),
    )


@given(negotiation_pdus(wide=True))
def test_generated_negotiation_pdus_agree_and_round_trip(pdu: Any) -> None:
    built = built_alike(pdu)
    if built is None:
        return
    parsed = same(parse_pdu, built)
    if "\0" in getattr(pdu, "secondary_address", ""):
        assert parsed[0] == "error"  # built as given, refused by _port_string on both paths
    else:
        assert parsed == ("ok", pdu)


@given(negotiation_pdus(wide=False), st.data())
def test_mutated_negotiation_pdus_agree(pdu: Any, data: st.DataObject) -> None:
    wire = bytearray(build_pdu(pdu))
    for _ in range(data.draw(st.integers(0, 3))):
        wire[data.draw(st.integers(16, len(wire) - 1))] = data.draw(u8)
    wire = wire[: data.draw(st.integers(16, len(wire)))] + data.draw(st.binary(max_size=8))
    struct.pack_into("<H", wire, 8, len(wire))  # keep frag_length consistent
    same(parse_pdu, bytes(wire))


@given(
    sec_addr=st.binary(max_size=9) | st.text("0123456789", max_size=8).map(str.encode),
    terminate=st.booleans(),
    stale=st.binary(min_size=3, max_size=3),
    results=st.lists(st.binary(min_size=24, max_size=24), max_size=3),
    ptype=st.sampled_from([PType.BIND_ACK, PType.ALTER_CONTEXT_RESP]),
)
def test_secondary_addresses_and_stale_padding_agree(
    sec_addr: bytes, terminate: bool, stale: bytes, results: list[bytes], ptype: int
) -> None:
    sec_addr += b"\0" if terminate else b""
    start = 26 + len(sec_addr)
    padding = stale[: (start + 3) // 4 * 4 - start]  # spec 2.3: n_results at align4(26 + L)
    head = struct.pack("<HHIH", 5840, 5840, 7, len(sec_addr))
    body = head + sec_addr + padding + bytes([len(results), 0, 0, 0]) + b"".join(results)
    parsed = same(parse_pdu, frame_of(ptype, 0x03, body))
    one_string = sec_addr.isascii() and sec_addr.find(0) == len(sec_addr) - 1
    assert (parsed[0] == "ok") == (not sec_addr or one_string)


@pytest.mark.parametrize("digits", range(8))
def test_every_padding_is_zeros_and_aligns_n_results(digits: int) -> None:
    length = digits + 1 if digits else 0  # sec_addr.length counts the NUL (spec 2.3)
    pdu = BindAck(
        call_id=2,
        max_xmit_frag=5840,
        max_recv_frag=5840,
        assoc_group_id=7,
        secondary_address="7" * digits,
        results=(ContextResultItem(0, 0, NDR32),),
    )
    wire = built_alike(pdu)
    assert wire is not None
    n_results_at = (26 + length + 3) // 4 * 4
    assert wire[26 + length : n_results_at] == bytes(n_results_at - 26 - length)
    assert wire[n_results_at : n_results_at + 4] == b"\x01\x00\x00\x00"
    assert len(wire) == n_results_at + 4 + 24
    assert same(parse_pdu, wire) == ("ok", pdu)


def _bind(*contexts: ContextElement) -> Bind:
    return Bind(
        call_id=2, max_xmit_frag=5840, max_recv_frag=5840, assoc_group_id=0, contexts=contexts
    )


def _bind_ack(address: str, *results: ContextResultItem) -> BindAck:
    return BindAck(
        call_id=2,
        max_xmit_frag=5840,
        max_recv_frag=5840,
        assoc_group_id=7,
        secondary_address=address,
        results=results,
    )


NDR32_ELEMENT = ContextElement(0, KMS_INTERFACE_ID, (NDR32,))
ACCEPTED = ContextResultItem(0, 0, NDR32)
OUT_OF_RANGE = {
    "256 contexts": _bind(*[NDR32_ELEMENT] * 256),
    "256 transfer syntaxes": _bind(ContextElement(0, KMS_INTERFACE_ID, (NDR32,) * 256)),
    "frag_length over 65535": _bind(*[ContextElement(0, KMS_INTERFACE_ID, (NDR32,) * 13)] * 255),
    "256 results": _bind_ack("1688", *[ACCEPTED] * 256),
    "sec_addr.length over 65535": _bind_ack("1" * 65535, ACCEPTED),
    "non-ASCII secondary address": _bind_ack("\uff11\uff16\uff18\uff18", ACCEPTED),
}


@pytest.mark.parametrize("pdu", OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_unbuildable_negotiation_pdus_fail_alike(pdu: Any) -> None:
    assert built_alike(pdu) is None


# --- the spec tables' offsets (spec 2.2, 2.3, 3.2, 3.3, 3.5) ------------------------------


def le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def test_bind_fields_sit_at_the_spec_offsets() -> None:
    element = ContextElement(0x0405, KMS_INTERFACE_ID, (NDR32,))
    pdu = Bind(
        call_id=0x01020304,
        max_xmit_frag=0x1234,
        max_recv_frag=0x5678,
        assoc_group_id=0x9ABCDEF0,
        contexts=(element,),
    )
    wire = built_alike(pdu)
    assert wire is not None
    assert (wire[2], wire[8:10], wire[12:16]) == (0x0B, le(len(wire), 2), le(0x01020304, 4))
    assert wire[16:18] == le(0x1234, 2)  # max_xmit_frag
    assert wire[18:20] == le(0x5678, 2)  # max_recv_frag
    assert wire[20:24] == le(0x9ABCDEF0, 4)  # assoc_group_id
    assert wire[24:28] == b"\x01\x00\x00\x00"  # n_context_elem, 3 reserved
    assert wire[28:32] == le(0x0405, 2) + b"\x01\x00"  # p_cont_id, n_transfer_syn, reserved
    assert wire[32:52] == KMS_INTERFACE_ID.uuid.bytes_le + le(KMS_INTERFACE_ID.version, 4)
    assert wire[52:72] == NDR32.uuid.bytes_le + le(NDR32.version, 4)
    assert len(wire) == 72
    assert parse_pdu(wire) == pdu


def test_bind_ack_fields_sit_at_the_spec_offsets() -> None:
    result = ContextResultItem(0x0002, 0x0003, NDR32)
    pdu = BindAck(
        call_id=2,
        max_xmit_frag=0x1234,
        max_recv_frag=0x5678,
        assoc_group_id=0x9ABCDEF0,
        secondary_address="1688",
        results=(result,),
    )
    wire = built_alike(pdu)
    assert wire is not None
    assert (wire[16:18], wire[18:20], wire[20:24]) == (
        le(0x1234, 2),
        le(0x5678, 2),
        le(0x9ABCDEF0, 4),
    )
    assert wire[24:26] == le(5, 2)  # sec_addr.length counts the NUL
    assert wire[26:31] == b"1688\0"
    assert wire[31:32] == b"\0"  # padding to align4(26 + 5) = 32
    assert wire[32:36] == b"\x01\x00\x00\x00"  # n_results, 3 reserved
    assert wire[36:40] == le(2, 2) + le(3, 2)  # result, reason
    assert wire[40:60] == NDR32.uuid.bytes_le + le(NDR32.version, 4)
    assert parse_pdu(wire) == pdu


def test_request_response_and_fault_fields_sit_at_the_spec_offsets() -> None:
    object_uuid = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    request = Request(
        call_id=9,
        alloc_hint=0x11223344,
        context_id=0x0506,
        opnum=0x0708,
        object_uuid=object_uuid,
        stub=b"stub",
    )
    wire = built_alike(request)
    assert wire is not None
    assert wire[3] & PFC.OBJECT_UUID
    assert (wire[16:20], wire[20:22], wire[22:24]) == (
        le(0x11223344, 4),
        le(0x0506, 2),
        le(0x0708, 2),
    )
    assert (wire[24:40], wire[40:]) == (object_uuid.bytes_le, b"stub")
    response = Response(call_id=9, alloc_hint=4, context_id=0x0506, cancel_count=7, stub=b"ok")
    wire = built_alike(response)
    assert wire is not None
    assert (wire[16:20], wire[20:22], wire[22:24], wire[24:]) == (
        le(4, 4),
        le(0x0506, 2),
        b"\x07\0",
        b"ok",
    )
    fault = Fault(call_id=9, alloc_hint=0, context_id=0x0506, cancel_count=0, status=0x1C010003)
    wire = built_alike(fault)
    assert wire is not None
    assert (wire[20:22], wire[24:28], wire[28:32], len(wire)) == (
        le(0x0506, 2),
        le(0x1C010003, 4),
        bytes(4),
        32,
    )
    assert parse_pdu(wire) == fault


# --- the NDR stubs of RequestActivation (spec 3.2, 3.4) -----------------------------------


@given(st.binary(max_size=300), st.sampled_from(list(TransferSyntax)))
def test_generated_stubs_agree_and_round_trip(message: bytes, syntax: TransferSyntax) -> None:
    request = same(ndr.wrap_request_stub, message, syntax)
    assert same(ndr.unwrap_request_stub, request[1], syntax) == ("ok", message)
    response = same(ndr.wrap_response_stub, message, syntax)
    assert same(ndr.unwrap_response_stub, response[1], syntax) == (
        "ok",
        ndr.StubResult(0, message),
    )
    error = same(ndr.wrap_error_stub, len(message), syntax)
    assert same(ndr.unwrap_response_stub, error[1], syntax) == (
        "ok",
        ndr.StubResult(len(message), None),
    )


@given(st.binary(max_size=64), st.sampled_from(list(TransferSyntax)))
def test_arbitrary_stubs_agree(stub: bytes, syntax: TransferSyntax) -> None:
    same(ndr.unwrap_request_stub, stub, syntax)
    same(ndr.unwrap_response_stub, stub, syntax)
