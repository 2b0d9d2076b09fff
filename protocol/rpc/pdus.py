"""Typed DCE/RPC PDUs: what :mod:`protocol.rpc.codec` hands out instead of Containers.

Frozen, slotted dataclasses mirroring :mod:`protocol.rpc.schema` (architecture 4.1, 5.2).
Every PDU carries the common-header fields a peer must echo or check (spec 1.2):
``call_id``, ``pfc_flags``, the protocol version and ``auth_length``; ``frag_length`` and
``packed_drep`` are not fields because the codec derives the first from the body and
always writes little-endian ``10 00 00 00`` for the second (spec 0.1).

Integer fields whose wire values may fall outside the enums of
:mod:`protocol.rpc.constants` (``result``, ``reason``, ``pfc_flags``) are plain ``int``
or :class:`~protocol.rpc.constants.PFC` (an ``IntFlag`` keeps unknown bits), so a PDU
with unusual values still parses and round-trips byte for byte.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import ClassVar

from protocol.rpc.constants import PFC, PType

__all__ = [
    "FIRST_AND_LAST",
    "AlterContext",
    "AlterContextResp",
    "Bind",
    "BindAck",
    "BindNak",
    "BindNakReason",
    "CommonHeader",
    "ContextElement",
    "ContextResultItem",
    "Fault",
    "Pdu",
    "Request",
    "Response",
    "SyntaxId",
]

FIRST_AND_LAST = PFC.FIRST_FRAG | PFC.LAST_FRAG


class BindNakReason(enum.IntEnum):
    """``provider_reject_reason`` of a bind_nak (spec 2.8; C706 12.6.3.1)."""

    NOT_SPECIFIED = 0
    TEMPORARY_CONGESTION = 1
    LOCAL_LIMIT_EXCEEDED = 2
    PROTOCOL_VERSION_NOT_SUPPORTED = 4
    AUTHENTICATION_TYPE_NOT_RECOGNIZED = 8
    INVALID_CHECKSUM = 9


@dataclass(frozen=True, slots=True)
class CommonHeader:
    """The 16-byte header every PDU starts with (spec 1.2), as read off the wire."""

    rpc_vers: int
    rpc_vers_minor: int
    ptype: int  # not PType: unknown and connectionless types must still be reported
    pfc_flags: PFC
    drep: bytes
    frag_length: int
    auth_length: int
    call_id: int


@dataclass(frozen=True, slots=True)
class SyntaxId:
    """An interface or transfer syntax: GUID and u32 version (spec 2.1)."""

    uuid: uuid.UUID
    version: int


@dataclass(frozen=True, slots=True)
class ContextElement:
    """One proposed presentation context of a bind or alter_context (spec 2.2)."""

    context_id: int
    abstract_syntax: SyntaxId
    transfer_syntaxes: tuple[SyntaxId, ...]


@dataclass(frozen=True, slots=True)
class ContextResultItem:
    """The answer to one :class:`ContextElement` (spec 2.3, 2.4).

    ``result`` is a :class:`~protocol.rpc.constants.ContextResult` value; ``reason`` is a
    :class:`~protocol.rpc.constants.ProviderReason` for rejections and the feature
    bitmask for a BTFN negotiate_ack.
    """

    result: int
    reason: int
    transfer_syntax: SyntaxId


@dataclass(frozen=True, slots=True, kw_only=True)
class _PduBase:
    ptype: ClassVar[PType]

    call_id: int
    pfc_flags: PFC = FIRST_AND_LAST
    rpc_vers: int = 5
    rpc_vers_minor: int = 0
    auth_length: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class _ContextProposal(_PduBase):
    max_xmit_frag: int
    max_recv_frag: int
    assoc_group_id: int
    contexts: tuple[ContextElement, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Bind(_ContextProposal):
    """bind, PTYPE 0x0B (spec 2.2)."""

    ptype = PType.BIND


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterContext(_ContextProposal):
    """alter_context, PTYPE 0x0E: same body as bind (spec 2.2)."""

    ptype = PType.ALTER_CONTEXT


@dataclass(frozen=True, slots=True, kw_only=True)
class _ContextReply(_PduBase):
    max_xmit_frag: int
    max_recv_frag: int
    assoc_group_id: int
    secondary_address: str  # the port string without its NUL; "" encodes length 0
    results: tuple[ContextResultItem, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BindAck(_ContextReply):
    """bind_ack, PTYPE 0x0C (spec 2.3)."""

    ptype = PType.BIND_ACK


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterContextResp(_ContextReply):
    """alter_context_resp, PTYPE 0x0F: same body as bind_ack (spec 2.3)."""

    ptype = PType.ALTER_CONTEXT_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class BindNak(_PduBase):
    """bind_nak, PTYPE 0x0D (spec 2.8); ``versions`` are (major, minor) pairs."""

    ptype = PType.BIND_NAK

    reject_reason: int
    versions: tuple[tuple[int, int], ...] = ((5, 0),)


@dataclass(frozen=True, slots=True, kw_only=True)
class Request(_PduBase):
    """request, PTYPE 0x00 (spec 3.2). ``stub`` is the NDR-encoded input."""

    ptype = PType.REQUEST

    alloc_hint: int
    context_id: int
    opnum: int
    object_uuid: uuid.UUID | None = None  # on the wire iff PFC_OBJECT_UUID; the codec sets it
    stub: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Response(_PduBase):
    """response, PTYPE 0x02 (spec 3.3). ``stub`` is the NDR-encoded output."""

    ptype = PType.RESPONSE

    alloc_hint: int
    context_id: int
    cancel_count: int = 0
    stub: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault(_PduBase):
    """fault, PTYPE 0x03 (spec 3.5)."""

    ptype = PType.FAULT

    alloc_hint: int
    context_id: int
    cancel_count: int = 0
    status: int


Pdu = Bind | AlterContext | BindAck | AlterContextResp | BindNak | Request | Response | Fault
