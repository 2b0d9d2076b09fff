"""Bytes <-> typed PDUs: the only module where ``construct`` Containers exist.

:func:`parse_pdu` takes one framed PDU (as :class:`~protocol.rpc.framing.FrameBuffer`
returns it) and gives a dataclass of :mod:`protocol.rpc.pdus`; :func:`build_pdu` is its
inverse. Every ``construct`` failure is converted here, exactly once, into
:class:`~protocol.errors.MalformedPdu` carrying the header's ``call_id`` when the
header was readable (architecture 4.4), so that the connection can answer with a fault
for the right call (spec 3.5).

The PDUs of an activation are read and written with ``struct`` first: the common header,
requests and responses (:mod:`protocol.rpc._fastpdu`), and bind, alter_context and their
acks, which a fresh connection per activation pays for every time
(:mod:`protocol.rpc._fastbind`). Anything those paths decline takes the ``construct`` one,
so errors and edge cases are the schema's. bind_nak and fault, sent only to refuse, have
the ``construct`` path alone.

Clients of one kind send the same bind and alter_context bodies on every connection, so a
body's fields are kept (:func:`_proposal`, a small LRU memo of immutable results): a fresh
connection then pays for parsing a proposal once per distinct body, not twice per
connection (issue 7).

The codec checks structure, not policy: version numbers, ``auth_length`` and flags are
reported as read and judged by the state machines. Bytes after a bind's last context
element (its auth_verifier, if any) are not interpreted; neither emulator reads them
either (spec 2.2).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final

from construct import ConstructError, Container

from protocol.errors import MalformedPdu
from protocol.rpc import _fastbind, _fastpdu, schema
from protocol.rpc.constants import PFC, PType
from protocol.rpc.pdus import (
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    BindNak,
    CommonHeader,
    ContextElement,
    ContextResultItem,
    Fault,
    Pdu,
    Request,
    Response,
    SyntaxId,
)

__all__ = ["LITTLE_ENDIAN_DREP", "build_pdu", "parse_header", "parse_pdu"]

# packed_drep: little-endian integers, ASCII, IEEE floats (spec 1.2).
LITTLE_ENDIAN_DREP = b"\x10\x00\x00\x00"

_Fields = dict[str, Any]
_PROPOSAL_MEMO: Final = 32  # distinct bind / alter_context bodies kept (a few per client kind)


def parse_header(frame: bytes) -> CommonHeader:
    """Read the common header (spec 1.2) of a PDU without looking at its body."""
    fast = _fastpdu.parse_header(frame)
    if fast is not None:
        return fast
    try:
        raw = schema.CommonHeader.parse(frame)
    except ConstructError as exc:
        raise MalformedPdu(f"truncated common header: {exc}") from exc
    return CommonHeader(
        rpc_vers=raw.rpc_vers,
        rpc_vers_minor=raw.rpc_vers_minor,
        ptype=raw.ptype,
        pfc_flags=PFC(raw.pfc_flags),
        drep=raw.drep,
        frag_length=raw.frag_length,
        auth_length=raw.auth_length,
        call_id=raw.call_id,
    )


def parse_pdu(frame: bytes) -> Pdu:
    """Parse one complete PDU; raise :class:`MalformedPdu` if it does not fit its layout.

    ``frame`` must be exactly ``frag_length`` bytes long.
    """
    header = parse_header(frame)
    if header.frag_length != len(frame):
        raise MalformedPdu(
            f"frag_length {header.frag_length} != {len(frame)} bytes framed",
            call_id=header.call_id,
        )
    decode = _DECODERS.get(header.ptype)
    if decode is None:
        raise MalformedPdu(
            f"no body layout for PDU type {header.ptype:#04x}", call_id=header.call_id
        )
    common: _Fields = {
        "call_id": header.call_id,
        "pfc_flags": header.pfc_flags,
        "rpc_vers": header.rpc_vers,
        "rpc_vers_minor": header.rpc_vers_minor,
        "auth_length": header.auth_length,
    }
    body = frame[schema.COMMON_HEADER_SIZE :]
    try:
        return decode(body, common)
    except (ConstructError, ValueError) as exc:  # ValueError: a bad secondary address
        raise MalformedPdu(
            f"malformed {PType(header.ptype).name.lower()} PDU: {exc}", call_id=header.call_id
        ) from exc


def build_pdu(pdu: Pdu) -> bytes:
    """Encode a PDU; ``frag_length`` is computed and ``packed_drep`` is little-endian."""
    pfc_flags = pdu.pfc_flags
    match pdu:
        case Bind() | AlterContext() if (fast := _fastbind.build_proposal(pdu)) is not None:
            return fast
        case BindAck() | AlterContextResp() if (fast := _fastbind.build_reply(pdu)) is not None:
            return fast
        case Bind() | AlterContext():
            body = schema.BIND_BODY.build(_proposal_fields(pdu))
        case BindAck() | AlterContextResp():
            body = schema.BIND_ACK_BODY.build(_reply_fields(pdu))
        case BindNak():
            body = schema.BIND_NAK_BODY.build(
                {
                    "provider_reject_reason": pdu.reject_reason,
                    "versions": [{"major": major, "minor": minor} for major, minor in pdu.versions],
                }
            )
        case Request() if (fast := _fastpdu.build_request(pdu)) is not None:
            return fast
        case Response() if (fast := _fastpdu.build_response(pdu)) is not None:
            return fast
        case Request():
            # The object UUID is on the wire iff the flag says so (spec 3.2): keep them in step.
            pfc_flags = pfc_flags & ~PFC.OBJECT_UUID
            if pdu.object_uuid is not None:
                pfc_flags |= PFC.OBJECT_UUID
            body = schema.REQUEST_BODY.build(
                {
                    "alloc_hint": pdu.alloc_hint,
                    "context_id": pdu.context_id,
                    "opnum": pdu.opnum,
                    "object": None if pdu.object_uuid is None else pdu.object_uuid.bytes_le,
                    "stub": pdu.stub,
                },
                pfc_flags=pfc_flags,
            )
        case Response():
            body = schema.RESPONSE_BODY.build(
                {
                    "alloc_hint": pdu.alloc_hint,
                    "context_id": pdu.context_id,
                    "cancel_count": pdu.cancel_count,
                    "stub": pdu.stub,
                }
            )
        case _:  # Fault, the last member of Pdu
            body = schema.FAULT_BODY.build(
                {
                    "alloc_hint": pdu.alloc_hint,
                    "context_id": pdu.context_id,
                    "cancel_count": pdu.cancel_count,
                    "status": pdu.status,
                }
            )
    header = schema.CommonHeader.build(
        {
            "rpc_vers": pdu.rpc_vers,
            "rpc_vers_minor": pdu.rpc_vers_minor,
            "ptype": pdu.ptype,
            "pfc_flags": pfc_flags,
            "drep": LITTLE_ENDIAN_DREP,
            "frag_length": schema.COMMON_HEADER_SIZE + len(body),
            "auth_length": pdu.auth_length,
            "call_id": pdu.call_id,
        }
    )
    return header + body


# --- field conversions ---------------------------------------------------------------


def _syntax(raw: Container[Any]) -> SyntaxId:
    return SyntaxId(uuid=uuid.UUID(bytes_le=raw.uuid), version=raw.version)


def _syntax_fields(syntax: SyntaxId) -> _Fields:
    return {"uuid": syntax.uuid.bytes_le, "version": syntax.version}


def _port_string(raw: bytes) -> str:
    """``sec_addr.port_spec`` without its NUL; length 0 means no address (spec 2.3)."""
    if not raw:
        return ""
    text, nul, rest = raw.partition(b"\0")
    if not nul or rest:
        raise ValueError("secondary address is not one NUL-terminated string")
    return text.decode("ascii")


@lru_cache(maxsize=_PROPOSAL_MEMO)
def _proposal(body: bytes) -> Mapping[str, Any]:
    """A bind or alter_context body's fields, read-only since repeated bodies share them."""
    fast = _fastbind.proposal_fields(body)
    if fast is not None:
        return MappingProxyType(fast)
    raw = schema.BIND_BODY.parse(body)
    return MappingProxyType(
        {
            "max_xmit_frag": raw.max_xmit_frag,
            "max_recv_frag": raw.max_recv_frag,
            "assoc_group_id": raw.assoc_group_id,
            "contexts": tuple(
                ContextElement(
                    context_id=element.context_id,
                    abstract_syntax=_syntax(element.abstract_syntax),
                    transfer_syntaxes=tuple(_syntax(ts) for ts in element.transfer_syntaxes),
                )
                for element in raw.contexts
            ),
        }
    )


