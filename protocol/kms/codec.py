"""KMS message bytes <-> typed values; the only module where ``construct`` Containers exist.

Every ``construct`` error is converted here, once, into :class:`KmsMalformed` (architecture
4.4), whichever direction it happens in. The two string fields get explicit handling because
their rules are not expressible as layout (spec 4.2, 4.5, 10.16, 10.23):

* MachineName is decoded up to the first NUL code unit (clients leave garbage after it;
  undecodable units become U+FFFD since the name is informational) and encoded NUL-padded to
  128 bytes, at most 63 UTF-16 code units.
* The ePID is checked as a strict client does (spec 5.7): PIDSize <= 128, the last code unit
  is NUL and no earlier one is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from construct import ConstructError, Container, Struct

from protocol.errors import KmsMalformed
from protocol.kms import schema
from protocol.kms.messages import KmsRequest, KmsResponse, ProtocolVersion

__all__ = [
    "Envelope",
    "ResponseTail",
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

_MAX_PID_SIZE: Final = 128
_NUL: Final = b"\x00\x00"
_VERSIONS: Final = {(version.value, 0): version for version in ProtocolVersion}


@dataclass(frozen=True, slots=True)
class Envelope:
    """The plaintext framing of a V5/V6 request or response (spec 4.4, 4.7, 4.8)."""

    major: int
    minor: int
    iv: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class ResponseTail:
    """The payload fields after the base response: spec 4.7 (V5), and 4.8 (V6) adds two.

    The V6 HMAC is not here: it covers everything before it, so the crypto layer appends it.
    """

    random_xored_ivs: bytes
    hash: bytes
    hwid: bytes | None = None
    xored_ivs: bytes | None = None


def _parse(struct: Struct, data: bytes, what: str) -> Container[Any]:
    try:
        return struct.parse(data)
    except ConstructError as exc:
        raise KmsMalformed(f"cannot parse {what}: {exc}") from exc


def _build(struct: Struct, fields: dict[str, Any], what: str) -> bytes:
    try:
        return struct.build(fields)
    except ConstructError as exc:
        raise KmsMalformed(f"cannot build {what}: {exc}") from exc


def _protocol_version(major: int, minor: int) -> ProtocolVersion:
    version = _VERSIONS.get((major, minor))
    if version is None:
        raise KmsMalformed(f"unsupported KMS protocol version {major}.{minor}")
    return version


def _first_nul(raw: bytes) -> int:
    """Byte offset of the first NUL UTF-16 code unit, or ``len(raw)`` if there is none."""
    end = raw.find(_NUL)
    while end != -1 and end % 2:
        end = raw.find(_NUL, end + 1)
    return len(raw) if end == -1 else end


def parse_version(data: bytes) -> tuple[int, int]:
    """Return ``(major, minor)`` of a KMS message (spec 4.1)."""
    fields = _parse(schema.Version, data, "version")
    return fields.major, fields.minor


def _decode_machine_name(raw: bytes) -> str:
    return raw[: _first_nul(raw)].decode("utf-16-le", errors="replace")


def _encode_machine_name(name: str) -> bytes:
    try:
        encoded = name.encode("utf-16-le")
    except UnicodeEncodeError as exc:
        raise KmsMalformed(f"machine name is not encodable as UTF-16: {exc}") from exc
    if "\x00" in name or len(encoded) > schema.MACHINE_NAME_SIZE - len(_NUL):
        raise KmsMalformed("machine name must be at most 63 UTF-16 code units without NUL")
    return encoded.ljust(schema.MACHINE_NAME_SIZE, b"\x00")


def parse_request(data: bytes) -> KmsRequest:
    """Parse a plaintext base request (spec 4.2); bytes after the 236th are ignored."""
    fields = _parse(schema.BaseRequest, data, "base request")
    return KmsRequest(
        version=_protocol_version(fields.major, fields.minor),
        is_client_vm=fields.is_client_vm,
        license_status=fields.license_status,
        grace_time_min=fields.grace_time,
        application_id=fields.application_id,
        sku_id=fields.sku_id,
        kms_counted_id=fields.kms_counted_id,
        client_machine_id=fields.client_machine_id,
        required_client_count=fields.required_client_count,
        request_time=fields.request_time,
        previous_client_machine_id=fields.previous_client_machine_id,
        machine_name=_decode_machine_name(fields.machine_name),
    )


def build_request(request: KmsRequest) -> bytes:
    """Build the 236-byte plaintext base request (spec 4.2)."""
    fields = {
        "minor": 0,
        "major": request.version,
        "is_client_vm": request.is_client_vm,
        "license_status": request.license_status,
        "grace_time": request.grace_time_min,
        "application_id": request.application_id,
        "sku_id": request.sku_id,
        "kms_counted_id": request.kms_counted_id,
        "client_machine_id": request.client_machine_id,
        "required_client_count": request.required_client_count,
        "request_time": request.request_time,
        "previous_client_machine_id": request.previous_client_machine_id,
        "machine_name": _encode_machine_name(request.machine_name),
    }
    return _build(schema.BaseRequest, fields, "base request")


def parse_v4_request(data: bytes) -> tuple[bytes, bytes]:
    """Split a V4 request into its raw base request and MAC (spec 4.3); excess is ignored."""
    fields = _parse(schema.V4Request, data, "V4 request")
    return fields.base, fields.mac


def build_v4_request(base: bytes, mac: bytes) -> bytes:
    """Join a raw base request and its MAC into a V4 request (spec 4.3)."""
    return _build(schema.V4Request, {"base": base, "mac": mac}, "V4 request")


def parse_envelope(data: bytes) -> Envelope:
    """Split a V5/V6 message into version, IV and ciphertext (spec 4.4, 4.7, 4.8)."""
    fields = _parse(schema.EncryptedMessage, data, "encrypted message")
    return Envelope(fields.major, fields.minor, fields.iv, fields.ciphertext)


def build_envelope(envelope: Envelope) -> bytes:
    """Join version, IV and ciphertext into a V5/V6 message."""
    fields = {
        "minor": envelope.minor,
        "major": envelope.major,
        "iv": envelope.iv,
        "ciphertext": envelope.ciphertext,
    }
    return _build(schema.EncryptedMessage, fields, "encrypted message")


def _decode_epid(raw: bytes) -> str:
    if len(raw) > _MAX_PID_SIZE or len(raw) < len(_NUL) or len(raw) % 2:
        raise KmsMalformed(f"PIDSize {len(raw)} is not an even number from 2 to 128")
    end = _first_nul(raw)
    if end != len(raw) - len(_NUL):
        raise KmsMalformed("ePID must end with its only NUL code unit")
    try:
        return raw[:end].decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise KmsMalformed(f"ePID is not valid UTF-16: {exc}") from exc


def _encode_epid(epid: str) -> bytes:
    try:
        encoded = epid.encode("utf-16-le") + _NUL
    except UnicodeEncodeError as exc:
        raise KmsMalformed(f"ePID is not encodable as UTF-16: {exc}") from exc
    if "\x00" in epid or len(encoded) > _MAX_PID_SIZE:
        raise KmsMalformed("ePID must be at most 63 UTF-16 code units without NUL")
    return encoded


def parse_response(data: bytes) -> tuple[KmsResponse, int]:
    """Parse a base response (spec 4.5) at the start of ``data``.

    Returns the response and its length 44 + PIDSize, where the version's tail begins.
    """
    fields = _parse(schema.BaseResponse, data, "base response")
    response = KmsResponse(
        version=_protocol_version(fields.major, fields.minor),
        epid=_decode_epid(fields.epid),
        client_machine_id=fields.client_machine_id,
        response_time=fields.response_time,
        current_client_count=fields.current_client_count,
        activation_interval_min=fields.activation_interval,
        renewal_interval_min=fields.renewal_interval,
    )
    return response, fields.size


def build_response(response: KmsResponse) -> bytes:
    """Build a base response (spec 4.5); PIDSize is computed from the ePID."""
    fields = {
        "minor": 0,
        "major": response.version,
        "epid": _encode_epid(response.epid),
        "client_machine_id": response.client_machine_id,
        "response_time": response.response_time,
        "current_client_count": response.current_client_count,
        "activation_interval": response.activation_interval_min,
        "renewal_interval": response.renewal_interval_min,
    }
    return _build(schema.BaseResponse, fields, "base response")


def parse_tail(data: bytes, version: ProtocolVersion) -> ResponseTail:
    """Parse the V5 or V6 tail that follows the base response (spec 4.7, 4.8)."""
    if version == ProtocolVersion.V5:
        fields = _parse(schema.V5ResponseTail, data, "V5 response tail")
        return ResponseTail(fields.random_xored_ivs, fields.hash)
    fields = _parse(schema.V6ResponseTail, data, "V6 response tail")
    return ResponseTail(fields.random_xored_ivs, fields.hash, fields.hwid, fields.xored_ivs)


def build_tail(tail: ResponseTail) -> bytes:
    """Build a V5 tail, or a V6 one when ``hwid`` and ``xored_ivs`` are set."""
    fields = {
        "random_xored_ivs": tail.random_xored_ivs,
        "hash": tail.hash,
        "hwid": tail.hwid,
        "xored_ivs": tail.xored_ivs,
    }
    if tail.hwid is None or tail.xored_ivs is None:
        return _build(schema.V5ResponseTail, fields, "V5 response tail")
    return _build(schema.V6ResponseTail, fields, "V6 response tail")
