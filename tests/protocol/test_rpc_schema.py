"""Schemas and codec against captured PDUs and hand-assembled spec bytes (construct triad)."""

from __future__ import annotations

import struct
import uuid

import pytest
from construct import Container
from rpc_vectors import Exchange, all_exchanges

from protocol.errors import NCA_S_UNK_IF, MalformedPdu
from protocol.rpc import schema
from protocol.rpc.codec import build_pdu, parse_header, parse_pdu
from protocol.rpc.constants import KMS_INTERFACE, NDR32_SYNTAX, NDR64_SYNTAX, PFC, PType
from protocol.rpc.pdus import (
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    BindNak,
    ContextElement,
    ContextResultItem,
    Fault,
    Request,
    Response,
    SyntaxId,
)

EXCHANGES = all_exchanges()
TYPES = {
    "bind": Bind,
    "bind_ack": BindAck,
    "alter_context": AlterContext,
    "alter_context_resp": AlterContextResp,
    "request": Request,
    "response": Response,
}
TRANSFER_NAMES = {"NDR32": NDR32_SYNTAX, "NDR64": NDR64_SYNTAX}
KMS_IF = SyntaxId(KMS_INTERFACE, 1)
NDR32 = SyntaxId(NDR32_SYNTAX, 2)


def _transfer_uuid(name: str) -> uuid.UUID:
    if name in TRANSFER_NAMES:
        return TRANSFER_NAMES[name]
    if name == "BTFN":
        return uuid.UUID("6cb71c2c-9812-4540-0300-000000000000")
    return uuid.UUID(name)


@pytest.mark.parametrize("exchange", [e for _, e in EXCHANGES], ids=[i for i, _ in EXCHANGES])
def test_captured_pdu_round_trips(exchange: Exchange) -> None:
    pdu = parse_pdu(exchange.data)
    assert type(pdu) is TYPES[exchange.ptype]
    assert pdu.call_id == exchange.call_id
    built = build_pdu(pdu)
    assert len(built) == exchange.pdu["frag_length"] == len(exchange.data)
    if isinstance(pdu, AlterContextResp):
        # vlmcsd leaves 2 stale bytes in the padding after the empty secondary address
        # (spec 2.3); we write zeros. Everything else is byte-identical.
        assert built[26:28] == b"\x00\x00"
        assert built[:26] + built[28:] == exchange.data[:26] + exchange.data[28:]
    else:
        assert built == exchange.data


@pytest.mark.parametrize("exchange", [e for _, e in EXCHANGES], ids=[i for i, _ in EXCHANGES])
def test_captured_pdu_fields_match_capture_decoding(exchange: Exchange) -> None:
    pdu = parse_pdu(exchange.data)
    record = exchange.pdu
    match pdu:
        case Bind() | AlterContext():
            assert pdu.assoc_group_id == record["assoc_group"]
            assert [(c.context_id, c.abstract_syntax.uuid) for c in pdu.contexts] == [
                (item["ctx_id"], uuid.UUID(item["abstract"])) for item in record["ctx_items"]
            ]
            assert [c.transfer_syntaxes for c in pdu.contexts] == [
                (SyntaxId(_transfer_uuid(item["transfer"]), item["transfer_ver"]),)
                for item in record["ctx_items"]
            ]
        case BindAck() | AlterContextResp():
            assert pdu.assoc_group_id == record["assoc_group"]
            assert pdu.secondary_address == record["secondary_addr"]
            assert [(r.result, r.reason, r.transfer_syntax.uuid) for r in pdu.results] == [
                (item["result"], item["reason"], _transfer_uuid(item["transfer"]))
                for item in record["results"]
            ]
        case Request() | Response():
            assert pdu.context_id == record["ctx_id"]
            assert pdu.alloc_hint == len(pdu.stub)
        case _:  # pragma: no cover - the captures hold only the six types above
            pytest.fail(f"unexpected {pdu!r}")


def test_fixed_size_structs_sizeof() -> None:
    assert schema.CommonHeader.sizeof() == schema.COMMON_HEADER_SIZE == 16
    assert schema.SyntaxId.sizeof() == 20
    assert schema.ContextResult.sizeof() == 24  # p_result_t, spec 2.3
    assert schema.FAULT_BODY.sizeof() == 16  # fault PDU is 32 bytes, spec 3.5


