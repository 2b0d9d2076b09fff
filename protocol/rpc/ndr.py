"""NDR32 / NDR64 stubs of RequestActivation, opnum 0 (spec 3.1 to 3.4).

The operation takes ``(int requestSize, [size_is(requestSize)] byte* request)`` and
returns ``(int* responseSize, [unique, size_is(, *responseSize)] byte** response)`` plus
an HRESULT. The stubs are small fixed layouts, so they are packed with :mod:`struct`
rather than a schema; the byte offsets are those of the spec tables.

Server side: :func:`unwrap_request_stub`, :func:`wrap_response_stub`,
:func:`wrap_error_stub`. Client side: :func:`wrap_request_stub`,
:func:`unwrap_response_stub`.

A stub whose NDR size fields are inconsistent cannot be decoded at all; that is an
RPC-level failure, reported as :class:`~protocol.errors.RpcFault` with status
``RPC_X_BAD_STUB_DATA`` (0x6F7), the status the Microsoft NDR engine faults with (spec
3.5). The association survives: the PDU was framed correctly. A KMS message that is
merely too short or unknown is *not* a stub problem: it is passed up, and the KMS layer
answers it with HRESULT 0x8007000D (spec 3.2, 10.11).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from protocol.errors import RPC_X_BAD_STUB_DATA, RpcFault
from protocol.rpc.constants import TransferSyntax

__all__ = [
    "UNIQUE_REFERENT_ID",
    "StubResult",
    "unwrap_request_stub",
    "unwrap_response_stub",
    "wrap_error_stub",
    "wrap_request_stub",
    "wrap_response_stub",
]

# The referent id Microsoft's NDR engine gives the first unique pointer (spec 3.4.1).
UNIQUE_REFERENT_ID = 0x00020000

# requestSize, then the conformance (max_count) of the byte array (spec 3.2.1, 3.2.2).
_REQUEST_HEADER = {
    TransferSyntax.NDR32: struct.Struct("<II"),
    TransferSyntax.NDR64: struct.Struct("<I4xQ"),
}
# *responseSize, referent id, max_count (spec 3.4.1, 3.4.2).
_RESPONSE_HEADER = {
    TransferSyntax.NDR32: struct.Struct("<III"),
    TransferSyntax.NDR64: struct.Struct("<I4xQQ"),
}
# *responseSize 0 and a NULL referent (spec 3.4.3).
_NULL_HEADER = {
    TransferSyntax.NDR32: struct.Struct("<II"),
    TransferSyntax.NDR64: struct.Struct("<I4xQ"),
}
_HRESULT = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class StubResult:
    """A decoded response stub: ``payload`` is None when the output pointer was NULL."""

    hresult: int
    payload: bytes | None


def _pad4(length: int) -> bytes:
    return bytes(-length % 4)


def _bad_stub(message: str, call_id: int, context_id: int) -> RpcFault:
    return RpcFault(message, status=RPC_X_BAD_STUB_DATA, call_id=call_id, context_id=context_id)


def unwrap_request_stub(
    stub: bytes, syntax: TransferSyntax, *, call_id: int = 0, context_id: int = 0
) -> bytes:
    """Return the KMS request inside a request stub (spec 3.2.1, 3.2.2).

    Checks the spec 3.2 rules: the stub holds both size fields, ``requestSize`` equals
    the array's ``max_count``, and ``max_count`` bytes are present. Bytes after the
    array are ignored. ``call_id``/``context_id`` only label the raised fault.
    """
    header = _REQUEST_HEADER[syntax]
    if len(stub) < header.size:
        raise _bad_stub(f"{syntax.name} request stub of {len(stub)} bytes", call_id, context_id)
    request_size, max_count = header.unpack_from(stub)
    if request_size != max_count:
        raise _bad_stub(f"requestSize {request_size} != max_count {max_count}", call_id, context_id)
    if max_count > len(stub) - header.size:
        raise _bad_stub(
            f"max_count {max_count} > {len(stub) - header.size} bytes present", call_id, context_id
        )
    return stub[header.size : header.size + max_count]


def wrap_request_stub(kms_message: bytes, syntax: TransferSyntax) -> bytes:
    """Encode a KMS request as the [in] parameters of opnum 0 (spec 3.2.1, 3.2.2)."""
    size = len(kms_message)
    return _REQUEST_HEADER[syntax].pack(size, size) + kms_message


def wrap_response_stub(kms_message: bytes, syntax: TransferSyntax) -> bytes:
    """Encode a successful answer: size, unique pointer, array, HRESULT 0 (spec 3.4.1/2)."""
    size = len(kms_message)
    header = _RESPONSE_HEADER[syntax].pack(size, UNIQUE_REFERENT_ID, size)
    # NDR order: the array, alignment to 4, then the return value (spec 3.4.1 note).
    return header + kms_message + _pad4(size) + _HRESULT.pack(0)


def wrap_error_stub(hresult: int, syntax: TransferSyntax) -> bytes:
    """Encode a KMS-level failure: size 0, NULL pointer, HRESULT (spec 3.4.3; 12/20 bytes)."""
    return _NULL_HEADER[syntax].pack(0, 0) + _HRESULT.pack(hresult)


def unwrap_response_stub(stub: bytes, syntax: TransferSyntax, *, call_id: int = 0) -> StubResult:
    """Decode a response stub strictly (client side; what vlmcs checks, spec 3.4).

    A NULL pointer must come with size 0 and exactly one HRESULT after it; a non-NULL
    one with ``max_count == *responseSize`` and the array, padding and HRESULT filling
    the stub exactly.
    """
    null_header = _NULL_HEADER[syntax]
    if len(stub) < null_header.size + _HRESULT.size:
        raise _bad_stub(f"{syntax.name} response stub of {len(stub)} bytes", call_id, 0)
    size, referent = null_header.unpack_from(stub)
    if referent == 0:
        if size != 0 or len(stub) != null_header.size + _HRESULT.size:
            raise _bad_stub("NULL response pointer with data", call_id, 0)
        (hresult,) = _HRESULT.unpack_from(stub, null_header.size)
        return StubResult(hresult=hresult, payload=None)
    header = _RESPONSE_HEADER[syntax]
    if len(stub) < header.size:
        raise _bad_stub(f"{syntax.name} response stub of {len(stub)} bytes", call_id, 0)
    _, _, max_count = header.unpack_from(stub)
    expected = header.size + size + len(_pad4(size)) + _HRESULT.size
    if max_count != size or len(stub) != expected:
        raise _bad_stub(
            f"responseSize {size}, max_count {max_count}, stub {len(stub)} bytes", call_id, 0
        )
    (hresult,) = _HRESULT.unpack_from(stub, expected - _HRESULT.size)
    return StubResult(hresult=hresult, payload=stub[header.size : header.size + size])
