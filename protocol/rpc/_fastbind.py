"""``struct`` fast paths for the context-negotiation PDUs: bind, alter_context and their acks.

Why: with a fresh TCP connection per activation, profiles of the daemon put about a quarter
of its CPU in ``construct`` walking a bind's context elements and a bind_ack's secondary
address, padding and results field by field. Parsing a Windows-style bind and alter_context
and building their acks took 2.8 M instructions that way and takes 0.2 M here; a whole
association on ``RpcServerConnection`` (bind, alter_context, request, response) went from
3.3 M to 0.7 M (callgrind). The client (:mod:`protocol.rpc.client`) builds the same proposals and
parses the same replies.

The rule is :mod:`protocol.rpc._fastpdu`'s: ``schema`` stays the layout of record, and each
function here returns ``None`` whenever its input is not the plain, well-formed case, so
that :mod:`protocol.rpc.codec` takes the ``construct`` path and gives exactly the result or
the error it always did. Covered, with the spec section of each layout:

* bind / alter_context bodies (spec 2.2, ``schema.BIND_BODY``), parsed and built. Elements
  walk ``n_transfer_syn``; bytes after the last element are not read, as in ``schema``.
* bind_ack / alter_context_resp bodies (spec 2.3, ``schema.BIND_ACK_BODY``), parsed and
  built. The padding after ``sec_addr`` aligns ``n_results`` to 4 from the PDU start
  (spec 10.4); it is written as zeros and skipped unread, as ``construct`` does. A
  secondary address that is not one NUL-terminated ASCII string (or a non-ASCII
  ``secondary_address`` to build) is declined, so the codec's ``_port_string`` and
  ``_reply_fields`` raise their own ``ValueError`` / ``UnicodeEncodeError``.

Parsing shares one :class:`~protocol.rpc.pdus.SyntaxId` per syntax the KMS exchange uses
(spec 2.1, 2.4): they are frozen, and building a ``uuid.UUID`` costs more than the rest of
an element. Any other syntax is built from its bytes, so the table only saves time.
``tests/protocol/test_rpc_fastpdu.py`` holds both paths to the same answers.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, Final

from protocol.rpc._fastpdu import with_header
from protocol.rpc.constants import (
    BTFN_PREFIX,
    KMS_INTERFACE,
    KMS_INTERFACE_VERSION,
    NDR32_SYNTAX,
    NDR32_VERSION,
    NDR64_SYNTAX,
    NDR64_VERSION,
)
from protocol.rpc.pdus import (
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    ContextElement,
    ContextResultItem,
    SyntaxId,
)

__all__ = ["build_proposal", "build_reply", "proposal_fields", "reply_fields"]

_PROPOSAL_HEAD: Final = struct.Struct("<HHIB3x")  # spec 2.2; schema.BIND_BODY to p_cont_elem
_ELEMENT_HEAD: Final = struct.Struct("<HBx20s")  # spec 2.2; schema.ContextElement to its syntaxes
_SYNTAX: Final = struct.Struct("<16sI")  # spec 2.1; schema.SyntaxId
_SYNTAX_SIZE: Final = _SYNTAX.size
_REPLY_HEAD: Final = struct.Struct("<HHIH")  # spec 2.3; schema.BIND_ACK_BODY to sec_addr
_RESULTS_HEAD: Final = struct.Struct("<B3x")  # spec 2.3: n_results and reserved bytes
_RESULT: Final = struct.Struct("<HH20s")  # spec 2.3; schema.ContextResult
_PORT_SPEC_OFFSET: Final = 26  # sec_addr.port_spec from the PDU start (spec 2.3)


def _wire(syntax: SyntaxId) -> bytes:
    """A syntax's 20 wire bytes (spec 2.1); raises struct.error for a version out of u32."""
    return _SYNTAX.pack(syntax.uuid.bytes_le, syntax.version)


_KNOWN_SYNTAXES: Final = {
    _wire(syntax): syntax
    for syntax in (
        SyntaxId(KMS_INTERFACE, KMS_INTERFACE_VERSION),
        SyntaxId(NDR32_SYNTAX, NDR32_VERSION),
        SyntaxId(NDR64_SYNTAX, NDR64_VERSION),
        SyntaxId(uuid.UUID(bytes_le=BTFN_PREFIX + b"\x03" + bytes(7)), 1),  # Windows' BTFN
        SyntaxId(uuid.UUID(int=0), 0),  # rejections and negotiate_ack (spec 2.4)
    )
}