def _proposal_fields(pdu: Bind | AlterContext) -> _Fields:
    return {
        "max_xmit_frag": pdu.max_xmit_frag,
        "max_recv_frag": pdu.max_recv_frag,
        "assoc_group_id": pdu.assoc_group_id,
        "contexts": [
            {
                "context_id": element.context_id,
                "abstract_syntax": _syntax_fields(element.abstract_syntax),
                "transfer_syntaxes": [_syntax_fields(ts) for ts in element.transfer_syntaxes],
            }
            for element in pdu.contexts
        ],
    }


def _reply(body: bytes) -> _Fields:
    fast = _fastbind.reply_fields(body)
    if fast is not None:
        return fast
    raw = schema.BIND_ACK_BODY.parse(body)
    return {
        "max_xmit_frag": raw.max_xmit_frag,
        "max_recv_frag": raw.max_recv_frag,
        "assoc_group_id": raw.assoc_group_id,
        "secondary_address": _port_string(raw.sec_addr),
        "results": tuple(
            ContextResultItem(
                result=item.result,
                reason=item.reason,
                transfer_syntax=_syntax(item.transfer_syntax),
            )
            for item in raw.results
        ),
    }


def _reply_fields(pdu: BindAck | AlterContextResp) -> _Fields:
    address = pdu.secondary_address
    return {
        "max_xmit_frag": pdu.max_xmit_frag,
        "max_recv_frag": pdu.max_recv_frag,
        "assoc_group_id": pdu.assoc_group_id,
        "sec_addr": address.encode("ascii") + b"\0" if address else b"",
        "results": [
            {
                "result": item.result,
                "reason": item.reason,
                "transfer_syntax": _syntax_fields(item.transfer_syntax),
            }
            for item in pdu.results
        ],
    }


