"""RpcServerConnection: captured conversations replayed, client/server pairs, faults, bind_nak.

Expected bytes come from the captures (vlmcsd and py-kms servers) or are assembled by hand
from the spec tables; our codec only builds *inputs* and decodes outputs for field checks.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence

import pytest
from rpc_vectors import (
    Conversation,
    assoc_group_id,
    fault_pdu,
    load_conversations,
    load_malformed,
)

from protocol.errors import (
    NCA_S_FAULT_UNSPEC,
    NCA_S_OP_RNG_ERROR,
    NCA_S_PROTO_ERROR,
    NCA_S_UNK_IF,
    RPC_X_BAD_STUB_DATA,
    FramingError,
    MalformedPdu,
    RpcError,
    RpcFault,
    WireAction,
)
from protocol.rpc import (
    AcceptedContext,
    AlterContextResp,
    AlterContextRespReceived,
    BindAck,
    BindAckReceived,
    BindCompleted,
    CallReceived,
    ClientEvent,
    ConnectionClosing,
    FaultReceived,
    ProtocolViolation,
    PType,
    ResponseReceived,
    RpcClientConnection,
    RpcServerConnection,
    ServerEvent,
    ServerSettings,
    TransferSyntax,
)
from protocol.rpc.codec import build_pdu, parse_pdu
from protocol.rpc.constants import KMS_INTERFACE, NDR32_SYNTAX, NDR64_SYNTAX, PFC
from protocol.rpc.ndr import wrap_request_stub
from protocol.rpc.negotiation import btfn_syntax
from protocol.rpc.pdus import AlterContext, Bind, ContextElement, Request, SyntaxId

NDR32, NDR64 = TransferSyntax.NDR32, TransferSyntax.NDR64
SYNTAX = {"ndr32": NDR32, "ndr64": NDR64}
KMS_IF = SyntaxId(KMS_INTERFACE, 1)
NDR32_ID = SyntaxId(NDR32_SYNTAX, 2)
NDR64_ID = SyntaxId(NDR64_SYNTAX, 1)
ZERO = SyntaxId(uuid.UUID(int=0), 0)
CONVERSATIONS = load_conversations()
# The valid NDR32+BTFN bind that malformed.jsonl sends first (call_id 2).
PREAMBLE = next(case.preamble for case in load_malformed() if case.preamble is not None)


def _server(**settings: int | bool) -> RpcServerConnection:
    defaults: dict[str, int | bool] = {"port": 1688, "assoc_group_id": 0x11223344}
    return RpcServerConnection(ServerSettings(**(defaults | settings)))  # type: ignore[arg-type]


def _element(context_id: int, *syntaxes: SyntaxId, abstract: SyntaxId = KMS_IF) -> ContextElement:
    return ContextElement(context_id, abstract, syntaxes)


def _bind(
    *elements: ContextElement,
    call_id: int = 2,
    flags: int = 0x13,
    assoc: int = 0,
    alter: bool = False,
    **header: int,
) -> bytes:
    kind = AlterContext if alter else Bind
    pdu = kind(
        call_id=call_id,
        pfc_flags=PFC(flags),
        max_xmit_frag=5840,
        max_recv_frag=5840,
        assoc_group_id=assoc,
        contexts=elements,
        **header,
    )
    return build_pdu(pdu)


def _request(
    kms: bytes = b"kms",
    *,
    call_id: int = 3,
    context_id: int = 0,
    opnum: int = 0,
    syntax: TransferSyntax = NDR32,
    flags: int = 0x03,
    auth_length: int = 0,
    stub: bytes | None = None,
) -> bytes:
    stub = wrap_request_stub(kms, syntax) if stub is None else stub
    return build_pdu(
        Request(
            call_id=call_id,
            pfc_flags=PFC(flags),
            auth_length=auth_length,
            alloc_hint=len(stub),
            context_id=context_id,
            opnum=opnum,
            stub=stub,
        )
    )


def _bound_server(**settings: int | bool) -> RpcServerConnection:
    server = _server(**settings)
    server.receive_data(PREAMBLE)  # NDR32 accepted as context 0
    assert server.data_to_send()
    return server


def _run(
    client: RpcClientConnection, server: RpcServerConnection
) -> tuple[list[ServerEvent], list[ClientEvent]]:
    server_events: list[ServerEvent] = []
    client_events: list[ClientEvent] = []
    while data := client.data_to_send():
        server_events += server.receive_data(data)
        if reply := server.data_to_send():
            client_events += client.receive_data(reply)
    return server_events, client_events


# --- captured conversations ----------------------------------------------------------


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=str)
def test_server_reproduces_captured_replies(conversation: Conversation) -> None:
    for connection in conversation.connections:
        bind_ack = next(e for e in connection if e.ptype == "bind_ack")
        server = RpcServerConnection(
            ServerSettings(
                port=conversation.server_port,
                assoc_group_id=assoc_group_id(bind_ack.data),
                ndr64=conversation.server_ndr64,
            )
        )
        call: CallReceived | None = None
        for exchange in connection:
            if exchange.direction == "c2s":
                events = server.receive_data(exchange.data)
                assert len(events) == 1
                if exchange.ptype == "request":
                    call = CallReceived(
                        exchange.call_id,
                        exchange.pdu["ctx_id"],
                        0,
                        SYNTAX[exchange.ndr],
                        exchange.request_kms(),
                    )
                    assert events == [call]
                else:
                    assert isinstance(events[0], BindCompleted)
                    assert events[0].call_id == exchange.call_id
                continue
            if exchange.ptype == "response":
                assert call is not None
                server.send_kms_response(call, exchange.response_kms())
            out = server.data_to_send()
            if exchange.ptype == "alter_context_resp":  # stale padding in vlmcsd's (spec 2.3)
                assert out[26:28] == b"\x00\x00"
                assert out[:26] + out[28:] == exchange.data[:26] + exchange.data[28:]
            else:
                assert out == exchange.data
        assert not server.closed


@pytest.mark.parametrize("conversation", [c for c in CONVERSATIONS if c.client == "vlmcs"], ids=str)
def test_client_reproduces_captured_requests(conversation: Conversation) -> None:
    for connection in conversation.connections:
        client = RpcClientConnection(
            ndr64=conversation.client_ndr64,
            btfn=conversation.client_btfn,
            first_call_id=connection[0].call_id,
        )
        client.bind()
        for exchange in connection:
            if exchange.direction == "c2s":
                if exchange.ptype == "request":
                    assert client.request(exchange.request_kms()) == exchange.call_id
                assert client.data_to_send() == exchange.data
                continue
            events = client.receive_data(exchange.data)
            match exchange.ptype:
                case "bind_ack":
                    assert [type(e) for e in events] == [BindAckReceived]
                case "alter_context_resp":
                    assert events == [AlterContextRespReceived(2, (AcceptedContext(0, NDR32),))]
                case _:
                    kms = exchange.response_kms()
                    assert events == [ResponseReceived(exchange.call_id, 0, kms)]
        assert client.ready


# --- client and server in memory ------------------------------------------------------


@pytest.mark.parametrize("server_ndr64", [True, False])
@pytest.mark.parametrize("server_btfn", [True, False])
@pytest.mark.parametrize("client_ndr64", [True, False])
@pytest.mark.parametrize("client_btfn", [True, False])
def test_client_server_pair(
    server_ndr64: bool, server_btfn: bool, client_ndr64: bool, client_btfn: bool
) -> None:
    server = _server(ndr64=server_ndr64, btfn=server_btfn)
    client = RpcClientConnection(ndr64=client_ndr64, btfn=client_btfn)
    client.bind()
    server_events, client_events = _run(client, server)
    both_ndr64 = server_ndr64 and client_ndr64
    both_btfn = server_btfn and client_btfn

    assert client.ready
    ack = client_events[0]
    assert isinstance(ack, BindAckReceived)
    assert ack.btfn == (3 if both_btfn else None)
    bind_done = server_events[0]
    assert isinstance(bind_done, BindCompleted)
    assert bind_done.ptype is PType.BIND
    assert bind_done.btfn == ack.btfn
    assert bind_done.accepted == ack.accepted
    assert bind_done.ndr_syntaxes == ((NDR64,) if both_ndr64 else (NDR32,))
    if both_ndr64:  # Windows 8+ host: NDR32 comes through alter_context (spec 2.5)
        alter_done = server_events[1]
        assert isinstance(alter_done, BindCompleted)
        assert alter_done.ptype is PType.ALTER_CONTEXT
        assert alter_done.accepted == (AcceptedContext(0, NDR32),)
        assert client_events[1] == AlterContextRespReceived(2, (AcceptedContext(0, NDR32),))
    assert len(server_events) == len(client_events) == (2 if both_ndr64 else 1)

    later = (1, NDR64) if both_ndr64 else (0, NDR32)
    expected_contexts = [(0, NDR32), later, later]
    answers: list[ClientEvent] = []
    for index, kms in enumerate([b"first request", b"second", b"third"]):
        call_id = client.request(kms)
        assert call_id == 2 + index  # the bind's call_id first, then +1 (spec 0.3)
        (call,) = server.receive_data(client.data_to_send())
        context_id, syntax = expected_contexts[index]
        assert call == CallReceived(call_id, context_id, 0, syntax, kms)
        assert isinstance(call, CallReceived)
        if index == 0:
            server.send_kms_response(call, b"the answer")
        elif index == 1:
            server.send_kms_error(call, 0xC004F042)
        else:
            server.send_fault(call, NCA_S_FAULT_UNSPEC)
        answers += client.receive_data(server.data_to_send())
    assert answers == [
        ResponseReceived(2, 0, b"the answer"),
        ResponseReceived(3, 0xC004F042, None),
        FaultReceived(4, NCA_S_FAULT_UNSPEC),
    ]
    assert not server.closed
    assert not client.closed


# --- negotiation (spec 2.5) -----------------------------------------------------------


def _ack_results(out: bytes) -> list[tuple[int, int, SyntaxId]]:
    pdu = parse_pdu(out)
    assert isinstance(pdu, BindAck | AlterContextResp)
    return [(r.result, r.reason, r.transfer_syntax) for r in pdu.results]


def test_bind_ack_layout_for_port_1688() -> None:
    """Appendix B.1: 3 results, flags mirror CONC_MPX, frag_length 108 for a 4-digit port."""
    server = _server()
    server.receive_data(
        _bind(_element(0, NDR32_ID), _element(1, NDR64_ID), _element(2, btfn_syntax(3)))
    )
    out = server.data_to_send()
    assert out[:16] == bytes.fromhex("05000c13100000006c00000002000000")
    assert out[16:32] == bytes.fromhex("d016d016443322110500313638380000")
    assert _ack_results(out) == [(2, 2, ZERO), (0, 0, NDR64_ID), (3, 3, ZERO)]


def test_ndr64_disabled_accepts_ndr32_and_rejects_ndr64() -> None:
    server = _server(ndr64=False)
    (event,) = server.receive_data(_bind(_element(0, NDR32_ID), _element(1, NDR64_ID)))
    assert _ack_results(server.data_to_send()) == [(0, 0, NDR32_ID), (2, 2, ZERO)]
    assert event == BindCompleted(2, PType.BIND, (AcceptedContext(0, NDR32),), (NDR32,), None)


@pytest.mark.parametrize(("bitmask", "reason"), [(0x03, 3), (0x01, 1), (0xFF, 3), (0x00, 0)])
def test_btfn_reason_is_bitmask_and_0x03(bitmask: int, reason: int) -> None:
    server = _server()
    (event,) = server.receive_data(_bind(_element(0, NDR32_ID), _element(1, btfn_syntax(bitmask))))
    assert _ack_results(server.data_to_send())[1] == (3, reason, ZERO)
    assert isinstance(event, BindCompleted)
    assert event.btfn == reason


def test_btfn_disabled_rejects_with_reason_2() -> None:
    server = _server(btfn=False)
    (event,) = server.receive_data(_bind(_element(0, NDR32_ID), _element(1, btfn_syntax(3))))
    assert _ack_results(server.data_to_send())[1] == (2, 2, ZERO)
    assert isinstance(event, BindCompleted)
    assert event.btfn is None


@pytest.mark.parametrize(
    "abstract",
    [
        SyntaxId(uuid.UUID("12345678-1234-5678-1234-567812345678"), 1),
        SyntaxId(KMS_INTERFACE, 2),  # major version 2
    ],
)
def test_foreign_interface_is_rejected_with_reason_1(abstract: SyntaxId) -> None:
    server = _server()
    server.receive_data(_bind(_element(0, NDR32_ID, abstract=abstract)))
    assert _ack_results(server.data_to_send()) == [(2, 1, ZERO)]


def test_interface_minor_version_is_not_checked() -> None:
    server = _server()
    server.receive_data(_bind(_element(0, NDR32_ID, abstract=SyntaxId(KMS_INTERFACE, 0x10001))))
    assert _ack_results(server.data_to_send()) == [(0, 0, NDR32_ID)]


def test_ndr64_for_a_foreign_interface_does_not_displace_ndr32() -> None:
    foreign = SyntaxId(uuid.UUID(int=5), 1)
    server = _server()
    server.receive_data(_bind(_element(0, NDR32_ID), _element(1, NDR64_ID, abstract=foreign)))
    assert _ack_results(server.data_to_send()) == [(0, 0, NDR32_ID), (2, 1, ZERO)]


def test_element_with_several_syntaxes_accepts_at_most_one() -> None:
    unknown = SyntaxId(uuid.UUID(int=7), 1)
    server = _server()
    server.receive_data(
        _bind(
            _element(0, unknown, NDR32_ID, NDR64_ID),
            _element(1, unknown, SyntaxId(NDR32_SYNTAX, 3)),
            _element(2),
        )
    )
    assert _ack_results(server.data_to_send()) == [(0, 0, NDR64_ID), (2, 2, ZERO), (2, 2, ZERO)]


def test_alter_context_never_negotiates_btfn_and_has_no_secondary_address() -> None:
    server = _bound_server()
    events = server.receive_data(
        _bind(_element(3, NDR32_ID), _element(4, btfn_syntax(3)), call_id=9, alter=True)
    )
    out = server.data_to_send()
    assert out[2:4] == b"\x0f\x03"  # alter_context_resp, flags FIRST|LAST (spec 2.9)
    assert out[24:28] == b"\x00\x00\x00\x00"  # sec_addr length 0 and 2 zero pad bytes
    assert _ack_results(out) == [(0, 0, NDR32_ID), (2, 2, ZERO)]
    assert events == [
        BindCompleted(9, PType.ALTER_CONTEXT, (AcceptedContext(3, NDR32),), (NDR32,), None)
    ]


def test_assoc_group_proposed_by_the_client_is_echoed() -> None:
    server = _server()
    server.receive_data(_bind(_element(0, NDR64_ID), assoc=0xCAFE))
    assert struct.unpack_from("<I", server.data_to_send(), 20) == (0xCAFE,)
    server.receive_data(_bind(_element(1, NDR32_ID), alter=True))
    assert struct.unpack_from("<I", server.data_to_send(), 20) == (0xCAFE,)


def test_repeated_proposals_are_answered_for_each_connection_and_body() -> None:
    """Parsing and negotiation are memoised: the same bind bytes must still get
    the answer of each connection's own settings, and a body differing in one field its own."""
    frame = _bind(_element(0, NDR32_ID), _element(1, NDR64_ID), _element(2, btfn_syntax(3)))
    expected = {
        (True, True): [(2, 2, ZERO), (0, 0, NDR64_ID), (3, 3, ZERO)],
        (False, True): [(0, 0, NDR32_ID), (2, 2, ZERO), (3, 3, ZERO)],
        (True, False): [(2, 2, ZERO), (0, 0, NDR64_ID), (2, 2, ZERO)],
    }
    for ndr64, btfn in [*expected, (True, True), (False, True)]:
        server = _server(ndr64=ndr64, btfn=btfn)
        server.receive_data(frame)
        out = server.data_to_send()
        assert _ack_results(out) == expected[ndr64, btfn]
        assert struct.unpack_from("<I", out, 20) == (0x11223344,)
    for assoc, echoed in [(0xCAFE, 0xCAFE), (0, 0x11223344), (0xBEEF, 0xBEEF)]:
        server = _server()
        server.receive_data(_bind(_element(0, NDR32_ID), _element(1, NDR64_ID), assoc=assoc))
        assert struct.unpack_from("<I", server.data_to_send(), 20) == (echoed,)


