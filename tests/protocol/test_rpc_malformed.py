"""Every entry of ``malformed.jsonl`` fed to the server machine ends in a defined outcome.

Each case is sent as the probe sent it: the valid bind preamble first (its bind_ack is
checked and set aside), then the bytes in their TCP segments, then end of stream when
the probe half-closed. The outcome is the events, the bytes queued, and ``closed``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from rpc_vectors import MalformedCase, fault_pdu, load_malformed

from protocol.errors import (
    NCA_S_OP_RNG_ERROR,
    NCA_S_PROTO_ERROR,
    NCA_S_UNK_IF,
    FramingError,
    MalformedPdu,
    RpcError,
    RpcFault,
)
from protocol.rpc import (
    BindAck,
    BindCompleted,
    CallReceived,
    ConnectionClosing,
    ProtocolViolation,
    RpcServerConnection,
    ServerEvent,
    ServerSettings,
    TransferSyntax,
)
from protocol.rpc.codec import parse_pdu

CASES = {case.name: case for case in load_malformed()}
PORT = 11683  # the probe's vlmcsd port, so bind_acks have the captured length
NDR32_ACCEPT = (0, 0)
BTFN_ACK = (3, 3)


@dataclass
class Outcome:
    events: list[ServerEvent]
    output: bytes
    closed: bool
    per_segment: list[list[ServerEvent]]


def _run(case: MalformedCase) -> Outcome:
    server = RpcServerConnection(ServerSettings(port=PORT, assoc_group_id=0x5EED))
    if case.preamble is not None:
        (bound,) = server.receive_data(case.preamble)
        assert isinstance(bound, BindCompleted)
        assert isinstance(parse_pdu(server.data_to_send()), BindAck)
    per_segment = [server.receive_data(chunk) for chunk in case.chunks()]
    if case.half_close:
        per_segment.append(server.receive_data(b""))
    events = [event for chunk_events in per_segment for event in chunk_events]
    return Outcome(events, server.data_to_send(), server.closed, per_segment)


def _kms_of(case: MalformedCase) -> bytes:
    """The KMS bytes of a request case, located by the NDR32 offsets of spec 3.2.1."""
    (size,) = struct.unpack_from("<I", case.data, 24)
    return case.data[32 : 32 + size]


def _bind_ack_results(output: bytes) -> tuple[BindAck, list[tuple[int, int]]]:
    ack = parse_pdu(output)
    assert isinstance(ack, BindAck)
    assert ack.secondary_address == str(PORT)
    return ack, [(r.result, r.reason) for r in ack.results]


# --- expected outcomes, one function per kind -------------------------------------------

Check = Callable[[Outcome, MalformedCase], None]


def nothing_yet(outcome: Outcome, case: MalformedCase) -> None:
    """Incomplete input, no end of stream: wait (the daemon's idle timeout ends it)."""
    assert outcome.events == []
    assert outcome.output == b""
    assert not outcome.closed


def closed_at_eof(outcome: Outcome, case: MalformedCase) -> None:
    assert [type(e) for e in outcome.events] == [ConnectionClosing]
    assert outcome.output == b""
    assert outcome.closed


def closed_silently(error: type[RpcError]) -> Check:
    def check(outcome: Outcome, case: MalformedCase) -> None:
        assert [type(e) for e in outcome.events] == [ProtocolViolation, ConnectionClosing]
        violation = outcome.events[0]
        assert isinstance(violation, ProtocolViolation)
        assert type(violation.error) is error
        assert outcome.output == b""
        assert outcome.closed

    return check


def fault_kept(status: int, context_id: int = 0) -> Check:
    def check(outcome: Outcome, case: MalformedCase) -> None:
        (violation,) = outcome.events
        assert isinstance(violation, ProtocolViolation)
        assert isinstance(violation.error, RpcFault)
        assert outcome.output == fault_pdu(2, context_id, status)  # call_id 2 echoed
        assert not outcome.closed

    return check


def bind_ack(results: list[tuple[int, int]], *, minor: int = 0, flags: int = 0x13) -> Check:
    def check(outcome: Outcome, case: MalformedCase) -> None:
        (event,) = outcome.events
        assert isinstance(event, BindCompleted)
        ack, got = _bind_ack_results(outcome.output)
        assert got == results
        assert (ack.call_id, ack.rpc_vers_minor, ack.pfc_flags) == (2, minor, flags)
        assert not outcome.closed

    return check


def call_received(outcome: Outcome, case: MalformedCase) -> None:
    """KMS-level problems are not the RPC layer's: the bytes go up unchanged."""
    assert outcome.events == [CallReceived(2, 0, 0, TransferSyntax.NDR32, _kms_of(case))]
    assert outcome.output == b""
    assert not outcome.closed


def bind_nak_version(outcome: Outcome, case: MalformedCase) -> None:
    assert outcome.output == bytes.fromhex("05000d03100000001800000002000000 0400010500000000")
    assert [type(e) for e in outcome.events] == [ProtocolViolation, ConnectionClosing]
    assert outcome.closed


def malformed_bind(outcome: Outcome, case: MalformedCase) -> None:
    violation = outcome.events[0]
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, MalformedPdu)
    assert outcome.output == fault_pdu(2, 0, NCA_S_PROTO_ERROR)
    assert isinstance(outcome.events[1], ConnectionClosing)
    assert outcome.closed


