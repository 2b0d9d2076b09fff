"""``struct`` fast paths for the PDUs of every activation: header, request, response (issue 7).

Why: ``construct`` costs tens of microseconds per PDU, and profiles of both the daemon and
the load generator put the RPC codec at 10-40% of an activation. ``schema`` stays the
layout of record and :mod:`protocol.rpc.codec` its only user: each function here returns
``None`` whenever its input is not the plain, well-formed case (short data, an unexpected
flag, a value out of range), and the codec then takes the ``construct`` path, which
produces exactly the result or the error it always did. ``tests/protocol/test_rpc_fastpdu.py``
holds both paths to the same answers.

Covered here: the common header (spec 1.2), request (3.2) and response (3.3) PDUs, and
:func:`with_header`, which every fast builder uses. The context-negotiation PDUs of a
fresh connection (bind, alter_context and their acks, spec 2.2-2.3) follow the same rule
in :mod:`protocol.rpc._fastbind`. bind_nak and fault are rare (refusals) and keep the
``construct`` path only.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, Final

from protocol.rpc.constants import PFC
from protocol.rpc.pdus import CommonHeader, Pdu, Request, Response

__all__ = [
    "build_request",
    "build_response",
    "parse_header",
    "request_fields",
    "response_fields",
    "with_header",
]

_HEADER: Final = struct.Struct("<BBBB4sHHI")  # spec 1.2; schema.CommonHeader
_REQUEST_HEAD: Final = struct.Struct("<IHH")  # spec 3.2; schema.REQUEST_BODY
_RESPONSE_HEAD: Final = struct.Struct("<IHBx")  # spec 3.3; schema.RESPONSE_BODY
_OBJECT_SIZE: Final = 16
_DREP: Final = b"\x10\x00\x00\x00"  # codec.LITTLE_ENDIAN_DREP


def parse_header(frame: bytes) -> CommonHeader | None:
    """The common header, or None when the frame is too short for one."""
    if len(frame) < _HEADER.size:
        return None
    vers, minor, ptype, flags, drep, frag_length, auth_length, call_id = _HEADER.unpack_from(frame)
    return CommonHeader(vers, minor, ptype, PFC(flags), drep, frag_length, auth_length, call_id)


def request_fields(body: bytes, pfc_flags: PFC) -> dict[str, Any] | None:
    """A request body's fields as the codec's ``_request`` gives them, or None."""
    start = _REQUEST_HEAD.size + (_OBJECT_SIZE if pfc_flags & PFC.OBJECT_UUID else 0)
    if len(body) < start:
        return None
    alloc_hint, context_id, opnum = _REQUEST_HEAD.unpack_from(body)
    raw_object = body[_REQUEST_HEAD.size : start]
    return {
        "alloc_hint": alloc_hint,
        "context_id": context_id,
        "opnum": opnum,
        "object_uuid": uuid.UUID(bytes_le=bytes(raw_object)) if raw_object else None,
        "stub": bytes(body[start:]),
    }


def response_fields(body: bytes) -> dict[str, Any] | None:
    """A response body's fields as the codec's ``_response`` gives them, or None."""
    if len(body) < _RESPONSE_HEAD.size:
        return None
    alloc_hint, context_id, cancel_count = _RESPONSE_HEAD.unpack_from(body)
    return {
        "alloc_hint": alloc_hint,
        "context_id": context_id,
        "cancel_count": cancel_count,
        "stub": bytes(body[_RESPONSE_HEAD.size :]),
    }


def with_header(pdu: Pdu, pfc_flags: int, body: bytes) -> bytes | None:
    """``body`` behind its common header (spec 1.2), ``frag_length`` computed, or None."""
    try:
        header = _HEADER.pack(
            pdu.rpc_vers,
            pdu.rpc_vers_minor,
            pdu.ptype,
            pfc_flags,
            _DREP,
            _HEADER.size + len(body),
            pdu.auth_length,
            pdu.call_id,
        )
    except struct.error:
        return None
    return header + body


def build_request(pdu: Request) -> bytes | None:
    """A request PDU (the object UUID present iff the flag says so), or None."""
    flags = pdu.pfc_flags & ~PFC.OBJECT_UUID
    if pdu.object_uuid is not None:
        flags |= PFC.OBJECT_UUID
    try:
        head = _REQUEST_HEAD.pack(pdu.alloc_hint, pdu.context_id, pdu.opnum)
    except struct.error:
        return None
    raw_object = b"" if pdu.object_uuid is None else pdu.object_uuid.bytes_le
    return with_header(pdu, flags, head + raw_object + pdu.stub)


def build_response(pdu: Response) -> bytes | None:
    """A response PDU, or None."""
    try:
        head = _RESPONSE_HEAD.pack(pdu.alloc_hint, pdu.context_id, pdu.cancel_count)
    except struct.error:
        return None
    return with_header(pdu, pdu.pfc_flags, head + pdu.stub)
