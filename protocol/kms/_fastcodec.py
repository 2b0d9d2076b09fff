"""The KMS codec on ``struct``: the hot-path twin of :mod:`protocol.kms.codec` (issue 7).

Why this module exists: parsing and building the fixed KMS layouts through ``construct``
costs tens of microseconds a message, several times per activation, and profiles of the
daemon showed it. ``codec`` stays the schema of record (its layouts are declared in
``schema``); every function here has the same name, signature, result and error type
(:class:`KmsMalformed`) as its twin there, and ``tests/protocol/test_kms_fastcodec.py``
proves they agree on every vector, on generated messages and on malformed input. The
string rules (MachineName, ePID) are shared, not copied: they are the codec's own helpers.

``struct``'s ``16s`` pads or truncates silently where ``construct``'s ``Bytes(16)`` refuses,
so the builders check fixed-size byte fields themselves.
"""

from __future__ import annotations

import struct
import uuid
from typing import Final

from protocol.errors import KmsMalformed
from protocol.kms.codec import (
    Envelope,
    ResponseTail,
    _decode_epid,
    _decode_machine_name,
    _encode_epid,
    _encode_machine_name,
    _protocol_version,
)
from protocol.kms.messages import KmsRequest, KmsResponse, ProtocolVersion
from protocol.kms.schema import BASE_REQUEST_SIZE

__all__ = [
    "build_envelope",
    "build_request",
    "build_response",
    "build_tail",
    "build_v4_request",
    "parse_envelope",
    "parse_request",
    "parse_response",
    "parse_tail",
    "parse_v4_request",
    "parse_version",
]

# The same layouts as ``schema`` (spec 4.1-4.8), little-endian throughout.
_VERSION: Final = struct.Struct("<HH")
_BASE_REQUEST: Final = struct.Struct("<HHIII16s16s16s16sIQ16s128s")
_ENVELOPE_HEAD: Final = struct.Struct("<HH16s")
_RESPONSE_HEAD: Final = struct.Struct("<HHI")
_RESPONSE_REST: Final = struct.Struct("<16sQIII")
_MAC_SIZE: Final = 16
_IV_SIZE: Final = 16
_TAIL_FIELDS: Final = {"random_xored_ivs": 16, "hash": 32, "hwid": 8, "xored_ivs": 16}
_V5_TAIL_SIZE: Final = 48
_V6_TAIL_SIZE: Final = 72

assert _BASE_REQUEST.size == BASE_REQUEST_SIZE


def _short(what: str, needed: int, data: bytes) -> KmsMalformed:
    return KmsMalformed(f"cannot parse {what}: needs {needed} bytes, got {len(data)}")


def _guid(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=raw)


_PRODUCT_GUIDS: dict[bytes, uuid.UUID] = {}
MAX_PRODUCT_GUIDS: Final = 4096


def _product_guid(raw: bytes) -> uuid.UUID:
    """An application, SKU or KMS ID: the same few hundred values arrive again and again.

    Each is parsed once (``uuid.UUID`` costs microseconds; a dict lookup on 16 bytes, well
    under one). UUIDs are immutable, so sharing them is safe. The cache stops growing at
    :data:`MAX_PRODUCT_GUIDS`, since a client chooses these bytes.
    """
    known = _PRODUCT_GUIDS.get(raw)
    if known is None:
        known = uuid.UUID(bytes_le=raw)
        if len(_PRODUCT_GUIDS) < MAX_PRODUCT_GUIDS:
            _PRODUCT_GUIDS[raw] = known
    return known


