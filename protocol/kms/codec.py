"""KMS message bytes <-> typed values: the only module that reads and writes the KMS layouts.

Each layout is the declaration in :mod:`protocol.kms.schema`, run by the reader and writer
:mod:`protocol.layout` derives from it; every failure, in either direction, is raised as
:class:`KmsMalformed` (architecture 4.4). The two string fields get explicit handling because
their rules are not expressible as layout (spec 4.2, 4.5, 10.16, 10.23):

* MachineName is decoded up to the first NUL code unit (clients leave garbage after it;
  undecodable units become U+FFFD since the name is informational) and encoded NUL-padded to
  128 bytes, at most 63 UTF-16 code units.
* The ePID is checked as a strict client does (spec 5.7): PIDSize <= 128, the last code unit
  is NUL and no earlier one is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final

from protocol.errors import KmsMalformed
from protocol.kms import schema
from protocol.kms.messages import KmsRequest, KmsResponse, ProtocolVersion
from protocol.layout import Layout

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
MAX_PRODUCT_GUIDS: Final = 4096

_VERSION: Final = Layout("version", schema.Version, KmsMalformed)
_BASE_REQUEST: Final = Layout("base request", schema.BaseRequest, KmsMalformed)
_V4_REQUEST: Final = Layout("V4 request", schema.V4Request, KmsMalformed)
_ENVELOPE: Final = Layout("encrypted message", schema.EncryptedMessage, KmsMalformed)
_BASE_RESPONSE: Final = Layout("base response", schema.BaseResponse, KmsMalformed)
_V5_TAIL: Final = Layout("V5 response tail", schema.V5ResponseTail, KmsMalformed)
_V6_TAIL: Final = Layout("V6 response tail", schema.V6ResponseTail, KmsMalformed)


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


_PRODUCT_GUIDS: dict[bytes, uuid.UUID] = {}


def _product_guid(raw: bytes) -> uuid.UUID:
    """An application, SKU or KMS ID: the same few hundred values arrive again and again.

    Each is made a UUID once (UUIDs are immutable, so sharing them is safe). The memo stops
    growing at :data:`MAX_PRODUCT_GUIDS`, since a client chooses these bytes.
    """
    known = _PRODUCT_GUIDS.get(raw)
    if known is None:
        known = uuid.UUID(bytes_le=raw)
        if len(_PRODUCT_GUIDS) < MAX_PRODUCT_GUIDS:
            _PRODUCT_GUIDS[raw] = known
    return known


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
    minor, major = _VERSION.unpack(data)
    return major, minor


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
    (minor, major, is_vm, status, grace, app, sku, kms, cmid, required, when, previous, name) = (
        _BASE_REQUEST.unpack(data)
    )
    return KmsRequest(
        version=_protocol_version(major, minor),
        is_client_vm=is_vm,
        license_status=status,
        grace_time_min=grace,
        application_id=_product_guid(app),
        sku_id=_product_guid(sku),
        kms_counted_id=_product_guid(kms),
        client_machine_id=uuid.UUID(bytes_le=cmid),
        required_client_count=required,
        request_time=when,
        previous_client_machine_id=uuid.UUID(bytes_le=previous),
        machine_name=_decode_machine_name(name),
    )


def build_request(request: KmsRequest) -> bytes:
    """Build the 236-byte plaintext base request (spec 4.2)."""
    name = _encode_machine_name(request.machine_name)
    try:
        guids = (
            request.application_id.bytes_le,
            request.sku_id.bytes_le,
            request.kms_counted_id.bytes_le,
            request.client_machine_id.bytes_le,
        )
        previous = request.previous_client_machine_id.bytes_le
    except AttributeError as exc:
        raise KmsMalformed(f"cannot build base request: {exc}") from exc
    return _BASE_REQUEST.pack(
        0,
        request.version,
        request.is_client_vm,
        request.license_status,
        request.grace_time_min,
        *guids,
        request.required_client_count,
        request.request_time,
        previous,
        name,
    )


def parse_v4_request(data: bytes) -> tuple[bytes, bytes]:
    """Split a V4 request into its raw base request and MAC (spec 4.3); excess is ignored."""
    base, mac = _V4_REQUEST.unpack(data)
    return base, mac


def build_v4_request(base: bytes, mac: bytes) -> bytes:
    """Join a raw base request and its MAC into a V4 request (spec 4.3)."""
    return _V4_REQUEST.pack(base, mac)


def parse_envelope(data: bytes) -> Envelope:
    """Split a V5/V6 message into version, IV and ciphertext (spec 4.4, 4.7, 4.8)."""
    fields = _ENVELOPE.parse(data)
    return Envelope(fields["major"], fields["minor"], fields["iv"], fields["ciphertext"])


def build_envelope(envelope: Envelope) -> bytes:
    """Join version, IV and ciphertext into a V5/V6 message."""
    fields = {
        "minor": envelope.minor,
        "major": envelope.major,
        "iv": envelope.iv,
        "ciphertext": envelope.ciphertext,
    }
    return _ENVELOPE.build(fields)


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
    fields, size = _BASE_RESPONSE.read(data)
    response = KmsResponse(
        version=_protocol_version(fields["major"], fields["minor"]),
        epid=_decode_epid(fields["epid"]),
        client_machine_id=uuid.UUID(bytes_le=fields["client_machine_id"]),
        response_time=fields["response_time"],
        current_client_count=fields["current_client_count"],
        activation_interval_min=fields["activation_interval"],
        renewal_interval_min=fields["renewal_interval"],
    )
    return response, size


def build_response(response: KmsResponse) -> bytes:
    """Build a base response (spec 4.5); PIDSize is computed from the ePID."""
    try:
        cmid = response.client_machine_id.bytes_le
    except AttributeError as exc:
        raise KmsMalformed(f"cannot build base response: {exc}") from exc
    fields = {
        "minor": 0,
        "major": response.version,
        "epid": _encode_epid(response.epid),
        "client_machine_id": cmid,
        "response_time": response.response_time,
        "current_client_count": response.current_client_count,
        "activation_interval": response.activation_interval_min,
        "renewal_interval": response.renewal_interval_min,
    }
    return _BASE_RESPONSE.build(fields)


def parse_tail(data: bytes, version: ProtocolVersion) -> ResponseTail:
    """Parse the V5 or V6 tail that follows the base response (spec 4.7, 4.8)."""
    if version == ProtocolVersion.V5:
        return ResponseTail(*_V5_TAIL.unpack(data))
    return ResponseTail(*_V6_TAIL.unpack(data))


def build_tail(tail: ResponseTail) -> bytes:
    """Build a V5 tail, or a V6 one when ``hwid`` and ``xored_ivs`` are set."""
    if tail.hwid is None or tail.xored_ivs is None:
        return _V5_TAIL.pack(tail.random_xored_ivs, tail.hash)
    return _V6_TAIL.pack(tail.random_xored_ivs, tail.hash, tail.hwid, tail.xored_ivs)
