"""RpcClientConnection: strict checks of what a server sends back (spec 2.3, 2.4, 2.9, 3.3)."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence

import pytest
from rpc_vectors import fault_pdu

from protocol.errors import NCA_S_PROTO_ERROR, NCA_S_UNK_IF, RPC_X_BAD_STUB_DATA, RpcFault
from protocol.rpc import (
    AcceptedContext,
    AlterContextRespReceived,
    BindAckReceived,
    BindNakReceived,
    ConnectionClosing,
    FaultReceived,
    ProtocolViolation,
    ResponseReceived,
    RpcClientConnection,
    TransferSyntax,
)
from protocol.rpc.codec import build_pdu
from protocol.rpc.constants import NDR32_SYNTAX, NDR64_SYNTAX, PFC
from protocol.rpc.ndr import wrap_error_stub, wrap_response_stub
from protocol.rpc.pdus import (
    AlterContextResp,
    Bind,
    BindAck,
    BindNak,
    ContextResultItem,
    Response,
    SyntaxId,
)

NDR32, NDR64 = TransferSyntax.NDR32, TransferSyntax.NDR64
NDR32_ID = SyntaxId(NDR32_SYNTAX, 2)
NDR64_ID = SyntaxId(NDR64_SYNTAX, 1)
ZERO = SyntaxId(uuid.UUID(int=0), 0)
ACCEPT32 = ContextResultItem(0, 0, NDR32_ID)
ACCEPT64 = ContextResultItem(0, 0, NDR64_ID)
REJECT = ContextResultItem(2, 2, ZERO)
BTFN_ACK = ContextResultItem(3, 3, ZERO)


def _ack(
    *results: ContextResultItem, call_id: int = 2, flags: int = 0x13, alter: bool = False
) -> bytes:
    kind = AlterContextResp if alter else BindAck
    return build_pdu(
        kind(
            call_id=call_id,
            pfc_flags=PFC(flags),
            max_xmit_frag=5840,
            max_recv_frag=5840,
            assoc_group_id=1,
            secondary_address="" if alter else "1688",
            results=results,
        )
    )


def _response(call_id: int, stub: bytes, *, context_id: int = 0, flags: int = 0x03) -> bytes:
    return build_pdu(
        Response(
            call_id=call_id,
            pfc_flags=PFC(flags),
            alloc_hint=len(stub),
            context_id=context_id,
            stub=stub,
        )
    )


def _bound(
    *results: ContextResultItem, ndr64: bool = True, btfn: bool = True
) -> RpcClientConnection:
    client = RpcClientConnection(ndr64=ndr64, btfn=btfn)
    client.bind()
    client.data_to_send()
    client.receive_data(_ack(*results))
    return client


def _violation(events: Sequence[object], text: str) -> None:
    assert [type(e) for e in events] == [ProtocolViolation, ConnectionClosing]
    assert text in str(events[0])


def test_bind_is_the_windows_bind() -> None:
    """spec 2.2: the captured 160-byte bind, byte for byte."""
    client = RpcClientConnection()
    client.bind()
    assert client.data_to_send() == bytes.fromhex(
        "05000b1310000000a000000002000000d016d0160000000003000000000001007521c8514e845047"
        "b0d8ec255555bc0601000000045d888aeb1cc9119fe808002b10486002000000010001007521c851"
        "4e845047b0d8ec255555bc060100000033057171babe37498319b5dbef9ccc360100000002000100"
        "7521c8514e845047b0d8ec255555bc06010000002c1cb76c12984045030000000000000001000000"
    )
    assert not client.ready


def test_bind_twice_is_refused() -> None:
    client = RpcClientConnection()
    client.bind()
    with pytest.raises(RuntimeError, match="only bind"):
        client.bind()


def test_request_before_ready_is_refused() -> None:
    client = RpcClientConnection()
    with pytest.raises(RuntimeError, match="no usable"):
        client.request(b"kms")


def test_ndr64_only_bind_ack_triggers_alter_context() -> None:
    client = RpcClientConnection()
    client.bind()
    client.data_to_send()
    events = client.receive_data(_ack(REJECT, ACCEPT64, BTFN_ACK))
    assert events == [BindAckReceived(2, (AcceptedContext(1, NDR64),), 3)]
    assert not client.ready  # waiting for the alter_context_resp
    alter = client.data_to_send()
    assert alter[2:4] == b"\x0e\x13"
    assert client.receive_data(_ack(ACCEPT32, alter=True, flags=0x03)) == [
        AlterContextRespReceived(2, (AcceptedContext(0, NDR32),))
    ]
    assert client.ready


def test_alter_context_rejecting_ndr32_leaves_ndr64() -> None:
    client = RpcClientConnection(btfn=False)
    client.bind()
    client.receive_data(_ack(REJECT, ACCEPT64))
    client.data_to_send()
    assert client.receive_data(_ack(REJECT, alter=True, flags=0x03)) == [
        AlterContextRespReceived(2, ())
    ]
    assert client.ready
    client.request(b"first")
    assert client.data_to_send()[20:22] == b"\x01\x00"  # context 1, NDR64


def test_bind_ack_rejecting_everything_is_not_ready() -> None:
    client = _bound(REJECT, REJECT, ContextResultItem(2, 2, ZERO))
    assert not client.ready
    assert not client.closed
    assert client.data_to_send() == b""


def test_btfn_rejection_is_legal() -> None:
    client = RpcClientConnection(ndr64=False)
    client.bind()
    assert client.receive_data(_ack(ACCEPT32, REJECT)) == [
        BindAckReceived(2, (AcceptedContext(0, NDR32),), None)
    ]
    assert client.ready


@pytest.mark.parametrize(
    ("ack", "text"),
    [
        (_ack(ACCEPT32, call_id=3), "unexpected BindAck for call 3"),
        (_ack(ACCEPT32, flags=0x03), "flags 0x03"),
        (_ack(ACCEPT32, flags=0x11), "flags 0x11"),
        (_ack(ACCEPT32, ACCEPT32), "2 results for 1 contexts"),
        (_ack(ACCEPT64), "illegal result"),
        (_ack(ContextResultItem(0, 1, NDR32_ID)), "illegal result"),
        (_ack(ContextResultItem(3, 3, ZERO)), "illegal result"),
        (_ack(ContextResultItem(1, 0, ZERO)), "illegal result"),
        (_ack(ContextResultItem(2, 2, NDR32_ID)), "illegal result"),
        (_ack(ACCEPT32, alter=True, flags=0x03), "unexpected AlterContextResp"),
    ],
    ids=[
        "call-id",
        "no-conc-mpx",
        "no-last-frag",
        "count",
        "wrong-syntax",
        "accept-with-reason",
        "ack-ndr",
        "user-rejection",
        "rejection-with-syntax",
        "alter-resp-to-bind",
    ],
)
def test_bad_bind_acks_are_violations(ack: bytes, text: str) -> None:
    client = RpcClientConnection(ndr64=False, btfn=False)
    client.bind()
    events = client.receive_data(ack)
    _violation(events, text)
    assert client.closed
    assert client.receive_data(ack) == []


@pytest.mark.parametrize(
    "btfn",
    [ContextResultItem(3, 4, ZERO), ContextResultItem(0, 0, NDR32_ID)],
    ids=["bits", "accept"],
)
def test_bad_btfn_answers_are_violations(btfn: ContextResultItem) -> None:
    client = RpcClientConnection(ndr64=False)
    client.bind()
    _violation(client.receive_data(_ack(ACCEPT32, btfn)), "context 1: illegal result")


def test_alter_context_resp_must_not_set_conc_mpx() -> None:
    client = RpcClientConnection(btfn=False)
    client.bind()
    client.receive_data(_ack(REJECT, ACCEPT64))
    _violation(client.receive_data(_ack(ACCEPT32, alter=True, flags=0x13)), "flags 0x13")


def test_bind_nak_closes() -> None:
    client = RpcClientConnection()
    client.bind()
    nak = build_pdu(BindNak(call_id=2, reject_reason=8))
    assert client.receive_data(nak) == [
        BindNakReceived(2, 8),
        ConnectionClosing("bind rejected with reason 8"),
    ]
    assert client.closed
    assert not client.ready


def test_fault_answering_the_bind_closes() -> None:
    client = RpcClientConnection()
    client.bind()
    events = client.receive_data(fault_pdu(2, 0, NCA_S_PROTO_ERROR))
    assert events[0] == FaultReceived(2, NCA_S_PROTO_ERROR)
    assert isinstance(events[1], ConnectionClosing)
    assert client.closed


def test_responses_and_faults_for_pending_calls() -> None:
    client = _bound(ACCEPT32, ndr64=False, btfn=False)
    first = client.request(b"one")
    second = client.request(b"two")
    assert (first, second) == (2, 3)
    assert client.data_to_send()[20:22] == b"\x00\x00"
    events = client.receive_data(
        _response(second, wrap_error_stub(0x8007000D, NDR32)) + fault_pdu(first, 0, NCA_S_UNK_IF)
    )
    assert events == [ResponseReceived(3, 0x8007000D, None), FaultReceived(2, NCA_S_UNK_IF)]
    assert client.ready


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (_response(9, wrap_response_stub(b"x", NDR32)), "call 9, which is not pending"),
        (_response(2, wrap_response_stub(b"x", NDR32), flags=0x13), "response flags 0x13"),
        (_response(2, wrap_response_stub(b"x", NDR32), flags=0x01), "response flags 0x01"),
        (_response(2, wrap_response_stub(b"x", NDR32), context_id=1), "context 1, request on 0"),
        (fault_pdu(9, 0, NCA_S_UNK_IF), "fault for call 9"),
        (build_pdu(BindNak(call_id=2, reject_reason=0)), "unexpected BindNak"),
        (
            build_pdu(
                Bind(call_id=2, max_xmit_frag=1, max_recv_frag=1, assoc_group_id=0, contexts=())
            ),
            "unexpected Bind PDU from a server",
        ),
        (b"\x05\x00\x13\x03\x10\x00\x00\x00\x10\x00\x00\x00\x02\x00\x00\x00", "no body layout"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "RPC version"),
    ],
    ids=[
        "unknown-call",
        "conc-mpx",
        "fragment",
        "context",
        "fault-unknown-call",
        "late-nak",
        "bind",
        "orphaned",
        "garbage",
    ],
)
def test_bad_replies_are_violations(reply: bytes, text: str) -> None:
    client = _bound(ACCEPT32, ndr64=False, btfn=False)
    client.request(b"kms")
    _violation(client.receive_data(reply), text)


def test_malformed_response_stub_is_a_violation() -> None:
    client = _bound(ACCEPT32, ndr64=False, btfn=False)
    client.request(b"kms")
    events = client.receive_data(_response(2, struct.pack("<III", 4, 1, 5)))
    violation = events[0]
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, RpcFault)
    assert violation.error.status == RPC_X_BAD_STUB_DATA
    assert client.closed


def test_server_end_of_stream() -> None:
    client = _bound(ACCEPT32, ndr64=False, btfn=False)
    assert client.receive_data(b"") == [ConnectionClosing("server closed the connection")]
    assert client.closed
    assert not client.ready
    assert client.receive_data(b"") == []
    with pytest.raises(RuntimeError):
        client.bind()


def test_replies_split_and_coalesced() -> None:
    client = RpcClientConnection(ndr64=False, btfn=False)
    client.bind()
    data = _ack(ACCEPT32)
    events = [e for byte in data for e in client.receive_data(bytes([byte]))]
    assert events == [BindAckReceived(2, (AcceptedContext(0, NDR32),), None)]
    client.request(b"a")
    client.request(b"b")
    both = _response(2, wrap_response_stub(b"A", NDR32)) + _response(
        3, wrap_response_stub(b"B", NDR32)
    )
    assert client.receive_data(both) == [ResponseReceived(2, 0, b"A"), ResponseReceived(3, 0, b"B")]