def test_bind_ack_flags_mirror_conc_mpx_only() -> None:
    server = _server()
    server.receive_data(_bind(_element(0, NDR32_ID), flags=0x03))
    assert server.data_to_send()[3] == 0x03
    server.receive_data(_bind(_element(0, NDR32_ID), flags=0x17))
    assert server.data_to_send()[3] == 0x13


def test_bind_of_version_5_1_is_answered_in_5_1() -> None:
    server = _server()
    server.receive_data(_bind(_element(0, NDR32_ID), rpc_vers_minor=1))
    assert server.data_to_send()[:4] == bytes.fromhex("05010c13")
    (call,) = server.receive_data(_request())
    assert isinstance(call, CallReceived)
    server.send_kms_response(call, b"x")
    assert server.data_to_send()[:2] == b"\x05\x01"


def test_rejected_ndr32_context_does_not_serve_requests() -> None:
    """Not vlmcsd's bug (spec 10.9): context 0 was rejected, so it is unknown."""
    server = _server()
    server.receive_data(_bind(_element(0, NDR32_ID), _element(1, NDR64_ID)))
    server.data_to_send()
    events = server.receive_data(_request(call_id=2, context_id=0))
    assert server.data_to_send() == fault_pdu(2, 0, NCA_S_UNK_IF)
    assert isinstance(events[0], ProtocolViolation)


