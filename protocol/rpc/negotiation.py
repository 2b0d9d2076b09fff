"""Presentation-context negotiation: which proposed context the server accepts (spec 2.5).

This is vlmcsd's algorithm, the one the spec recommends, with the spec's additions:

1. NDR64 is *possible* when the server enables it and some element proposes NDR64 for
   the KMS interface. (vlmcsd looks at any element; requiring the KMS interface keeps a
   bind that offers NDR64 only for a foreign interface from losing its NDR32 context.)
2. Per element, in order, the first transfer syntax that qualifies is accepted (C706:
   at most one per element):

   * NDR32 v2 for the KMS interface, unless NDR64 is possible;
   * NDR64 v1 for the KMS interface, when NDR64 is possible;
   * a BTFN syntax, recognised by its 8-byte prefix only (spec 2.6, 10.3), when BTFN is
     enabled and the PDU is a bind: result negotiate_ack, reason = bitmask & 0x03.

3. Otherwise the element is rejected with reason 2 (transfer syntaxes not supported)
   for the KMS interface, or reason 1 (abstract syntax not supported) when the interface
   UUID is another one or its major version is not 1.

Rejected and BTFN results carry the all-zero syntax, as the vlmcsd client insists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from protocol.rpc.constants import (
    BTFN_PREFIX,
    BTFN_SUPPORTED,
    KMS_INTERFACE,
    KMS_INTERFACE_VERSION,
    NDR32_SYNTAX,
    NDR32_VERSION,
    NDR64_SYNTAX,
    NDR64_VERSION,
    ContextResult,
    ProviderReason,
    TransferSyntax,
)
from protocol.rpc.events import AcceptedContext
from protocol.rpc.pdus import ContextElement, ContextResultItem, SyntaxId

__all__ = [
    "KMS_INTERFACE_ID",
    "NULL_SYNTAX",
    "SYNTAX_IDS",
    "Negotiation",
    "btfn_syntax",
    "is_btfn",
    "negotiate",
]

KMS_INTERFACE_ID = SyntaxId(uuid=KMS_INTERFACE, version=KMS_INTERFACE_VERSION)
NULL_SYNTAX = SyntaxId(uuid=uuid.UUID(int=0), version=0)
SYNTAX_IDS: dict[TransferSyntax, SyntaxId] = {
    TransferSyntax.NDR32: SyntaxId(uuid=NDR32_SYNTAX, version=NDR32_VERSION),
    TransferSyntax.NDR64: SyntaxId(uuid=NDR64_SYNTAX, version=NDR64_VERSION),
}
_NDR32_ID = SYNTAX_IDS[TransferSyntax.NDR32]
_NDR64_ID = SYNTAX_IDS[TransferSyntax.NDR64]
_SYNTAX_NAMES = {syntax_id: name for name, syntax_id in SYNTAX_IDS.items()}
_BTFN_VERSION = 1
_NEGOTIATION_MEMO: Final = 32  # distinct (proposal, settings) pairs kept


@dataclass(frozen=True, slots=True)
class Negotiation:
    """The results for one bind / alter_context, in element order."""

    results: tuple[ContextResultItem, ...]
    accepted: tuple[AcceptedContext, ...]
    btfn: int | None  # the first acknowledged feature bitmask


def btfn_syntax(bitmask: int) -> SyntaxId:
    """The BTFN pseudo transfer syntax offering ``bitmask`` (spec 2.1)."""
    return SyntaxId(
        uuid=uuid.UUID(bytes_le=BTFN_PREFIX + bitmask.to_bytes(8, "little")),
        version=_BTFN_VERSION,
    )


def is_btfn(syntax: SyntaxId) -> bool:
    """True for any BTFN syntax, whatever its bitmask (spec 2.6)."""
    return syntax.uuid.bytes_le[:8] == BTFN_PREFIX


def _is_kms_interface(syntax: SyntaxId) -> bool:
    # if_version is u32: major in the low 16 bits, minor in the high 16 (spec 2.1).
    return syntax.uuid == KMS_INTERFACE and syntax.version & 0xFFFF == KMS_INTERFACE_VERSION


def _choose(element: ContextElement, *, ndr64: bool, btfn: bool) -> ContextResultItem:
    kms = _is_kms_interface(element.abstract_syntax)
    for syntax in element.transfer_syntaxes:
        if kms and syntax == (_NDR64_ID if ndr64 else _NDR32_ID):
            return ContextResultItem(ContextResult.ACCEPTANCE, 0, syntax)
        if btfn and is_btfn(syntax):
            bitmask = syntax.uuid.bytes_le[8] & BTFN_SUPPORTED
            return ContextResultItem(ContextResult.NEGOTIATE_ACK, bitmask, NULL_SYNTAX)
    reason = (
        ProviderReason.PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED
        if kms
        else ProviderReason.ABSTRACT_SYNTAX_NOT_SUPPORTED
    )
    return ContextResultItem(ContextResult.PROVIDER_REJECTION, reason, NULL_SYNTAX)


@lru_cache(maxsize=_NEGOTIATION_MEMO)
def negotiate(elements: tuple[ContextElement, ...], *, ndr64: bool, btfn: bool) -> Negotiation:
    """Answer every proposed element (spec 2.5); ``btfn`` must be False for alter_context.

    A pure function of its arguments, all immutable, so its results are memoised: clients
    of one kind propose the same elements on every connection.
    """
    ndr64_possible = ndr64 and any(
        _is_kms_interface(element.abstract_syntax) and _NDR64_ID in element.transfer_syntaxes
        for element in elements
    )
    results = tuple(_choose(element, ndr64=ndr64_possible, btfn=btfn) for element in elements)
    accepted = tuple(
        AcceptedContext(element.context_id, _SYNTAX_NAMES[result.transfer_syntax])
        for element, result in zip(elements, results, strict=True)
        if result.result == ContextResult.ACCEPTANCE
    )
    acks = [result.reason for result in results if result.result == ContextResult.NEGOTIATE_ACK]
    return Negotiation(results=results, accepted=accepted, btfn=acks[0] if acks else None)
