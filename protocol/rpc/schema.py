"""Declarative wire layouts of the DCE/RPC connection-oriented PDUs a KMS host handles.

Only ``construct`` structures live here (architecture 4.2): no policy, no conversion to
typed values. :mod:`protocol.rpc.codec` is the one module that parses and builds with them.

Layouts follow the team specification (``kms-protocol.md``), itself taken from C706
chapter 12 and [MS-RPCE] 2.2.2:

* :data:`CommonHeader` -- spec 1.2, the 16 bytes every PDU starts with.
* ``*_BODY`` structs -- everything after the common header, one per PDU type. The codec
  fills in ``frag_length`` from the built body, which keeps the header honest without
  a size formula per PDU type.
* Bind and alter_context share :data:`BIND_BODY` (spec 2.2); their elements walk
  ``n_transfer_syn`` (C706) instead of assuming one syntax per element as both
  emulators do.
* bind_ack and alter_context_resp share :data:`BIND_ACK_BODY` (spec 2.3); the padding
  after the secondary address aligns ``n_results`` to 4 bytes *from the PDU start*
  (spec 10.4). Padding and reserved fields are written as zeros and ignored on parse,
  because Microsoft and vlmcsd leave stale bytes there.
* The request object UUID is present only when ``PFC_OBJECT_UUID`` is set in the
  header (spec 3.2); the codec passes ``pfc_flags`` as a context parameter.
* The NDR32 / NDR64 stubs of RequestActivation (spec 3.2, 3.4): the request's two size
  fields and array, the response's size, unique pointer, array and HRESULT, and the
  NULL-pointer error stub. :mod:`protocol.rpc.ndr` checks their size rules.

GUIDs stay raw 16-byte strings here; the codec turns them into :class:`uuid.UUID`.
Lengths, counts and conditions are ``construct`` expressions of ``this`` (not lambdas), so
that :mod:`protocol.layout` derives the runtime reader and writer from these declarations.
"""

from __future__ import annotations

from construct import (
    Array,
    Bytes,
    GreedyBytes,
    If,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Padding,
    Rebuild,
    Struct,
    len_,
    this,
)

from protocol.rpc.constants import PFC

__all__ = [
    "ALTER_CONTEXT_BODY",
    "BIND_ACK_BODY",
    "BIND_BODY",
    "BIND_NAK_BODY",
    "COMMON_HEADER_SIZE",
    "FAULT_BODY",
    "NDR32_ERROR_STUB",
    "NDR32_REQUEST_STUB",
    "NDR32_RESPONSE_STUB",
    "NDR64_ERROR_STUB",
    "NDR64_REQUEST_STUB",
    "NDR64_RESPONSE_STUB",
    "REQUEST_BODY",
    "RESPONSE_BODY",
    "CommonHeader",
    "ContextElement",
    "ContextResult",
    "SyntaxId",
]

COMMON_HEADER_SIZE = 16
# Offset of bind_ack's sec_addr.port_spec from the PDU start (spec 2.3).
_PORT_SPEC_OFFSET = COMMON_HEADER_SIZE + 10

CommonHeader = Struct(
    "rpc_vers" / Int8ul,
    "rpc_vers_minor" / Int8ul,
    "ptype" / Int8ul,
    "pfc_flags" / Int8ul,
    "drep" / Bytes(4),
    "frag_length" / Int16ul,
    "auth_length" / Int16ul,
    "call_id" / Int32ul,
)

# p_syntax_id_t: interface or transfer syntax, GUID in mixed-endian wire form (spec 0.1).
SyntaxId = Struct(
    "uuid" / Bytes(16),
    "version" / Int32ul,
)

# p_cont_elem_t (spec 2.2).
ContextElement = Struct(
    "context_id" / Int16ul,
    "n_transfer_syn" / Rebuild(Int8ul, len_(this.transfer_syntaxes)),
    Padding(1),
    "abstract_syntax" / SyntaxId,
    "transfer_syntaxes" / Array(this.n_transfer_syn, SyntaxId),
)

# bind (PTYPE 0x0B) and alter_context (0x0E) after the common header (spec 2.2).
# Bytes after the last element (an auth_verifier when auth_length != 0) are not read.
BIND_BODY = Struct(
    "max_xmit_frag" / Int16ul,
    "max_recv_frag" / Int16ul,
    "assoc_group_id" / Int32ul,
    "n_context_elem" / Rebuild(Int8ul, len_(this.contexts)),
    Padding(3),
    "contexts" / Array(this.n_context_elem, ContextElement),
)
ALTER_CONTEXT_BODY = BIND_BODY