# --- bind_nak (spec 2.8) --------------------------------------------------------------


def _nak(call_id: int, reason: int) -> bytes:
    return (
        bytes.fromhex("05000d0310000000180000")
        + bytes([0])
        + struct.pack("<IHBBB3x", call_id, reason, 1, 5, 0)
    )


@pytest.mark.parametrize(("vers", "minor"), [(4, 0), (6, 0), (5, 2)])
def test_bind_of_another_version_gets_bind_nak_4_and_closes(vers: int, minor: int) -> None:
    server = _server()
    events = server.receive_data(
        _bind(_element(0, NDR32_ID), call_id=6, rpc_vers=vers, rpc_vers_minor=minor)
    )
    assert server.data_to_send() == _nak(6, 4)
    assert [type(e) for e in events] == [ProtocolViolation, ConnectionClosing]
    violation = events[0]
    assert isinstance(violation, ProtocolViolation)
    assert type(violation.error) is RpcError
    assert violation.error.action is WireAction.CLOSE
    assert server.closed


def test_bind_requesting_authentication_gets_bind_nak_8_and_closes() -> None:
    server = _server()
    events = server.receive_data(_bind(_element(0, NDR32_ID), call_id=4, auth_length=8))
    assert server.data_to_send() == _nak(4, 8)
    assert "authentication" in str(events[0])
    assert isinstance(events[-1], ConnectionClosing)
    assert server.closed


