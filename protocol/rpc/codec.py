"""Bytes <-> typed PDUs: the only module that reads and writes the RPC layouts.

:func:`parse_pdu` takes one framed PDU (as :class:`~protocol.rpc.framing.FrameBuffer`
returns it) and gives a dataclass of :mod:`protocol.rpc.pdus`; :func:`build_pdu` is its
inverse. Each layout is the declaration in :mod:`protocol.rpc.schema`, run by the reader
and writer :mod:`protocol.layout` derives from it. Every failure is converted here, exactly
once, into :class:`~protocol.errors.MalformedPdu` carrying the header's ``call_id`` when
the header was readable (architecture 4.4), so that the connection can answer with a fault
for the right call (spec 3.5).

Clients of one kind send the same bind and alter_context bodies on every connection, so a
body's fields are kept (:func:`_proposal`, a small LRU memo of immutable results) and the
syntaxes the KMS exchange uses are shared frozen values (:data:`_KNOWN_SYNTAXES`).

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

from protocol.errors import MalformedPdu
from protocol.layout import Layout
from protocol.rpc import schema
from protocol.rpc.constants import (
    BTFN_PREFIX,
    KMS_INTERFACE,
    KMS_INTERFACE_VERSION,
    NDR32_SYNTAX,
    NDR32_VERSION,
    NDR64_SYNTAX,
    NDR64_VERSION,
    PFC,
    PType,
)
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

_HEADER: Final = Layout("common header", schema.CommonHeader, MalformedPdu)
_BIND: Final = Layout("bind body", schema.BIND_BODY, MalformedPdu)
_BIND_ACK: Final = Layout("bind_ack body", schema.BIND_ACK_BODY, MalformedPdu)
_BIND_NAK: Final = Layout("bind_nak body", schema.BIND_NAK_BODY, MalformedPdu)
_REQUEST: Final = Layout("request body", schema.REQUEST_BODY, MalformedPdu)
_RESPONSE: Final = Layout("response body", schema.RESPONSE_BODY, MalformedPdu)
_FAULT: Final = Layout("fault body", schema.FAULT_BODY, MalformedPdu)


def parse_header(frame: bytes) -> CommonHeader:
    """Read the common header (spec 1.2) of a PDU without looking at its body."""
    try:
        vers, minor, ptype, flags, drep, frag_length, auth_length, call_id = _HEADER.unpack(frame)
    except MalformedPdu as exc:
        raise MalformedPdu(f"truncated common header: {exc}") from exc
    return CommonHeader(vers, minor, ptype, PFC(flags), drep, frag_length, auth_length, call_id)


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
    except (MalformedPdu, ValueError) as exc:  # ValueError: a bad secondary address
        raise MalformedPdu(
            f"malformed {PType(header.ptype).name.lower()} PDU: {exc}", call_id=header.call_id
        ) from exc


def build_pdu(pdu: Pdu) -> bytes:
    """Encode a PDU; ``frag_length`` is computed and ``packed_drep`` is little-endian."""
    pfc_flags = pdu.pfc_flags
    match pdu:
        case Bind() | AlterContext():
            body = _BIND.build(_proposal_fields(pdu))
        case BindAck() | AlterContextResp():
            body = _BIND_ACK.build(_reply_fields(pdu))
        case BindNak():
            versions = [{"major": major, "minor": minor} for major, minor in pdu.versions]
            body = _BIND_NAK.build(
                {"provider_reject_reason": pdu.reject_reason, "versions": versions}
            )
        case Request():
            # The object UUID is on the wire iff the flag says so (spec 3.2): keep them in step.
            pfc_flags = pfc_flags & ~PFC.OBJECT_UUID
            if pdu.object_uuid is not None:
                pfc_flags |= PFC.OBJECT_UUID
            fields = {
                "alloc_hint": pdu.alloc_hint,
                "context_id": pdu.context_id,
                "opnum": pdu.opnum,
                "object": None if pdu.object_uuid is None else pdu.object_uuid.bytes_le,
                "stub": pdu.stub,
            }
            body = _REQUEST.build(fields, pfc_flags=pfc_flags)
        case Response():
            fields = {
                "alloc_hint": pdu.alloc_hint,
                "context_id": pdu.context_id,
                "cancel_count": pdu.cancel_count,
                "stub": pdu.stub,
            }
            body = _RESPONSE.build(fields)
        case _:  # Fault, the last member of Pdu
            body = _FAULT.pack(pdu.alloc_hint, pdu.context_id, pdu.cancel_count, pdu.status)
    header = _HEADER.pack(
        pdu.rpc_vers,
        pdu.rpc_vers_minor,
        pdu.ptype,
        pfc_flags,
        LITTLE_ENDIAN_DREP,
        schema.COMMON_HEADER_SIZE + len(body),
        pdu.auth_length,
        pdu.call_id,
    )
    return header + body


# --- field conversions ---------------------------------------------------------------


def _syntax_fields(syntax: SyntaxId) -> _Fields:
    return {"uuid": syntax.uuid.bytes_le, "version": syntax.version}


_KNOWN_SYNTAXES: Final = {
    (syntax.uuid.bytes_le, syntax.version): syntax
    for syntax in (
        SyntaxId(KMS_INTERFACE, KMS_INTERFACE_VERSION),
        SyntaxId(NDR32_SYNTAX, NDR32_VERSION),
        SyntaxId(NDR64_SYNTAX, NDR64_VERSION),
        SyntaxId(uuid.UUID(bytes_le=BTFN_PREFIX + b"\x03" + bytes(7)), 1),  # Windows' BTFN
        SyntaxId(uuid.UUID(int=0), 0),  # rejections and negotiate_ack (spec 2.4)
    )
}
"""The syntaxes of the KMS exchange (spec 2.1, 2.4), shared: building a UUID costs more
than the rest of a context element. Any other syntax is built from its bytes."""


def _syntax(raw: _Fields) -> SyntaxId:
    key = (raw["uuid"], raw["version"])
    known = _KNOWN_SYNTAXES.get(key)
    return known if known is not None else SyntaxId(uuid.UUID(bytes_le=key[0]), key[1])


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
    raw = _BIND.parse(body)
    return MappingProxyType(
        {
            "max_xmit_frag": raw["max_xmit_frag"],
            "max_recv_frag": raw["max_recv_frag"],
            "assoc_group_id": raw["assoc_group_id"],
            "contexts": tuple(
                ContextElement(
                    context_id=element["context_id"],
                    abstract_syntax=_syntax(element["abstract_syntax"]),
                    transfer_syntaxes=tuple(_syntax(ts) for ts in element["transfer_syntaxes"]),
                )
                for element in raw["contexts"]
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
    raw = _BIND_ACK.parse(body)
    return {
        "max_xmit_frag": raw["max_xmit_frag"],
        "max_recv_frag": raw["max_recv_frag"],
        "assoc_group_id": raw["assoc_group_id"],
        "secondary_address": _port_string(raw["sec_addr"]),
        "results": tuple(
            ContextResultItem(
                result=item["result"],
                reason=item["reason"],
                transfer_syntax=_syntax(item["transfer_syntax"]),
            )
            for item in raw["results"]
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
    raw = _BIND_NAK.parse(body)
    return {
        "reject_reason": raw["provider_reject_reason"],
        "versions": tuple((version["major"], version["minor"]) for version in raw["versions"]),
    }


def _request(body: bytes, pfc_flags: PFC) -> _Fields:
    raw = _REQUEST.parse(body, pfc_flags=pfc_flags)
    raw_object = raw.pop("object")
    raw["object_uuid"] = None if raw_object is None else uuid.UUID(bytes_le=raw_object)
    return raw


def _fault(body: bytes) -> _Fields:
    alloc_hint, context_id, cancel_count, status = _FAULT.unpack(body)
    return {
        "alloc_hint": alloc_hint,
        "context_id": context_id,
        "cancel_count": cancel_count,
        "status": status,
    }


_Decoder = Callable[[bytes, _Fields], Pdu]
_DECODERS: dict[int, _Decoder] = {
    PType.BIND: lambda body, common: Bind(**common, **_proposal(body)),
    PType.ALTER_CONTEXT: lambda body, common: AlterContext(**common, **_proposal(body)),
    PType.BIND_ACK: lambda body, common: BindAck(**common, **_reply(body)),
    PType.ALTER_CONTEXT_RESP: lambda body, common: AlterContextResp(**common, **_reply(body)),
    PType.BIND_NAK: lambda body, common: BindNak(**common, **_bind_nak(body)),
    PType.REQUEST: lambda body, common: Request(**common, **_request(body, common["pfc_flags"])),
    PType.RESPONSE: lambda body, common: Response(**common, **_RESPONSE.parse(body)),
    PType.FAULT: lambda body, common: Fault(**common, **_fault(body)),
}