def test_context_element_triad() -> None:
    # First element of the captured bind in spec 2.2.
    wire = bytes.fromhex(
        "00000100 7521c8514e845047b0d8ec255555bc06 01000000"
        " 045d888aeb1cc9119fe808002b104860 02000000"
    )
    parsed = schema.ContextElement.parse(wire)
    assert parsed.context_id == 0
    assert parsed.n_transfer_syn == 1
    assert schema.ContextElement.build(parsed) == wire
    assert len(wire) == 44  # "44 bytes when it has one transfer syntax"


def test_header_parse_of_captured_bind() -> None:
    header = parse_header(EXCHANGES[0][1].data)
    assert (header.rpc_vers, header.rpc_vers_minor, header.ptype) == (5, 0, PType.BIND)
    assert header.pfc_flags == PFC.FIRST_FRAG | PFC.LAST_FRAG | PFC.CONC_MPX
    assert header.drep == b"\x10\x00\x00\x00"
    assert header.auth_length == 0


def test_spec_fault_capture_parses_with_vlmcsd_stale_bytes() -> None:
    # spec 3.5: vlmcsd's fault with call_id 2 (its bug) and stale cancel_count 0x11.
    wire = bytes.fromhex("05000323100000002000000002000000 2000000000001117030001 1c00000000")
    fault = parse_pdu(wire)
    assert isinstance(fault, Fault)
    assert (fault.call_id, fault.context_id, fault.status) == (2, 0, NCA_S_UNK_IF)
    assert fault.cancel_count == 0x11


def test_fault_builds_to_hand_assembled_bytes() -> None:
    fault = Fault(
        call_id=7,
        pfc_flags=PFC.FIRST_FRAG | PFC.LAST_FRAG | PFC.DID_NOT_EXECUTE,
        alloc_hint=32,
        context_id=5,
        status=NCA_S_UNK_IF,
    )
    assert build_pdu(fault) == bytes.fromhex(
        "05000323100000002000000007000000 20000000050000000300011c00000000"
    )


def test_bind_nak_builds_to_spec_layout() -> None:
    # spec 2.8: reason u16, n_protocols 1, versions 5.0, pad to 4 from the PDU start.
    nak = BindNak(call_id=2, reject_reason=4)
    wire = bytes.fromhex("05000d03100000001800000002000000 0400010500000000")
    assert build_pdu(nak) == wire
    assert parse_pdu(wire) == nak


@pytest.mark.parametrize(
    ("port", "padding"), [("1688", 1), ("11683", 0), ("135", 2), ("1", 0), ("", 2)]
)
def test_bind_ack_secondary_address_padding(port: str, padding: int) -> None:
    """n_results starts at align4(26 + L) from the PDU start (spec 2.3, 10.4)."""
    ack = BindAck(
        call_id=2,
        max_xmit_frag=5840,
        max_recv_frag=5840,
        assoc_group_id=0x1063BF3F,
        secondary_address=port,
        results=(ContextResultItem(0, 0, NDR32),),
    )
    wire = build_pdu(ack)
    length = len(port) + 1 if port else 0
    start = 26 + length + padding
    assert start % 4 == 0
    assert struct.unpack_from("<H", wire, 24)[0] == length
    assert wire[26 + length : start] == bytes(padding)
    assert wire[start] == 1  # n_results
    assert len(wire) == start + 4 + 24
    assert parse_pdu(wire) == ack


def test_request_object_uuid_follows_the_flag() -> None:
    object_uuid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    request = Request(
        call_id=9, alloc_hint=3, context_id=1, opnum=0, object_uuid=object_uuid, stub=b"abc"
    )
    wire = build_pdu(request)
    assert wire[3] & PFC.OBJECT_UUID
    assert wire[24:40] == object_uuid.bytes_le
    assert wire[40:] == b"abc"
    parsed = parse_pdu(wire)
    assert isinstance(parsed, Request)
    assert parsed.object_uuid == object_uuid
    assert parsed.pfc_flags == PFC.FIRST_FRAG | PFC.LAST_FRAG | PFC.OBJECT_UUID
    # A flag without a UUID (or the reverse) is never written.
    flagged = Request(
        call_id=9,
        pfc_flags=PFC.FIRST_FRAG | PFC.LAST_FRAG | PFC.OBJECT_UUID,
        alloc_hint=3,
        context_id=1,
        opnum=0,
        stub=b"abc",
    )
    assert build_pdu(flagged)[3] == 0x03