# --- faults (spec 3.5, 3.6) -------------------------------------------------------------


def test_request_before_bind_gets_unk_if_and_keeps_the_connection() -> None:
    server = _server()
    events = server.receive_data(_request(call_id=7, context_id=5))
    assert server.data_to_send() == fault_pdu(7, 5, NCA_S_UNK_IF)
    (violation,) = events
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, RpcFault)
    assert violation.error.status == NCA_S_UNK_IF
    assert not server.closed


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (_request(call_id=11, context_id=99), fault_pdu(11, 99, NCA_S_UNK_IF)),
        (_request(call_id=12, opnum=5), fault_pdu(12, 0, NCA_S_OP_RNG_ERROR)),
        (_request(call_id=13, opnum=1), fault_pdu(13, 0, NCA_S_OP_RNG_ERROR)),
        (_request(call_id=14, auth_length=16), fault_pdu(14, 0, NCA_S_PROTO_ERROR)),
        (
            _request(call_id=15, stub=struct.pack("<II", 9, 9)),
            fault_pdu(15, 0, RPC_X_BAD_STUB_DATA),
        ),
    ],
    ids=["unknown-context", "opnum-5", "opnum-1", "auth", "bad-stub"],
)
def test_call_faults_keep_the_association(request_bytes: bytes, expected: bytes) -> None:
    server = _bound_server()
    events = server.receive_data(request_bytes + _request(b"next", call_id=20))
    assert server.data_to_send() == expected
    assert isinstance(events[0], ProtocolViolation)
    assert events[1] == CallReceived(20, 0, 0, NDR32, b"next")
    assert not server.closed