def _syntax(raw: bytes) -> SyntaxId:
    known = _KNOWN_SYNTAXES.get(raw)
    if known is not None:
        return known
    raw_uuid, version = _SYNTAX.unpack(raw)
    return SyntaxId(uuid.UUID(bytes_le=raw_uuid), version)


def proposal_fields(body: bytes) -> dict[str, Any] | None:
    """A bind or alter_context body's fields as the codec's ``_proposal`` gives them, or None."""
    try:
        max_xmit_frag, max_recv_frag, assoc_group_id, count = _PROPOSAL_HEAD.unpack_from(body)
        offset = _PROPOSAL_HEAD.size
        contexts = []
        for _ in range(count):
            context_id, n_syntaxes, abstract = _ELEMENT_HEAD.unpack_from(body, offset)
            start = offset + _ELEMENT_HEAD.size
            offset = start + n_syntaxes * _SYNTAX_SIZE
            if offset > len(body):
                return None
            syntaxes = tuple(
                [_syntax(body[i : i + _SYNTAX_SIZE]) for i in range(start, offset, _SYNTAX_SIZE)]
            )
            contexts.append(ContextElement(context_id, _syntax(abstract), syntaxes))
    except struct.error:  # short: construct reports where
        return None
    return {
        "max_xmit_frag": max_xmit_frag,
        "max_recv_frag": max_recv_frag,
        "assoc_group_id": assoc_group_id,
        "contexts": tuple(contexts),
    }


def reply_fields(body: bytes) -> dict[str, Any] | None:
    """A bind_ack or alter_context_resp body's fields as the codec's ``_reply`` gives them."""
    try:
        max_xmit_frag, max_recv_frag, assoc_group_id, length = _REPLY_HEAD.unpack_from(body)
        sec_addr = body[_REPLY_HEAD.size : _REPLY_HEAD.size + length]
        offset = _REPLY_HEAD.size + length + -(_PORT_SPEC_OFFSET + length) % 4
        (count,) = _RESULTS_HEAD.unpack_from(body, offset)  # raises if sec_addr was short
        offset += _RESULTS_HEAD.size
        results = []
        for _ in range(count):
            result, reason, syntax = _RESULT.unpack_from(body, offset)
            results.append(ContextResultItem(result, reason, _syntax(syntax)))
            offset += _RESULT.size
    except struct.error:
        return None
    if length and (sec_addr.find(0) != length - 1 or not sec_addr.isascii()):
        return None  # not one NUL-terminated string: the codec's _port_string raises
    return {
        "max_xmit_frag": max_xmit_frag,
        "max_recv_frag": max_recv_frag,
        "assoc_group_id": assoc_group_id,
        "secondary_address": sec_addr[:-1].decode("ascii"),
        "results": tuple(results),
    }


def build_proposal(pdu: Bind | AlterContext) -> bytes | None:
    """A bind or alter_context PDU, or None."""
    try:
        parts = [
            _PROPOSAL_HEAD.pack(
                pdu.max_xmit_frag, pdu.max_recv_frag, pdu.assoc_group_id, len(pdu.contexts)
            )
        ]
        for element in pdu.contexts:
            syntaxes = element.transfer_syntaxes
            abstract = _wire(element.abstract_syntax)
            parts.append(_ELEMENT_HEAD.pack(element.context_id, len(syntaxes), abstract))
            parts.extend(_wire(syntax) for syntax in syntaxes)
    except struct.error:
        return None
    return with_header(pdu, pdu.pfc_flags, b"".join(parts))


def build_reply(pdu: BindAck | AlterContextResp) -> bytes | None:
    """A bind_ack or alter_context_resp PDU, padding written as zeros, or None."""
    address = pdu.secondary_address
    if not address.isascii():
        return None  # the codec's _reply_fields raises UnicodeEncodeError
    sec_addr = address.encode("ascii") + b"\0" if address else b""
    padding = bytes(-(_PORT_SPEC_OFFSET + len(sec_addr)) % 4)
    try:
        parts = [
            _REPLY_HEAD.pack(
                pdu.max_xmit_frag, pdu.max_recv_frag, pdu.assoc_group_id, len(sec_addr)
            ),
            sec_addr,
            padding,
            _RESULTS_HEAD.pack(len(pdu.results)),
        ]
        parts.extend(
            _RESULT.pack(item.result, item.reason, _wire(item.transfer_syntax))
            for item in pdu.results
        )
    except struct.error:
        return None
    return with_header(pdu, pdu.pfc_flags, b"".join(parts))