def _sized(value: bytes | None, size: int, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        raise KmsMalformed(f"cannot build {what}: a field must be {size} bytes")
    return bytes(value)


def parse_version(data: bytes) -> tuple[int, int]:
    """Return ``(major, minor)`` of a KMS message (spec 4.1)."""
    if len(data) < _VERSION.size:
        raise _short("version", _VERSION.size, data)
    minor, major = _VERSION.unpack_from(data)
    return major, minor


def parse_request(data: bytes) -> KmsRequest:
    """Parse a plaintext base request (spec 4.2); bytes after the 236th are ignored."""
    if len(data) < BASE_REQUEST_SIZE:
        raise _short("base request", BASE_REQUEST_SIZE, data)
    (minor, major, is_vm, status, grace, app, sku, kms, cmid, required, when, previous, name) = (
        _BASE_REQUEST.unpack_from(data)
    )
    return KmsRequest(
        version=_protocol_version(major, minor),
        is_client_vm=is_vm,
        license_status=status,
        grace_time_min=grace,
        application_id=_product_guid(app),
        sku_id=_product_guid(sku),
        kms_counted_id=_product_guid(kms),
        client_machine_id=_guid(cmid),
        required_client_count=required,
        request_time=when,
        previous_client_machine_id=_guid(previous),
        machine_name=_decode_machine_name(name),
    )


def build_request(request: KmsRequest) -> bytes:
    """Build the 236-byte plaintext base request (spec 4.2)."""
    name = _encode_machine_name(request.machine_name)
    try:
        return _BASE_REQUEST.pack(
            0,
            request.version,
            request.is_client_vm,
            request.license_status,
            request.grace_time_min,
            request.application_id.bytes_le,
            request.sku_id.bytes_le,
            request.kms_counted_id.bytes_le,
            request.client_machine_id.bytes_le,
            request.required_client_count,
            request.request_time,
            request.previous_client_machine_id.bytes_le,
            name,
        )
    except (struct.error, AttributeError) as exc:
        raise KmsMalformed(f"cannot build base request: {exc}") from exc


def parse_v4_request(data: bytes) -> tuple[bytes, bytes]:
    """Split a V4 request into its raw base request and MAC (spec 4.3); excess is ignored."""
    end = BASE_REQUEST_SIZE + _MAC_SIZE
    if len(data) < end:
        raise _short("V4 request", end, data)
    return bytes(data[:BASE_REQUEST_SIZE]), bytes(data[BASE_REQUEST_SIZE:end])


def build_v4_request(base: bytes, mac: bytes) -> bytes:
    """Join a raw base request and its MAC into a V4 request (spec 4.3)."""
    what = "V4 request"
    return _sized(base, BASE_REQUEST_SIZE, what) + _sized(mac, _MAC_SIZE, what)


def parse_envelope(data: bytes) -> Envelope:
    """Split a V5/V6 message into version, IV and ciphertext (spec 4.4, 4.7, 4.8)."""
    if len(data) < _ENVELOPE_HEAD.size:
        raise _short("encrypted message", _ENVELOPE_HEAD.size, data)
    minor, major, iv = _ENVELOPE_HEAD.unpack_from(data)
    return Envelope(major, minor, iv, bytes(data[_ENVELOPE_HEAD.size :]))


def build_envelope(envelope: Envelope) -> bytes:
    """Join version, IV and ciphertext into a V5/V6 message."""
    what = "encrypted message"
    iv = _sized(envelope.iv, _IV_SIZE, what)
    if not isinstance(envelope.ciphertext, bytes | bytearray):
        raise KmsMalformed(f"cannot build {what}: the ciphertext must be bytes")
    try:
        head = _VERSION.pack(envelope.minor, envelope.major)
    except struct.error as exc:
        raise KmsMalformed(f"cannot build {what}: {exc}") from exc
    return head + iv + envelope.ciphertext


def parse_response(data: bytes) -> tuple[KmsResponse, int]:
    """Parse a base response (spec 4.5) at the start of ``data``; also return 44 + PIDSize."""
    if len(data) < _RESPONSE_HEAD.size:
        raise _short("base response", _RESPONSE_HEAD.size, data)
    minor, major, pid_size = _RESPONSE_HEAD.unpack_from(data)
    epid_end = _RESPONSE_HEAD.size + pid_size
    size = epid_end + _RESPONSE_REST.size
    if len(data) < size:
        raise _short("base response", size, data)
    cmid, when, count, activation, renewal = _RESPONSE_REST.unpack_from(data, epid_end)
    response = KmsResponse(
        version=_protocol_version(major, minor),
        epid=_decode_epid(bytes(data[_RESPONSE_HEAD.size : epid_end])),
        client_machine_id=_guid(cmid),
        response_time=when,
        current_client_count=count,
        activation_interval_min=activation,
        renewal_interval_min=renewal,
    )
    return response, size


def build_response(response: KmsResponse) -> bytes:
    """Build a base response (spec 4.5); PIDSize is computed from the ePID."""
    epid = _encode_epid(response.epid)
    try:
        return (
            _RESPONSE_HEAD.pack(0, response.version, len(epid))
            + epid
            + _RESPONSE_REST.pack(
                response.client_machine_id.bytes_le,
                response.response_time,
                response.current_client_count,
                response.activation_interval_min,
                response.renewal_interval_min,
            )
        )
    except (struct.error, AttributeError) as exc:
        raise KmsMalformed(f"cannot build base response: {exc}") from exc


def parse_tail(data: bytes, version: ProtocolVersion) -> ResponseTail:
    """Parse the V5 or V6 tail that follows the base response (spec 4.7, 4.8)."""
    if version == ProtocolVersion.V5:
        if len(data) < _V5_TAIL_SIZE:
            raise _short("V5 response tail", _V5_TAIL_SIZE, data)
        return ResponseTail(bytes(data[:16]), bytes(data[16:48]))
    if len(data) < _V6_TAIL_SIZE:
        raise _short("V6 response tail", _V6_TAIL_SIZE, data)
    return ResponseTail(
        bytes(data[:16]), bytes(data[16:48]), bytes(data[48:56]), bytes(data[56:72])
    )


def build_tail(tail: ResponseTail) -> bytes:
    """Build a V5 tail, or a V6 one when ``hwid`` and ``xored_ivs`` are set."""
    v6 = tail.hwid is not None and tail.xored_ivs is not None
    what = "V6 response tail" if v6 else "V5 response tail"
    out = _sized(tail.random_xored_ivs, _TAIL_FIELDS["random_xored_ivs"], what) + _sized(
        tail.hash, _TAIL_FIELDS["hash"], what
    )
    if v6:
        out += _sized(tail.hwid, _TAIL_FIELDS["hwid"], what)
        out += _sized(tail.xored_ivs, _TAIL_FIELDS["xored_ivs"], what)
    return out
