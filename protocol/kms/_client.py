"""Building requests and verifying responses: the client side of the KMS message layer.

Used by the test client and tools to judge a host. :func:`open_response` applies every check
a strict client makes (spec 5.7, taken from vlmcsd's client, which mirrors Microsoft's) and
names the failed one in :attr:`ResponseVerificationError.check`. Public through
:mod:`protocol.kms.crypto`.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from protocol.errors import KmsMalformed, ResponseVerificationError
from protocol.kms import codec
from protocol.kms._primitives import (
    BLOCK_SIZE,
    ZERO_BLOCK,
    Rng,
    cipher_for,
    draw_block,
    require_ivs,
    seal_envelope,
    strip_pkcs7,
    v4_mac,
    v6_hmac,
    v6_hmac_key,
    xor_blocks,
)
from protocol.kms.messages import KmsRequest, KmsResponse, ProtocolVersion

__all__ = ["PendingRequest", "VerifiedResponse", "build_request", "open_response"]

_HMAC_SIZE: Final = 16
_TAIL_SIZE: Final = {ProtocolVersion.V5: 48, ProtocolVersion.V6: 72}  # spec 4.7, 4.8


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A request a client has sent and the values it needs to verify the reply (spec 5.7).

    ``request_iv`` is IVc and ``decrypted_iv`` is Dc = D_K(IVc) (V5/V6 only).
    """

    request: KmsRequest
    wire: bytes
    request_iv: bytes | None
    decrypted_iv: bytes | None


@dataclass(frozen=True, slots=True)
class VerifiedResponse:
    """A host's response that passed every client check; ``hwid`` is set for V6 only."""

    response: KmsResponse
    hwid: bytes | None


def build_request(request: KmsRequest, *, rng: Rng) -> PendingRequest:
    """Build a request: MAC'd plaintext (V4) or CBC under a fresh IVc (V5/V6; spec 4.3, 4.4)."""
    base = codec.build_request(request)
    if request.version == ProtocolVersion.V4:
        return PendingRequest(request, codec.build_v4_request(base, v4_mac(base)), None, None)
    iv = draw_block(rng)
    decrypted_iv = cipher_for(request.version).decrypt_block(iv)
    return PendingRequest(request, seal_envelope(request.version, iv, base), iv, decrypted_iv)


def _check(passed: bool, check: str, message: str) -> None:
    if not passed:
        raise ResponseVerificationError(message, check=check)


def open_response(data: bytes, pending: PendingRequest) -> VerifiedResponse:
    """Verify and decode a host's response with every check of spec 5.7.

    Each failure raises :class:`ResponseVerificationError` whose ``check`` is one of
    ``length``, ``version``, ``padding``, ``mac``, ``epid`` (PIDSize and ePID layout),
    ``client_machine_id``, ``response_time``, ``hash``, ``response_iv``, ``xored_ivs`` or
    ``hmac``. The client-count threshold is left to the caller. Beyond vlmcsd's client, the
    ePID must be printable ASCII (spec 6.1): V5 has no MAC, and this check is what exposes a
    ciphertext block garbled inside the ePID there.
    """
    _check(len(data) >= 4, "length", "response is shorter than its version word")
    _check(data[:4] == pending.wire[:4], "version", "response version differs from the request's")
    if pending.request.version == ProtocolVersion.V4:
        response, hwid = _open_v4_response(data), None
    else:
        response, hwid = _open_encrypted_response(data, pending)
    request = pending.request
    _check(
        response.client_machine_id == request.client_machine_id,
        "client_machine_id",
        "CMID not echoed",
    )
    _check(
        response.response_time == request.request_time, "response_time", "request time not echoed"
    )
    return VerifiedResponse(response, hwid)


def _parse_base_response(data: bytes) -> tuple[KmsResponse, int]:
    try:
        response, size = codec.parse_response(data)
    except KmsMalformed as exc:
        raise ResponseVerificationError(str(exc), check="epid") from exc
    _check(
        response.epid.isascii() and response.epid.isprintable(),
        "epid",
        "ePID is not printable ASCII",
    )
    return response, size


def _open_v4_response(data: bytes) -> KmsResponse:
    base, mac = data[:-BLOCK_SIZE], data[-BLOCK_SIZE:]
    _check(hmac.compare_digest(v4_mac(base), mac), "mac", "V4 response MAC does not match")
    response, size = _parse_base_response(base)
    _check(size == len(base), "length", f"V4 response should be {size + BLOCK_SIZE} bytes")
    return response


def _decrypt_response(data: bytes, version: ProtocolVersion) -> tuple[codec.Envelope, bytes, bytes]:
    """Return the envelope, Ds = D_K(response IV) and the unpadded payload (spec 5.4)."""
    try:
        envelope = codec.parse_envelope(data)
    except KmsMalformed as exc:
        raise ResponseVerificationError(str(exc), check="length") from exc
    ciphertext = envelope.ciphertext
    whole_blocks = bool(ciphertext) and not len(ciphertext) % BLOCK_SIZE
    _check(whole_blocks, "length", "ciphertext is not whole blocks")
    plaintext = cipher_for(version).cbc_decrypt(ZERO_BLOCK, envelope.iv + ciphertext)
    payload = strip_pkcs7(plaintext[BLOCK_SIZE:])
    if payload is None:
        raise ResponseVerificationError("response padding is not valid PKCS#7", check="padding")
    _check(payload[:4] == data[:4], "version", "inner response version differs from the outer one")
    return envelope, plaintext[:BLOCK_SIZE], payload


def _open_encrypted_response(
    data: bytes, pending: PendingRequest
) -> tuple[KmsResponse, bytes | None]:
    version = pending.request.version
    request_iv, decrypted_request_iv = require_ivs(
        version, pending.request_iv, pending.decrypted_iv
    )
    envelope, decrypted_response_iv, payload = _decrypt_response(data, version)
    mac_start = max(len(payload) - (_HMAC_SIZE if version == ProtocolVersion.V6 else 0), 0)
    body, mac = payload[:mac_start], payload[mac_start:]
    response, size = _parse_base_response(body)
    _check(len(body) == size + _TAIL_SIZE[version], "length", "response payload has the wrong size")
    tail = codec.parse_tail(body[size:], version)
    salt = xor_blocks(tail.random_xored_ivs, decrypted_request_iv)
    _check(
        hashlib.sha256(salt).digest() == tail.hash, "hash", "SHA256(RandomXoredIVs ^ Dc) != Hash"
    )
    if version == ProtocolVersion.V5:
        _check(envelope.iv == request_iv, "response_iv", "V5 response IV must equal the request IV")
        return response, None
    _check(
        envelope.iv != request_iv, "response_iv", "V6 response IV must differ from the request IV"
    )
    _check(tail.xored_ivs == decrypted_request_iv, "xored_ivs", "XoredIVs is not D_K6(request IV)")
    # Like vlmcsd's client, accept the slot value shifted by -C1, 0 or +C1 (spec 5.6).
    expected_macs = (
        v6_hmac(v6_hmac_key(response.response_time, shift), decrypted_response_iv, body)
        for shift in (-1, 0, 1)
    )
    passed = any(hmac.compare_digest(expected, mac) for expected in expected_macs)
    _check(passed, "hmac", "V6 HMAC does not match")
    return response, tail.hwid