def zero_contexts(outcome: Outcome, case: MalformedCase) -> None:
    (event,) = outcome.events
    assert isinstance(event, BindCompleted)
    assert (event.call_id, event.accepted, event.btfn) == (2, (), None)
    assert len(outcome.output) == 36  # as both emulators answered
    assert _bind_ack_results(outcome.output)[1] == []


def split_bind(outcome: Outcome, case: MalformedCase) -> None:
    assert outcome.per_segment[0] == []  # 40 bytes: nothing yet
    bind_ack([NDR32_ACCEPT, BTFN_ACK])(outcome, case)


def split_request(outcome: Outcome, case: MalformedCase) -> None:
    assert outcome.per_segment[0] == []
    call_received(outcome, case)


def coalesced(outcome: Outcome, case: MalformedCase) -> None:
    bound, call = outcome.events
    assert isinstance(bound, BindCompleted)
    assert isinstance(call, CallReceived)
    assert call.kms_message == case.data[116 + 32 :]
    assert _bind_ack_results(outcome.output)[1] == [NDR32_ACCEPT, BTFN_ACK]
    assert not outcome.closed


def first_fragment_only(outcome: Outcome, case: MalformedCase) -> None:
    """A request without LAST_FRAG starts a reassembly (spec 1.5): no answer yet."""
    nothing_yet(outcome, case)


EXPECTED: dict[str, Check] = {
    "empty_connection": closed_at_eof,
    "truncated_bind_header_10_bytes": nothing_yet,
    "truncated_bind_header_10_bytes_eof": closed_at_eof,
    "truncated_bind_body": nothing_yet,
    "truncated_bind_body_eof": closed_at_eof,
    "bind_rpc_version_4_0": bind_nak_version,
    "bind_rpc_version_5_1": bind_ack([NDR32_ACCEPT, BTFN_ACK], minor=1),
    "bind_huge_frag_length": closed_silently(FramingError),
    "bind_frag_length_smaller_than_header": closed_silently(FramingError),
    "bind_frag_length_zero": closed_silently(FramingError),
    "bind_big_endian_drep": closed_silently(FramingError),
    "bind_first_frag_only": bind_ack([NDR32_ACCEPT, BTFN_ACK], flags=0x03),
    "bind_zero_context_items": zero_contexts,
    "bind_ctx_count_exceeds_body": malformed_bind,
    "bind_unknown_transfer_syntax": bind_ack([(2, 2), BTFN_ACK]),
    "bind_wrong_interface_uuid": bind_ack([(2, 1), BTFN_ACK]),
    "request_before_bind": fault_kept(NCA_S_UNK_IF),
    "request_unknown_opnum_5": fault_kept(NCA_S_OP_RNG_ERROR),
    "request_unknown_context_id": fault_kept(NCA_S_UNK_IF, context_id=99),
    "request_rpc_version_4_0": closed_silently(FramingError),
    "request_kms_version_7": call_received,
    "request_kms_version_6_1": call_received,
    "request_truncated_kms_payload": call_received,
    "request_corrupted_ciphertext": call_received,
    "request_nonzero_auth_length": fault_kept(NCA_S_PROTO_ERROR),
    "request_first_frag_only": first_fragment_only,
    "unknown_ptype_ping": closed_silently(RpcError),
    "unknown_ptype_0x7f": closed_silently(RpcError),
    "garbage_http_get": closed_silently(FramingError),
    "garbage_zeros_64": closed_silently(FramingError),
    "valid_bind_split_in_two_segments": split_bind,
    "valid_request_split_in_two_segments": split_request,
    "valid_bind_and_request_coalesced": coalesced,
}


def test_every_vector_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(CASES)
    assert len(CASES) == 33


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_case(name: str) -> None:
    case = CASES[name]
    outcome = _run(case)
    EXPECTED[name](outcome, case)


def test_receiving_while_a_pdu_or_a_fragmented_call_is_incomplete() -> None:
    """``receiving`` is what the daemon's exchange timeout watches (a peer trickling bytes)."""
    bind = CASES["request_first_frag_only"].preamble
    assert bind is not None
    server = RpcServerConnection(ServerSettings(port=PORT, assoc_group_id=1))
    assert not server.receiving
    server.receive_data(bind[:10])
    assert server.receiving  # a header begun
    server.receive_data(bind[10:])
    assert not server.receiving  # the bind is whole and answered
    server.receive_data(CASES["request_first_frag_only"].data)
    assert server.receiving  # a whole PDU, but the call waits for its last fragment
    assert not server.closed
