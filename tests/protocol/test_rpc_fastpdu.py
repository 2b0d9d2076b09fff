"""The RPC codec gives the same answers with and without its struct fast paths.

``construct`` (protocol.rpc.schema) is the layout of record: every captured PDU, generated
requests and responses, and arbitrary or truncated bytes parse and build identically on
both paths, errors included (same type, same message, same call_id).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rpc_vectors import all_exchanges

from protocol.errors import MalformedPdu
from protocol.rpc import _fastpdu
from protocol.rpc.codec import build_pdu, parse_header, parse_pdu
from protocol.rpc.constants import PFC
from protocol.rpc.pdus import Request, Response

EXCHANGES = all_exchanges()
FAST = (
    (_fastpdu, "parse_header"),
    (_fastpdu, "request_fields"),
    (_fastpdu, "response_fields"),
    (_fastpdu, "build_request"),
    (_fastpdu, "build_response"),
)


@contextlib.contextmanager
def construct_only() -> Iterator[None]:
    """Make every fast path decline, so that the codec takes the construct one."""
    saved = [(module, name, getattr(module, name)) for module, name in FAST]
    try:
        for module, name, _ in saved:
            setattr(module, name, lambda *_: None)
        yield
    finally:
        for module, name, function in saved:
            setattr(module, name, function)


def outcome(function: Callable[..., Any], *args: Any) -> Any:
    try:
        return ("ok", function(*args))
    except MalformedPdu as exc:
        return ("error", str(exc), exc.call_id)


def same(function: Callable[..., Any], *args: Any) -> Any:
    fast = outcome(function, *args)
    with construct_only():
        reference = outcome(function, *args)
    assert fast == reference
    return fast


def build_outcome(pdu: Any) -> tuple[object, ...]:
    try:
        return ("ok", build_pdu(pdu))
    except Exception as exc:  # noqa: BLE001 - the two paths must fail alike
        return ("error", type(exc), str(exc))


def built_alike(pdu: Any) -> bytes | None:
    """``build_pdu(pdu)`` once both paths gave the same bytes or the same error (then None)."""
    fast = build_outcome(pdu)
    with construct_only():
        assert build_outcome(pdu) == fast
    built = fast[1]
    return built if isinstance(built, bytes) else None


def test_construct_only_disables_every_fast_path() -> None:
    public = {(_fastpdu, name) for name in _fastpdu.__all__ if name != "with_header"}
    assert public == set(FAST)


def test_the_fast_paths_are_taken() -> None:
    data = EXCHANGES[0][1].data
    assert _fastpdu.parse_header(data) == parse_header(data)


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


@given(st.binary(max_size=40))
def test_arbitrary_headers_agree(data: bytes) -> None:
    same(parse_header, data)


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
