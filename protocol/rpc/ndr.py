"""NDR32 / NDR64 stubs of RequestActivation, opnum 0 (spec 3.1 to 3.4).

The operation takes ``(int requestSize, [size_is(requestSize)] byte* request)`` and
returns ``(int* responseSize, [unique, size_is(, *responseSize)] byte** response)`` plus
an HRESULT. The stub layouts are declared in :mod:`protocol.rpc.schema` and run by the
readers and writers :mod:`protocol.layout` derives from them; this module adds the size
rules of spec 3.2 and 3.4 that a layout cannot express.

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

from dataclasses import dataclass
from typing import Final

from protocol.errors import RPC_X_BAD_STUB_DATA, MalformedPdu, RpcFault
from protocol.layout import Layout
from protocol.rpc import schema
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

_REQUEST_STUB: Final = {
    TransferSyntax.NDR32: Layout("NDR32 request stub", schema.NDR32_REQUEST_STUB, MalformedPdu),
    TransferSyntax.NDR64: Layout("NDR64 request stub", schema.NDR64_REQUEST_STUB, MalformedPdu),
}
_RESPONSE_STUB: Final = {
    TransferSyntax.NDR32: Layout("NDR32 response stub", schema.NDR32_RESPONSE_STUB, MalformedPdu),
    TransferSyntax.NDR64: Layout("NDR64 response stub", schema.NDR64_RESPONSE_STUB, MalformedPdu),
}
_ERROR_STUB: Final = {
    TransferSyntax.NDR32: Layout("NDR32 error stub", schema.NDR32_ERROR_STUB, MalformedPdu),
    TransferSyntax.NDR64: Layout("NDR64 error stub", schema.NDR64_ERROR_STUB, MalformedPdu),
}


@dataclass(frozen=True, slots=True)
class StubResult:
    """A decoded response stub: ``payload`` is None when the output pointer was NULL."""

    hresult: int
    payload: bytes | None


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
    try:
        fields = _REQUEST_STUB[syntax].parse(stub)
    except MalformedPdu as exc:
        raise _bad_stub(f"{exc} ({len(stub)} bytes)", call_id, context_id) from exc
    request_size, max_count = fields["request_size"], fields["max_count"]
    if request_size != max_count:
        raise _bad_stub(f"requestSize {request_size} != max_count {max_count}", call_id, context_id)
    request: bytes = fields["request"]
    return request


def wrap_request_stub(kms_message: bytes, syntax: TransferSyntax) -> bytes:
    """Encode a KMS request as the [in] parameters of opnum 0 (spec 3.2.1, 3.2.2)."""
    size = len(kms_message)
    fields = {"request_size": size, "max_count": size, "request": kms_message}
    return _REQUEST_STUB[syntax].build(fields)


def wrap_response_stub(kms_message: bytes, syntax: TransferSyntax) -> bytes:
    """Encode a successful answer: size, unique pointer, array, HRESULT 0 (spec 3.4.1/2)."""
    size = len(kms_message)
    fields = {
        "response_size": size,
        "referent_id": UNIQUE_REFERENT_ID,
        "max_count": size,
        "response": kms_message,
        "hresult": 0,
    }
    return _RESPONSE_STUB[syntax].build(fields)


def wrap_error_stub(hresult: int, syntax: TransferSyntax) -> bytes:
    """Encode a KMS-level failure: size 0, NULL pointer, HRESULT (spec 3.4.3; 12/20 bytes)."""
    return _ERROR_STUB[syntax].pack(0, 0, hresult)


def unwrap_response_stub(stub: bytes, syntax: TransferSyntax, *, call_id: int = 0) -> StubResult:
    """Decode a response stub strictly (client side; what vlmcs checks, spec 3.4).

    A NULL pointer must come with size 0 and exactly one HRESULT after it; a non-NULL
    one with ``max_count == *responseSize`` and the array, padding and HRESULT filling
    the stub exactly.
    """
    error_stub = _ERROR_STUB[syntax]
    try:
        size, referent, hresult = error_stub.unpack(stub)  # the two layouts share their start
        if referent == 0:
            if size != 0 or len(stub) != error_stub.size:
                raise _bad_stub("NULL response pointer with data", call_id, 0)
            return StubResult(hresult=hresult, payload=None)
        fields, end = _RESPONSE_STUB[syntax].read(stub)
    except MalformedPdu as exc:
        raise _bad_stub(f"{exc} ({len(stub)} bytes)", call_id, 0) from exc
    max_count = fields["max_count"]
    if max_count != size or end != len(stub):
        raise _bad_stub(
            f"responseSize {size}, max_count {max_count}, stub {len(stub)} bytes", call_id, 0
        )
    return StubResult(hresult=fields["hresult"], payload=fields["response"])
