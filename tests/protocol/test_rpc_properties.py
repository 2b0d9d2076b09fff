"""Hypothesis properties of the RPC layer (architecture 4.11, h11's fuzz invariants).

1. Any bytes, in any chunks, never make ``receive_data`` raise; only defined events come
   out, and ConnectionClosing is the last one, once, exactly when ``closed`` turns True.
2. A valid captured client stream yields the same events and output however it is cut.
3. ``parse_pdu(build_pdu(x)) == x`` for generated PDUs.
4. Any stub, captured or with its NDR size fields edited, unwraps or raises the bad-stub
   fault (spec 3.2, 3.4, 3.5); nothing else escapes.
5. A damaged captured conversation, in any chunks, through the machine and the KMS opening
   of every call it yields: only errors of ``protocol``'s root come out, and those as values
   (events, batch results), never raised.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from rpc_vectors import client_stream, load_conversations, load_malformed

from protocol.errors import RPC_X_BAD_STUB_DATA, KmsError, ProtocolError, RpcError, RpcFault
from protocol.kms import OpenedRequest, open_requests
from protocol.rpc import (
    AlterContextRespReceived,
    BindAckReceived,
    BindCompleted,
    BindNakReceived,
    CallReceived,
    ConnectionClosing,
    FaultReceived,
    ProtocolViolation,
    ResponseReceived,
    RpcClientConnection,
    RpcServerConnection,
    ServerSettings,
)
from protocol.rpc.codec import build_pdu, parse_pdu
from protocol.rpc.constants import PFC, TransferSyntax
from protocol.rpc.ndr import unwrap_request_stub, unwrap_response_stub
from protocol.rpc.pdus import (
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    BindNak,
    ContextElement,
    ContextResultItem,
    Fault,
    Pdu,
    Request,
    Response,
    SyntaxId,
)

CONVERSATIONS = load_conversations()
CONNECTIONS = [
    connection for conversation in CONVERSATIONS for connection in conversation.connections
]
# (client stream, whether the captured server accepted NDR64) per captured connection
STREAMS = [
    (client_stream(connection), conversation.server_ndr64)
    for conversation in CONVERSATIONS
    for connection in conversation.connections
]
CLIENT_PDUS = sorted(
    {
        exchange.data
        for connection in CONNECTIONS
        for exchange in connection
        if exchange.direction == "c2s"
    }
    | {case.data for case in load_malformed() if case.data}
)
PREAMBLE = next(case.preamble for case in load_malformed() if case.preamble is not None)
SERVER_EVENTS = (BindCompleted, CallReceived, ProtocolViolation, ConnectionClosing)
CLIENT_EVENTS = (
    BindAckReceived,
    AlterContextRespReceived,
    BindNakReceived,
    ResponseReceived,
    FaultReceived,
    ProtocolViolation,
    ConnectionClosing,
)


def _server(*, ndr64: bool = True) -> RpcServerConnection:
    return RpcServerConnection(
        ServerSettings(
            port=1688, assoc_group_id=7, ndr64=ndr64, max_pdu_bytes=512, max_reassembly_bytes=1024
        )
    )


def _check_events(events: Sequence[object], closed: bool, allowed: tuple[type, ...]) -> None:
    assert all(isinstance(event, allowed) for event in events)
    for event in events:
        if isinstance(event, ProtocolViolation):
            assert isinstance(event.error, RpcError)
            assert str(event.error)
    closings = [i for i, event in enumerate(events) if isinstance(event, ConnectionClosing)]
    assert closings == ([len(events) - 1] if closed else [])


@st.composite
def mutated_pdus(draw: st.DrawFn) -> bytes:
    """A captured or hand-made client PDU with a few bytes changed, cut or extended."""
    pdu = bytearray(draw(st.sampled_from(CLIENT_PDUS)))
    for _ in range(draw(st.integers(0, 3))):
        pdu[draw(st.integers(0, len(pdu) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(min(16, len(pdu)), len(pdu)))
    pdu = pdu[:cut] + draw(st.binary(max_size=8))
    if draw(st.booleans()):  # keep frag_length consistent so the body parsers are reached
        struct.pack_into("<H", pdu, 8, len(pdu))
    return bytes(pdu)


def _chunked(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=300, deadline=None)
@given(
    st.booleans(),
    st.lists(st.binary(min_size=1, max_size=64) | mutated_pdus(), max_size=8),
    st.lists(st.integers(1, 2000), max_size=6),
    st.booleans(),
)
def test_server_never_raises_and_only_emits_defined_events(
    bound: bool, pieces: list[bytes], cuts: list[int], eof: bool
) -> None:
    server = _server()
    events: list[object] = []
    if bound:
        events += server.receive_data(PREAMBLE)
    data = b"".join(pieces)
    for chunk in _chunked(data, [c for c in cuts if c < len(data)]):
        events += server.receive_data(chunk)
    if eof:
        events += server.receive_data(b"")
    _check_events(events, server.closed, SERVER_EVENTS)
    server.data_to_send()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(STREAMS), st.data())
def test_any_cut_of_a_valid_stream_gives_the_same_result(
    stream_and_ndr64: tuple[bytes, bool], data: st.DataObject
) -> None:
    stream, ndr64 = stream_and_ndr64
    cuts = data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12))
    whole = _server(ndr64=ndr64)
    expected = whole.receive_data(stream)
    chunked = _server(ndr64=ndr64)
    events = [event for chunk in _chunked(stream, cuts) for event in chunked.receive_data(chunk)]
    assert events == expected
    assert chunked.data_to_send() == whole.data_to_send()
    assert not any(isinstance(event, ProtocolViolation) for event in events)


@settings(max_examples=200, deadline=None)
@given(st.booleans(), st.lists(st.binary(min_size=1, max_size=64), max_size=6))
def test_client_never_raises_and_only_emits_defined_events(
    ndr64: bool, chunks: list[bytes]
) -> None:
    client = RpcClientConnection(ndr64=ndr64)
    client.bind()
    events: list[object] = []
    for chunk in chunks:
        events += client.receive_data(chunk)
    _check_events(events, client.closed, CLIENT_EVENTS)


# --- parse(build(x)) == x ---------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
syntax_ids = st.builds(SyntaxId, st.uuids(), u32)
elements = st.builds(ContextElement, u16, syntax_ids, st.lists(syntax_ids, max_size=3).map(tuple))
results = st.builds(ContextResultItem, u16, u16, syntax_ids)
header = {
    "call_id": u32,
    "pfc_flags": u8.map(lambda flags: PFC(flags & ~PFC.OBJECT_UUID)),
    "rpc_vers": u8,
    "rpc_vers_minor": u8,
    "auth_length": u16,
}
proposal = {
    "max_xmit_frag": u16,
    "max_recv_frag": u16,
    "assoc_group_id": u32,
    "contexts": st.lists(elements, max_size=4).map(tuple),
}
reply = {
    "max_xmit_frag": u16,
    "max_recv_frag": u16,
    "assoc_group_id": u32,
    "secondary_address": st.text("0123456789", max_size=6),
    "results": st.lists(results, max_size=4).map(tuple),
}
calls = {"alloc_hint": u32, "context_id": u16, "stub": st.binary(max_size=64)}


def _requests(request: Request) -> Request:
    if request.object_uuid is None:
        return request
    return Request(
        call_id=request.call_id,
        pfc_flags=request.pfc_flags | PFC.OBJECT_UUID,
        rpc_vers=request.rpc_vers,
        rpc_vers_minor=request.rpc_vers_minor,
        auth_length=request.auth_length,
        alloc_hint=request.alloc_hint,
        context_id=request.context_id,
        opnum=request.opnum,
        object_uuid=request.object_uuid,
        stub=request.stub,
    )


pdus: st.SearchStrategy[Pdu] = st.one_of(
    st.builds(Bind, **header, **proposal),
    st.builds(AlterContext, **header, **proposal),
    st.builds(BindAck, **header, **reply),
    st.builds(AlterContextResp, **header, **reply),
    st.builds(
        BindNak,
        **header,
        reject_reason=u16,
        versions=st.lists(st.tuples(u8, u8), max_size=3).map(tuple),
    ),
    st.builds(Request, **header, **calls, opnum=u16, object_uuid=st.none() | st.uuids()).map(
        _requests
    ),
    st.builds(Response, **header, **calls, cancel_count=u8),
    st.builds(Fault, **header, alloc_hint=u32, context_id=u16, cancel_count=u8, status=u32),
)


@settings(max_examples=300, deadline=None)
@given(pdus)
def test_generated_pdus_round_trip(pdu: Pdu) -> None:
    wire = build_pdu(pdu)
    assert struct.unpack_from("<H", wire, 8)[0] == len(wire)
    assert parse_pdu(wire) == pdu


# --- NDR stubs (spec 3.2, 3.4) and the whole sans-I/O path ---------------------------------

STUBS = sorted(
    {
        exchange.stub
        for connection in CONNECTIONS
        for exchange in connection
        if exchange.ptype in ("request", "response")
    }
)


@st.composite
def edited_stubs(draw: st.DrawFn) -> bytes:
    """A captured stub with a size, count or referent field (offsets 0 to 16) set anew."""
    stub = bytearray(draw(st.sampled_from(STUBS)))
    for _ in range(draw(st.integers(1, 2))):
        offset = draw(st.sampled_from([0, 4, 8, 12, 16]))
        value = draw(st.sampled_from([0, 1, len(stub), len(stub) - 8, 0xFFFFFFFF]) | u32)
        struct.pack_into("<I", stub, offset, value)
    return bytes(stub[: draw(st.integers(0, len(stub)))])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=48) | edited_stubs(), st.sampled_from(list(TransferSyntax)))
def test_any_stub_unwraps_or_raises_the_bad_stub_fault(stub: bytes, syntax: TransferSyntax) -> None:
    for unwrap in (unwrap_request_stub, unwrap_response_stub):
        assert _fault_status(unwrap, stub, syntax) in (None, RPC_X_BAD_STUB_DATA)


def _fault_status(
    unwrap: Callable[[bytes, TransferSyntax], object], stub: bytes, syntax: TransferSyntax
) -> int | None:
    try:
        unwrap(stub, syntax)
    except RpcFault as exc:
        return exc.status
    return None


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(STREAMS), st.data())
def test_damaged_conversations_raise_nothing_down_to_the_kms_layer(
    stream_and_ndr64: tuple[bytes, bool], data: st.DataObject
) -> None:
    stream, ndr64 = stream_and_ndr64
    damaged = bytearray(stream)
    for _ in range(data.draw(st.integers(0, 4), label="flips")):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(damaged)), label="cut")
    cuts = data.draw(st.lists(st.integers(1, max(cut - 1, 1)), max_size=8), label="chunks")
    server = _server(ndr64=ndr64)
    events = [
        e for chunk in _chunked(bytes(damaged[:cut]), cuts) for e in server.receive_data(chunk)
    ]
    _check_events(events, server.closed, SERVER_EVENTS)
    calls = [event for event in events if isinstance(event, CallReceived)]
    results = open_requests([call.kms_message for call in calls])
    for call, result in zip(calls, results, strict=True):
        assert isinstance(result, OpenedRequest | KmsError)
        if isinstance(result, ProtocolError):
            server.send_kms_error(call, result.hresult)
    server.data_to_send()