def test_send_fault_echoes_call_and_context() -> None:
    server = _bound_server()
    (call,) = server.receive_data(_request(call_id=0xDEADBEEF))
    assert isinstance(call, CallReceived)
    server.send_fault(call, NCA_S_FAULT_UNSPEC)
    assert server.data_to_send() == fault_pdu(0xDEADBEEF, 0, NCA_S_FAULT_UNSPEC)


def test_malformed_pdu_gets_proto_error_fault_then_closes() -> None:
    server = _server()
    bind = bytearray(_bind(_element(0, NDR32_ID), call_id=8))
    bind[24] = 5  # n_context_elem beyond the body
    events = server.receive_data(bytes(bind) + _request())
    assert server.data_to_send() == fault_pdu(8, 0, NCA_S_PROTO_ERROR)
    assert [type(e) for e in events] == [ProtocolViolation, ConnectionClosing]
    violation = events[0]
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, MalformedPdu)
    assert server.closed
    assert server.receive_data(_request()) == []  # closed: input ignored


@pytest.mark.parametrize("ptype", [0x01, 0x02, 0x03, 0x0C, 0x0D, 0x0F, 0x10, 0x11, 0x7F])
def test_pdu_types_a_client_never_sends_close_without_reply(ptype: int) -> None:
    server = _bound_server()
    pdu = bytearray(_request())
    pdu[2] = ptype
    events = server.receive_data(bytes(pdu))
    assert server.data_to_send() == b""
    assert [type(e) for e in events] == [ProtocolViolation, ConnectionClosing]
    assert server.closed