def test_bind_walks_n_transfer_syn() -> None:
    element = ContextElement(
        context_id=0,
        abstract_syntax=KMS_IF,
        transfer_syntaxes=(SyntaxId(uuid.UUID(int=1), 7), NDR32, SyntaxId(NDR64_SYNTAX, 1)),
    )
    bind = Bind(
        call_id=1, max_xmit_frag=5840, max_recv_frag=5840, assoc_group_id=0, contexts=(element,)
    )
    wire = build_pdu(bind)
    assert wire[30] == 3  # n_transfer_syn of the first element (offset 28 + 2)
    assert len(wire) == 28 + 24 + 3 * 20
    assert parse_pdu(wire) == bind


def _bind_wire(n_context_elem: int) -> bytes:
    body = struct.pack("<HHIB3x", 5840, 5840, 0, n_context_elem)
    element = struct.pack("<HBx", 0, 1) + KMS_IF.uuid.bytes_le + b"\x01\x00\x00\x00"
    element += NDR32.uuid.bytes_le + b"\x02\x00\x00\x00"
    body += element
    header = struct.pack("<BBBB4sHHI", 5, 0, 0x0B, 0x03, b"\x10\0\0\0", 16 + len(body), 0, 42)
    return header + body


def test_bind_element_count_beyond_body_is_malformed() -> None:
    assert isinstance(parse_pdu(_bind_wire(1)), Bind)
    with pytest.raises(MalformedPdu) as caught:
        parse_pdu(_bind_wire(2))
    assert caught.value.call_id == 42


def test_truncated_header_is_malformed_without_call_id() -> None:
    with pytest.raises(MalformedPdu) as caught:
        parse_pdu(b"\x05\x00\x0b")
    assert caught.value.call_id == 0


def test_frag_length_must_match_the_frame() -> None:
    wire = _bind_wire(1)
    with pytest.raises(MalformedPdu, match="frag_length") as caught:
        parse_pdu(wire + b"\x00")
    assert caught.value.call_id == 42


@pytest.mark.parametrize("ptype", [0x01, 0x10, 0x11, 0x12, 0x13, 0x7F])
def test_types_without_a_body_layout_are_malformed(ptype: int) -> None:
    wire = struct.pack("<BBBB4sHHI", 5, 0, ptype, 3, b"\x10\0\0\0", 16, 0, 3)
    with pytest.raises(MalformedPdu, match="no body layout") as caught:
        parse_pdu(wire)
    assert caught.value.call_id == 3


@pytest.mark.parametrize("ptype", [0x00, 0x02, 0x03, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F])
def test_truncated_bodies_are_malformed(ptype: int) -> None:
    wire = struct.pack("<BBBB4sHHI", 5, 0, ptype, 3, b"\x10\0\0\0", 18, 0, 77) + b"\x01\x00"
    with pytest.raises(MalformedPdu) as caught:
        parse_pdu(wire)
    assert caught.value.call_id == 77


@pytest.mark.parametrize("address", [b"1688", b"16\x0088\x00", b"\xff\x00"])
def test_bad_secondary_address_is_malformed(address: bytes) -> None:
    body = struct.pack("<HHIH", 5840, 5840, 1, len(address)) + address
    body += bytes(-(26 + len(address)) % 4) + b"\x00\x00\x00\x00"
    wire = struct.pack("<BBBB4sHHI", 5, 0, 0x0C, 3, b"\x10\0\0\0", 16 + len(body), 0, 8) + body
    with pytest.raises(MalformedPdu, match="bind_ack") as caught:
        parse_pdu(wire)
    assert caught.value.call_id == 8


def test_body_structs_ignore_trailing_auth_verifier() -> None:
    """Bytes after the last bind element are not read (spec 2.2 note, codec docstring)."""
    wire = _bind_wire(1) + bytes(8)
    wire = wire[:8] + struct.pack("<H", len(wire)) + wire[10:]
    bind = parse_pdu(wire)
    assert isinstance(bind, Bind)
    assert len(bind.contexts) == 1


def test_codec_containers_stay_inside() -> None:
    pdu = parse_pdu(EXCHANGES[0][1].data)
    assert not any(isinstance(getattr(pdu, name), Container) for name in pdu.__dataclass_fields__)