def _bind_nak(body: bytes) -> _Fields:
    raw = schema.BIND_NAK_BODY.parse(body)
    return {
        "reject_reason": raw.provider_reject_reason,
        "versions": tuple((version.major, version.minor) for version in raw.versions),
    }


def _request(body: bytes, pfc_flags: PFC) -> _Fields:
    fast = _fastpdu.request_fields(body, pfc_flags)
    if fast is not None:
        return fast
    raw = schema.REQUEST_BODY.parse(body, pfc_flags=pfc_flags)
    return {
        "alloc_hint": raw.alloc_hint,
        "context_id": raw.context_id,
        "opnum": raw.opnum,
        "object_uuid": None if raw.object is None else uuid.UUID(bytes_le=raw.object),
        "stub": raw.stub,
    }


def _response(body: bytes) -> _Fields:
    fast = _fastpdu.response_fields(body)
    if fast is not None:
        return fast
    raw = schema.RESPONSE_BODY.parse(body)
    return {
        "alloc_hint": raw.alloc_hint,
        "context_id": raw.context_id,
        "cancel_count": raw.cancel_count,
        "stub": raw.stub,
    }


def _fault(body: bytes) -> _Fields:
    raw = schema.FAULT_BODY.parse(body)
    return {
        "alloc_hint": raw.alloc_hint,
        "context_id": raw.context_id,
        "cancel_count": raw.cancel_count,
        "status": raw.status,
    }


_Decoder = Callable[[bytes, _Fields], Pdu]
_DECODERS: dict[int, _Decoder] = {
    PType.BIND: lambda body, common: Bind(**common, **_proposal(body)),
    PType.ALTER_CONTEXT: lambda body, common: AlterContext(**common, **_proposal(body)),
    PType.BIND_ACK: lambda body, common: BindAck(**common, **_reply(body)),
    PType.ALTER_CONTEXT_RESP: lambda body, common: AlterContextResp(**common, **_reply(body)),
    PType.BIND_NAK: lambda body, common: BindNak(**common, **_bind_nak(body)),
    PType.REQUEST: lambda body, common: Request(**common, **_request(body, common["pfc_flags"])),
    PType.RESPONSE: lambda body, common: Response(**common, **_response(body)),
    PType.FAULT: lambda body, common: Fault(**common, **_fault(body)),
}