@pytest.mark.parametrize("ptype", [PType.CO_CANCEL, PType.ORPHANED])
def test_cancel_and_orphaned_are_ignored(ptype: PType) -> None:
    server = _bound_server()
    pdu = struct.pack("<BBBB4sHHI", 5, 0, ptype, 3, b"\x10\0\0\0", 16, 0, 3)
    assert server.receive_data(pdu + _request(call_id=4)) == [CallReceived(4, 0, 0, NDR32, b"kms")]
    assert server.data_to_send() == b""


def test_alter_context_before_bind_closes() -> None:
    server = _server()
    events = server.receive_data(_bind(_element(0, NDR32_ID), alter=True))
    assert server.data_to_send() == b""
    assert "before bind" in str(events[0])
    assert server.closed


def test_alter_context_with_authentication_closes() -> None:
    server = _bound_server()
    server.receive_data(_bind(_element(1, NDR32_ID), alter=True, auth_length=4))
    assert server.data_to_send() == b""
    assert server.closed


# --- fragmented requests (spec 1.5) ----------------------------------------------------


def _fragments(kms: bytes, sizes: Sequence[int], *, call_id: int = 5) -> list[bytes]:
    stub = wrap_request_stub(kms, NDR32)
    pieces, offset = [], 0
    for index, size in enumerate(sizes):
        flags = (0x01 if index == 0 else 0) | (0x02 if index == len(sizes) - 1 else 0)
        pieces.append(_request(call_id=call_id, flags=flags, stub=stub[offset : offset + size]))
        offset += size
    assert offset == len(stub)
    return pieces