# p_result_t (spec 2.3, 2.4).
ContextResult = Struct(
    "result" / Int16ul,
    "reason" / Int16ul,
    "transfer_syntax" / SyntaxId,
)


# bind_ack (0x0C) and alter_context_resp (0x0F) after the common header (spec 2.3).
# ``sec_addr`` includes the terminating NUL; it is empty in an alter_context_resp.
BIND_ACK_BODY = Struct(
    "max_xmit_frag" / Int16ul,
    "max_recv_frag" / Int16ul,
    "assoc_group_id" / Int32ul,
    "sec_addr_len" / Rebuild(Int16ul, len_(this.sec_addr)),
    "sec_addr" / Bytes(this.sec_addr_len),
    Padding(-(_PORT_SPEC_OFFSET + this.sec_addr_len) % 4),  # A = align4(26 + L), spec 2.3
    "n_results" / Rebuild(Int8ul, len_(this.results)),
    Padding(3),
    "results" / Array(this.n_results, ContextResult),
)

# bind_nak (0x0D) after the common header (spec 2.8): reason, then the protocol
# versions the server supports, padded to 4 from the PDU start.
BIND_NAK_BODY = Struct(
    "provider_reject_reason" / Int16ul,
    "n_protocols" / Rebuild(Int8ul, len_(this.versions)),
    "versions" / Array(this.n_protocols, Struct("major" / Int8ul, "minor" / Int8ul)),
    Padding(-(COMMON_HEADER_SIZE + 3 + 2 * this.n_protocols) % 4),
)


# request (0x00) after the common header (spec 3.2). Parse and build with the
# header's ``pfc_flags=`` as a context parameter.
REQUEST_BODY = Struct(
    "alloc_hint" / Int32ul,
    "context_id" / Int16ul,
    "opnum" / Int16ul,
    "object" / If(this._params.pfc_flags & int(PFC.OBJECT_UUID), Bytes(16)),
    "stub" / GreedyBytes,
)

# response (0x02) after the common header (spec 3.3).
RESPONSE_BODY = Struct(
    "alloc_hint" / Int32ul,
    "context_id" / Int16ul,
    "cancel_count" / Int8ul,
    Padding(1),
    "stub" / GreedyBytes,
)

# fault (0x03) after the common header (spec 3.5); 16 bytes, reserved fields zero.
FAULT_BODY = Struct(
    "alloc_hint" / Int32ul,
    "context_id" / Int16ul,
    "cancel_count" / Int8ul,
    Padding(1),
    "status" / Int32ul,
    Padding(4),
)

# RequestActivation's [in] parameters (spec 3.2.1, 3.2.2): requestSize, the conformant
# array's max_count, the array. Bytes after the array are not read.
NDR32_REQUEST_STUB = Struct(
    "request_size" / Int32ul,
    "max_count" / Int32ul,
    "request" / Bytes(this.max_count),
)
NDR64_REQUEST_STUB = Struct(
    "request_size" / Int32ul,
    Padding(4),
    "max_count" / Int64ul,
    "request" / Bytes(this.max_count),
)

# The [out] parameters of a success (spec 3.4.1, 3.4.2): *responseSize, the unique
# pointer's referent id, max_count, the array, alignment to 4, then the HRESULT.
NDR32_RESPONSE_STUB = Struct(
    "response_size" / Int32ul,
    "referent_id" / Int32ul,
    "max_count" / Int32ul,
    "response" / Bytes(this.max_count),
    Padding(-this.max_count % 4),
    "hresult" / Int32ul,
)
NDR64_RESPONSE_STUB = Struct(
    "response_size" / Int32ul,
    Padding(4),
    "referent_id" / Int64ul,
    "max_count" / Int64ul,
    "response" / Bytes(this.max_count),
    Padding(-this.max_count % 4),
    "hresult" / Int32ul,
)

# The [out] parameters of a KMS-level failure (spec 3.4.3): size 0, a NULL pointer, HRESULT.
NDR32_ERROR_STUB = Struct(
    "response_size" / Int32ul,
    "referent_id" / Int32ul,
    "hresult" / Int32ul,
)
NDR64_ERROR_STUB = Struct(
    "response_size" / Int32ul,
    Padding(4),
    "referent_id" / Int64ul,
    "hresult" / Int32ul,
)
