"""Opening requests and sealing responses: the host side of the KMS message layer.

:func:`open_request` dispatches on the version word (spec 4.1), checks the V4 MAC (5.5) or
decrypts the V5/V6 envelope (5.6) and keeps the IV values the reply needs;
:func:`seal_response` MACs (V4) or encrypts (V5/V6) the base response the caller decided on.
The client side (:func:`build_request`, :func:`open_response`, spec 5.7) lives in
``_client`` and is re-exported here so that the whole message crypto has one public home.

Randomness comes in through ``rng`` and nothing here reads a clock, so every known-answer
test is deterministic (architecture 4.10). Bad input raises the errors of
:mod:`protocol.errors`; ``ValueError`` is kept for programming errors (a wrong HwId length,
an ``rng`` that cannot produce a fresh IV).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from protocol.errors import KmsError, KmsIntegrityError, KmsMalformed, UnsupportedVersion
from protocol.kms import codec
from protocol.kms._client import PendingRequest, VerifiedResponse, build_request, open_response
from protocol.kms._primitives import (
    BLOCK_SIZE,
    V5_CIPHER,
    V6_CIPHER,
    ZERO_BLOCK,
    Rng,
    draw_block,
    require_ivs,
    seal_envelope,
    seal_v6_envelopes,
    strip_pkcs7,
    v4_mac,
    v6_hmac,
    v6_hmac_key,
    xor_blocks,
)
from protocol.kms.messages import KmsRequest, KmsResponse, ProtocolVersion

__all__ = [
    "OpenedRequest",
    "PendingRequest",
    "Rng",
    "VerifiedResponse",
    "build_request",
    "open_request",
    "open_requests",
    "open_response",
    "peek_version",
    "seal_response",
    "seal_responses",
    "v4_mac",
]

_SUPPORTED: Final = {(version.value, 0): version for version in ProtocolVersion}
_REQUEST_CIPHERTEXT_SIZE: Final = 240  # 236-byte base request + 4 bytes of PKCS#7 (spec 4.4)
_HWID_SIZE: Final = 8
_MAX_IV_DRAWS: Final = 8


@dataclass(frozen=True, slots=True)
class OpenedRequest:
    """A request the host has opened, with what its reply needs (spec 5.6).

    ``request_iv`` is the client's IVc and ``decrypted_iv`` is Dc = D_K(IVc) (V5/V6 only).
    """

    request: KmsRequest
    version: ProtocolVersion
    request_iv: bytes | None
    decrypted_iv: bytes | None


def peek_version(data: bytes) -> tuple[int, int]:
    """Return ``(major, minor)`` of a KMS message; :class:`KmsMalformed` if under 4 bytes."""
    return codec.parse_version(data)


def open_request(data: bytes, *, verify_v4_mac: bool = True) -> OpenedRequest:
    """Open a KMS request message (spec 4.1, 5.5, 5.6); bytes past the needed size are ignored.

    Raises :class:`UnsupportedVersion` for versions other than 4.0, 5.0 and 6.0,
    :class:`KmsMalformed` for short or inconsistent messages and :class:`KmsIntegrityError`
    for a wrong V4 MAC (when ``verify_v4_mac``) or bad V5/V6 padding.
    """
    (opened,) = open_requests((data,), verify_v4_mac=verify_v4_mac)
    if isinstance(opened, KmsError):
        raise opened
    return opened


def open_requests(
    messages: Sequence[bytes], *, verify_v4_mac: bool = True
) -> list[OpenedRequest | KmsError]:
    """:func:`open_request` of each message: the opened request, or the error it raises.

    What a batch saves is cipher work: the blocks of all its V6 requests are decrypted in
    one wide step, so a host reading many requests in one loop turn pays the wide
    cipher's fixed cost once. One message's error never affects another's result.
    """
    results: dict[int, OpenedRequest | KmsError] = {}
    v6: list[tuple[int, bytes, bytes]] = []  # index, IVc, ciphertext
    for index, data in enumerate(messages):
        try:
            major, minor = peek_version(data)
            version = _SUPPORTED.get((major, minor))
            if version is None:
                raise UnsupportedVersion(
                    f"KMS protocol version {major}.{minor} is not 4.0, 5.0 or 6.0"
                )
            if version == ProtocolVersion.V4:
                results[index] = _open_v4_request(data, verify_mac=verify_v4_mac)
                continue
            iv, ciphertext = _encrypted_parts(data, version)
            if version == ProtocolVersion.V6:
                v6.append((index, iv, ciphertext))
                continue
            plaintext = V5_CIPHER.cbc_decrypt(ZERO_BLOCK, iv + ciphertext)
            results[index] = _opened_from(plaintext, version, iv)
        except KmsError as exc:
            results[index] = exc
    if v6:
        plaintexts = V6_CIPHER.cbc_decrypt_many([iv + ciphertext for _, iv, ciphertext in v6])
        for (index, iv, _), plaintext in zip(v6, plaintexts, strict=True):
            try:
                results[index] = _opened_from(plaintext, ProtocolVersion.V6, iv)
            except KmsError as exc:
                results[index] = exc
    return [results[index] for index in range(len(messages))]


def _open_v4_request(data: bytes, *, verify_mac: bool) -> OpenedRequest:
    base, mac = codec.parse_v4_request(data)
    if verify_mac and not hmac.compare_digest(v4_mac(base), mac):
        raise KmsIntegrityError("V4 request MAC does not match")
    return OpenedRequest(codec.parse_request(base), ProtocolVersion.V4, None, None)


def _encrypted_parts(data: bytes, version: ProtocolVersion) -> tuple[bytes, bytes]:
    """IVc and the 240 bytes of ciphertext the request needs (spec 4.4)."""
    envelope = codec.parse_envelope(data)
    ciphertext = envelope.ciphertext[:_REQUEST_CIPHERTEXT_SIZE]
    if len(ciphertext) < _REQUEST_CIPHERTEXT_SIZE:
        raise KmsMalformed(f"KMS v{version.value} request is shorter than 260 bytes")
    return envelope.iv, ciphertext


def _opened_from(plaintext: bytes, version: ProtocolVersion, iv: bytes) -> OpenedRequest:
    """Spec 5.4 view B: CBC with a zero IV over IVc || C yielded ``plaintext`` = Dc || P."""
    base = strip_pkcs7(plaintext[BLOCK_SIZE:])
    if base is None:
        raise KmsIntegrityError("request padding is not valid PKCS#7")
    request = codec.parse_request(base)
    if request.version != version:
        raise KmsMalformed(
            f"inner version {request.version.value} differs from outer {version.value}"
        )
    return OpenedRequest(request, version, iv, plaintext[:BLOCK_SIZE])


def seal_response(opened: OpenedRequest, response: KmsResponse, *, hwid: bytes, rng: Rng) -> bytes:
    """Build the response message for an opened request (spec 4.6-4.8, 5.5, 5.6).

    V5 draws R; V6 draws R and then the wire response IV S (redrawn while it equals the
    request IV) and MACs with Ds = D_K6(S). ``hwid`` (8 bytes) is sent in V6 only.
    """
    (message,) = seal_responses(((opened, response),), hwid=hwid, rng=rng)
    return message


def seal_responses(
    replies: Sequence[tuple[OpenedRequest, KmsResponse]], *, hwid: bytes, rng: Rng
) -> list[bytes]:
    """:func:`seal_response` of each pair, in order, drawing from ``rng`` pair after pair.

    The messages are those that one call each would give with the same draws. What a batch
    saves is cipher work: the V6 replies' Ds values are one wide decryption and their
    envelopes are encrypted side by side, which a host answering many clients at
    once can use and a client with one request cannot.
    """
    if len(hwid) != _HWID_SIZE:
        raise ValueError(f"HwId must be {_HWID_SIZE} bytes, not {len(hwid)}")
    sealed = [b""] * len(replies)
    v6: list[tuple[int, bytes, bytes, int]] = []  # index, S, body, response time
    for index, (opened, response) in enumerate(replies):
        base = codec.build_response(response)
        if opened.version == ProtocolVersion.V4:
            sealed[index] = base + v4_mac(base)
            continue
        request_iv, decrypted_iv = require_ivs(
            opened.version, opened.request_iv, opened.decrypted_iv
        )
        salt = draw_block(rng)
        random_xored_ivs, salt_hash = xor_blocks(salt, decrypted_iv), hashlib.sha256(salt).digest()
        if opened.version == ProtocolVersion.V5:
            tail = codec.ResponseTail(random_xored_ivs, salt_hash)
            body = base + codec.build_tail(tail)
            sealed[index] = seal_envelope(ProtocolVersion.V5, request_iv, body)
            continue
        response_iv = _draw_response_iv(rng, request_iv)
        tail = codec.ResponseTail(random_xored_ivs, salt_hash, hwid, decrypted_iv)
        v6.append((index, response_iv, base + codec.build_tail(tail), response.response_time))
    if v6:
        ivs = [iv for _, iv, _, _ in v6]
        ds = V6_CIPHER.decrypt_blocks(b"".join(ivs))
        payloads = [
            body + v6_hmac(v6_hmac_key(time), ds[BLOCK_SIZE * n : BLOCK_SIZE * (n + 1)], body)
            for n, (_, _, body, time) in enumerate(v6)
        ]
        for (index, _, _, _), message in zip(v6, seal_v6_envelopes(ivs, payloads), strict=True):
            sealed[index] = message
    return sealed


def _draw_response_iv(rng: Rng, request_iv: bytes) -> bytes:
    """A V6 response IV must differ from the request IV (spec 10.13)."""
    for _ in range(_MAX_IV_DRAWS):
        response_iv = draw_block(rng)
        if response_iv != request_iv:
            return response_iv
    raise ValueError(f"rng returned the request IV {_MAX_IV_DRAWS} times")