def test_fragmented_request_is_reassembled() -> None:
    server = _bound_server()
    kms = bytes(range(256)) * 2
    first, middle, last = _fragments(kms, [100, 300, 120])
    assert server.receive_data(first) == []
    assert server.receive_data(middle + _request(b"other", call_id=6)) == [
        CallReceived(6, 0, 0, NDR32, b"other")
    ]
    assert server.receive_data(last) == [CallReceived(5, 0, 0, NDR32, kms)]
    assert not server.closed


def test_reassembly_cap_closes() -> None:
    server = _bound_server(max_reassembly_bytes=200)
    first, second = _fragments(bytes(300), [150, 158])
    assert server.receive_data(first) == []
    events = server.receive_data(second)
    violation = events[0]
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, FramingError)
    assert server.closed


@pytest.mark.parametrize("flags", [0x00, 0x02])
def test_continuation_of_no_pending_call_closes(flags: int) -> None:
    server = _bound_server()
    events = server.receive_data(_request(flags=flags))
    assert "continues no pending call" in str(events[0])
    assert server.closed


@pytest.mark.parametrize("flags", [0x01, 0x03])
def test_restart_of_a_pending_call_closes(flags: int) -> None:
    server = _bound_server()
    first, _ = _fragments(b"abcdef", [5, 9])
    server.receive_data(first)
    events = server.receive_data(_request(call_id=5, flags=flags))
    assert "restarts a pending call" in str(events[0])
    assert server.closed


def test_faulted_fragment_drops_the_pending_call() -> None:
    server = _bound_server()
    first, last = _fragments(b"abcdef", [5, 9])
    server.receive_data(first)
    bad = bytearray(last)
    bad[22] = 7  # opnum 7 on the last fragment
    server.receive_data(bytes(bad))
    assert server.data_to_send() == fault_pdu(5, 0, NCA_S_OP_RNG_ERROR)
    server.receive_data(last)  # the call is gone: this fragment continues nothing
    assert server.closed


# --- stream edges ---------------------------------------------------------------------


def test_end_of_stream_closes() -> None:
    server = _server()
    assert server.receive_data(b"") == [ConnectionClosing("peer closed the connection")]
    assert server.closed
    assert server.receive_data(b"") == []


def test_end_of_stream_inside_a_pdu_says_so() -> None:
    server = _server()
    server.receive_data(PREAMBLE[:10])
    (closing,) = server.receive_data(b"")
    assert closing == ConnectionClosing("peer closed the connection inside a PDU (10 bytes)")


def test_pdus_after_a_closing_one_in_the_same_read_are_dropped() -> None:
    server = _bound_server()
    events = server.receive_data(b"GET / HTTP/1.1\r\n\r\n" + _request())
    assert [type(e) for e in events] == [ProtocolViolation, ConnectionClosing]
    assert server.data_to_send() == b""


def test_large_reads_are_fed_within_the_framer_cap() -> None:
    server = _server(max_pdu_bytes=400)
    data = PREAMBLE + b"".join(_request(bytes(250), call_id=i) for i in range(30))
    events = server.receive_data(data)
    assert len(events) == 31
    assert all(isinstance(e, CallReceived) for e in events[1:])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"port": -1}, "TCP port"),
        ({"port": 65536}, "TCP port"),
        ({"assoc_group_id": 0}, "non-zero"),
        ({"assoc_group_id": 1 << 32}, "non-zero"),
    ],
)
def test_settings_are_validated(settings: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _server(**settings)


def test_data_to_send_drains() -> None:
    server = _server()
    server.receive_data(PREAMBLE)
    assert server.data_to_send()
    assert server.data_to_send() == b""
