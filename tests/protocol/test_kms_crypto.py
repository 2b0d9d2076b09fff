"""KMS message crypto: spec 5.3/5.8 known answers, host errors, client checks, properties."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st
from kms_strategies import answers, blocks, requests
from kms_vectors import fixed_rng, h, spec_request, spec_response, spec_vectors

from protocol.errors import (
    KmsError,
    KmsIntegrityError,
    KmsMalformed,
    ResponseVerificationError,
    UnsupportedVersion,
)
from protocol.kms import (
    KmsRequest,
    KmsResponse,
    PendingRequest,
    ProtocolVersion,
    _primitives,
    build_request,
    codec,
    open_request,
    open_response,
    peek_version,
    seal_response,
    v4_mac,
)

V4, V5, V6 = ProtocolVersion.V4, ProtocolVersion.V5, ProtocolVersion.V6
EXCHANGE = spec_vectors()["exchange"]
HWID = h(EXCHANGE["hwid"])
CLIENT_IV = h(EXCHANGE["client_iv"])
SERVER_RANDOM = h(EXCHANGE["server_random"])
V6_RESPONSE_IV = h(EXCHANGE["v6"]["response_iv"])
ALL_VERSIONS = pytest.mark.parametrize("version", [V4, V5, V6], ids=["v4", "v5", "v6"])
ENCRYPTED_VERSIONS = pytest.mark.parametrize("version", [V5, V6], ids=["v5", "v6"])


def vector(version: ProtocolVersion) -> dict[str, str]:
    entry: dict[str, str] = EXCHANGE[f"v{version.value}"]
    return entry


def server_rng() -> Callable[[int], bytes]:
    """The fixed server randoms of spec 5.8: R, then (V6) the wire response IV S."""
    return fixed_rng(SERVER_RANDOM, V6_RESPONSE_IV)


# --- spec 5.3 and 5.8 known answers ----------------------------------------------------------


@pytest.mark.parametrize("case", spec_vectors()["v4_mac"], ids=["36-bytes", "32-bytes"])
def test_v4_mac_vectors(case: dict[str, str]) -> None:
    assert v4_mac(h(case["message"])) == h(case["mac"])


@ALL_VERSIONS
def test_spec_request_opens(version: ProtocolVersion) -> None:
    opened = open_request(h(vector(version)["request"]))
    assert opened.request == spec_request(version)
    assert opened.version == version
    if version == V4:
        assert (opened.request_iv, opened.decrypted_iv) == (None, None)
    else:
        assert opened.request_iv == CLIENT_IV
        assert opened.decrypted_iv == h(vector(version)["decrypted_request_iv"])


@ENCRYPTED_VERSIONS
def test_decrypted_base_is_the_v4_base_but_for_the_version(version: ProtocolVersion) -> None:
    wire = h(vector(version)["request"])
    iv, ciphertext = wire[4:20], wire[20:]
    if version == V5:  # plain AES: decrypt with cryptography, independently of our code
        decryptor = Cipher(
            algorithms.AES(h(spec_vectors()["keys"]["k5"])), modes.CBC(iv)
        ).decryptor()
        plaintext = decryptor.update(ciphertext) + decryptor.finalize()
    else:
        plaintext = _primitives.V6_CIPHER.cbc_decrypt(iv, ciphertext)
    v4_base = h(EXCHANGE["v4"]["request"])[:236]
    assert plaintext[:2] == v4_base[:2]
    assert int.from_bytes(plaintext[2:4], "little") == version
    assert plaintext[4:236] == v4_base[4:]
    assert plaintext[236:] == b"\x04" * 4


@ALL_VERSIONS
def test_build_request_reproduces_spec_request(version: ProtocolVersion) -> None:
    pending = build_request(spec_request(version), rng=fixed_rng(CLIENT_IV))
    assert pending.wire == h(vector(version)["request"])
    if version != V4:
        assert pending.decrypted_iv == h(vector(version)["decrypted_request_iv"])


@ALL_VERSIONS
def test_seal_response_reproduces_spec_response(version: ProtocolVersion) -> None:
    opened = open_request(h(vector(version)["request"]))
    sealed = seal_response(opened, spec_response(version), hwid=HWID, rng=server_rng())
    assert sealed == h(vector(version)["response"])


@ALL_VERSIONS
def test_open_response_accepts_spec_response(version: ProtocolVersion) -> None:
    pending = build_request(spec_request(version), rng=fixed_rng(CLIENT_IV))
    verified = open_response(h(vector(version)["response"]), pending)
    assert verified.response == spec_response(version)
    assert verified.hwid == (HWID if version == V6 else None)


def test_v6_intermediate_values() -> None:
    v6 = vector(V6)
    time = EXCHANGE["request"]["request_time"]
    assert time // _primitives._C1 == v6["time_slot_index"]
    slot = ((time // _primitives._C1) * _primitives._C2 + _primitives._C3) % 2**64
    slot_bytes = slot.to_bytes(8, "little")
    assert slot_bytes == h(v6["time_slot_u64le"])
    assert hashlib.sha256(slot_bytes).digest() == h(v6["time_slot_sha256"])
    assert _primitives.v6_hmac_key(time) == h(v6["hmac_key"])
    assert hashlib.sha256(SERVER_RANDOM).digest() == h(EXCHANGE["server_random_sha256"])
    # S = E_K6(r), so the HMAC's Ds is r.
    r = h(v6["decrypted_response_iv"])
    assert _primitives.V6_CIPHER.decrypt_block(V6_RESPONSE_IV) == r
    payload = _primitives.strip_pkcs7(
        _primitives.V6_CIPHER.cbc_decrypt(V6_RESPONSE_IV, h(v6["response"])[20:])
    )
    assert payload is not None
    full = hmac.digest(h(v6["hmac_key"]), r + payload[:-16], "sha256")
    assert full == h(v6["hmac_sha256"])
    assert payload[-16:] == full[16:] == h(v6["hmac_field"])
    assert payload[-32:-16] == h(v6["decrypted_request_iv"])  # XoredIVs is Dc


# --- host side: open_request errors, seal_response programming errors ------------------------


@pytest.mark.parametrize(
    "version_word", ["00000700", "01000400", "01000600", "00000300", "ffffffff"]
)
def test_unsupported_versions(version_word: str) -> None:
    data = h(version_word) + h(EXCHANGE["v6"]["request"])[4:]
    with pytest.raises(UnsupportedVersion):
        open_request(data)


@ALL_VERSIONS
@pytest.mark.parametrize("cut", [1, 16, 100])
def test_truncated_requests_are_malformed(version: ProtocolVersion, cut: int) -> None:
    with pytest.raises(KmsMalformed):
        open_request(h(vector(version)["request"])[:-cut])


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x06"])
def test_no_version_word(data: bytes) -> None:
    with pytest.raises(KmsMalformed):
        peek_version(data)
    with pytest.raises(KmsMalformed):
        open_request(data)


@ALL_VERSIONS
def test_excess_bytes_are_ignored(version: ProtocolVersion) -> None:
    wire = h(vector(version)["request"])
    assert open_request(wire + b"\xa5" * 37) == open_request(wire)


def test_v4_mac_mismatch() -> None:
    wire = bytearray(h(EXCHANGE["v4"]["request"]))
    wire[-1] ^= 1
    with pytest.raises(KmsIntegrityError):
        open_request(bytes(wire))
    assert open_request(bytes(wire), verify_v4_mac=False).request == spec_request(V4)


@ENCRYPTED_VERSIONS
@pytest.mark.parametrize(
    "padding",
    [
        pytest.param(b"\x04\x04\x04\x05", id="unequal-pad-bytes"),
        pytest.param(b"\x00\x00\x00\x00", id="pad-zero"),
        pytest.param(b"\x04\x04\x04\x11", id="pad-17"),
    ],
)
def test_bad_request_padding(version: ProtocolVersion, padding: bytes) -> None:
    base = codec.build_request(spec_request(version))
    ciphertext = _primitives.cipher_for(version).cbc_encrypt(CLIENT_IV, base + padding)
    with pytest.raises(KmsIntegrityError):
        open_request(h(vector(version)["request"])[:20] + ciphertext)


@ENCRYPTED_VERSIONS
def test_valid_padding_leaving_a_short_base_is_malformed(version: ProtocolVersion) -> None:
    plaintext = h(EXCHANGE["v4"]["request"])[:224] + b"\x10" * 16
    data = h(vector(version)["request"])[:20] + _primitives.cipher_for(version).cbc_encrypt(
        CLIENT_IV, plaintext
    )
    with pytest.raises(KmsMalformed):
        open_request(data)


@pytest.mark.parametrize(
    ("outer", "inner"), [(V5, V6), (V6, V5), (V6, V4), (V5, V4)], ids=lambda v: f"v{v.value}"
)
def test_inner_version_must_equal_outer(outer: ProtocolVersion, inner: ProtocolVersion) -> None:
    data = _primitives.seal_envelope(outer, CLIENT_IV, codec.build_request(spec_request(inner)))
    with pytest.raises(KmsMalformed, match="inner version"):
        open_request(data)


@pytest.mark.parametrize("hwid", [b"", b"1234567", b"123456789"])
def test_seal_rejects_wrong_hwid_length(hwid: bytes) -> None:
    opened = open_request(h(EXCHANGE["v6"]["request"]))
    with pytest.raises(ValueError, match="HwId"):
        seal_response(opened, spec_response(V6), hwid=hwid, rng=server_rng())


def test_v6_response_iv_is_redrawn_when_it_equals_the_request_iv() -> None:
    opened = open_request(h(EXCHANGE["v6"]["request"]))
    rng = fixed_rng(SERVER_RANDOM, CLIENT_IV, V6_RESPONSE_IV)
    assert seal_response(opened, spec_response(V6), hwid=HWID, rng=rng) == h(
        EXCHANGE["v6"]["response"]
    )


def test_rng_that_only_repeats_the_request_iv_is_a_programming_error() -> None:
    opened = open_request(h(EXCHANGE["v6"]["request"]))
    rng = fixed_rng(SERVER_RANDOM, *[CLIENT_IV] * 8)
    with pytest.raises(ValueError, match="request IV"):
        seal_response(opened, spec_response(V6), hwid=HWID, rng=rng)


def test_rng_returning_a_wrong_length_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="rng"):
        build_request(spec_request(V6), rng=lambda size: bytes(size - 1))


def test_opened_encrypted_request_without_ivs_is_a_programming_error() -> None:
    opened = replace(open_request(h(EXCHANGE["v5"]["request"])), decrypted_iv=None)
    with pytest.raises(ValueError, match="IV"):
        seal_response(opened, spec_response(V5), hwid=HWID, rng=server_rng())


# --- client side: every check of spec 5.7 -----------------------------------------------------


def pending(version: ProtocolVersion) -> PendingRequest:
    return build_request(spec_request(version), rng=fixed_rng(CLIENT_IV))


def sealed(request_version: ProtocolVersion, /, **changes: object) -> bytes:
    """The spec 5.8 response, with changes to the base response fields."""
    response = replace(spec_response(request_version), **changes)
    opened = open_request(pending(request_version).wire)
    return seal_response(opened, response, hwid=HWID, rng=server_rng())


def payload_of(version: ProtocolVersion, wire: bytes) -> bytes:
    plaintext = _primitives.cipher_for(version).cbc_decrypt(wire[4:20], wire[20:])
    payload = _primitives.strip_pkcs7(plaintext)
    assert payload is not None
    return payload


def resealed_v6(body: bytes, *, response_iv: bytes = V6_RESPONSE_IV, slot_shift: int = 0) -> bytes:
    """A V6 response around ``body`` with a valid HMAC (what a host that computes it would send)."""
    key = _primitives.v6_hmac_key(EXCHANGE["request"]["request_time"], slot_shift)
    mac = _primitives.v6_hmac(key, _primitives.V6_CIPHER.decrypt_block(response_iv), body)
    return _primitives.seal_envelope(V6, response_iv, body + mac)


def with_bytes(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def v4_with_base(base: bytes) -> bytes:
    return base + v4_mac(base)


V4_BASE = h(EXCHANGE["v4"]["response"])[:-16]
V5_PAYLOAD = payload_of(V5, h(EXCHANGE["v5"]["response"]))
V6_PAYLOAD = payload_of(V6, h(EXCHANGE["v6"]["response"]))
V6_BODY, V6_MAC = V6_PAYLOAD[:-16], V6_PAYLOAD[-16:]
EPID_END = 8 + 100  # PIDSize is 100 in spec 5.8
TAIL = EPID_END + 36  # RandomXoredIVs, then Hash, then (V6) HwId and XoredIVs

CLIENT_CHECK_CASES = [
    # (id, version, response bytes, expected check)
    ("v4-too-short", V4, b"\x00\x00\x04", "length"),
    ("v4-mac", V4, h(EXCHANGE["v4"]["response"])[:-1] + b"\x00", "mac"),
    ("v4-truncated", V4, h(EXCHANGE["v4"]["response"])[:-1], "mac"),
    ("v4-trailing-byte-maced", V4, v4_with_base(V4_BASE + b"\x00"), "length"),
    ("v4-version", V4, v4_with_base(with_bytes(V4_BASE, 2, b"\x05")), "version"),
    ("v4-pidsize-over-128", V4, v4_with_base(with_bytes(V4_BASE, 4, b"\x82")), "epid"),
    ("v4-epid-nul-inside", V4, v4_with_base(with_bytes(V4_BASE, 20, b"\x00\x00")), "epid"),
    (
        "v4-epid-not-terminated",
        V4,
        v4_with_base(with_bytes(V4_BASE, EPID_END - 2, b"1\x00")),
        "epid",
    ),
    ("v4-epid-not-ascii", V4, sealed(V4, epid="\u00e9" * 10), "epid"),
    ("v4-cmid", V4, sealed(V4, client_machine_id=uuid.UUID(int=1)), "client_machine_id"),
    ("v4-time", V4, sealed(V4, response_time=1), "response_time"),
    ("v5-outer-version", V5, h(EXCHANGE["v6"]["response"]), "version"),
    ("v5-inner-version", V5, sealed(V5, version=V6), "version"),
    ("v5-too-short", V5, h(EXCHANGE["v5"]["response"])[:19], "length"),
    ("v5-no-ciphertext", V5, h(EXCHANGE["v5"]["response"])[:20], "length"),
    ("v5-partial-block", V5, h(EXCHANGE["v5"]["response"])[:-1], "length"),
    (
        "v5-bad-padding",
        V5,
        h(EXCHANGE["v5"]["response"])[:20]
        + _primitives.V5_CIPHER.cbc_encrypt(CLIENT_IV, V5_PAYLOAD + b"\x0f" * 15 + b"\x10"),
        "padding",
    ),
    (
        "v5-payload-too-long",
        V5,
        _primitives.seal_envelope(V5, CLIENT_IV, V5_PAYLOAD + b"\x00"),
        "length",
    ),
    ("v5-hash", V5, _primitives.seal_envelope(V5, CLIENT_IV, V5_PAYLOAD[:-1] + b"\x00"), "hash"),
    (
        "v5-response-iv-differs",
        V5,
        _primitives.seal_envelope(V5, V6_RESPONSE_IV, V5_PAYLOAD),
        "response_iv",
    ),
    ("v5-epid-not-ascii", V5, sealed(V5, epid="\x7f"), "epid"),
    ("v5-cmid", V5, sealed(V5, client_machine_id=uuid.UUID(int=1)), "client_machine_id"),
    ("v5-time", V5, sealed(V5, response_time=1), "response_time"),
    ("v6-inner-version", V6, sealed(V6, version=V5), "version"),
    ("v6-hmac", V6, _primitives.seal_envelope(V6, V6_RESPONSE_IV, V6_BODY + bytes(16)), "hmac"),
    ("v6-body-too-long", V6, resealed_v6(V6_BODY + b"\x00"), "length"),
    ("v6-hash", V6, resealed_v6(with_bytes(V6_BODY, TAIL + 16, b"\x00")), "hash"),
    (
        "v6-response-iv-is-request-iv",
        V6,
        resealed_v6(V6_BODY, response_iv=CLIENT_IV),
        "response_iv",
    ),
    ("v6-xored-ivs", V6, resealed_v6(with_bytes(V6_BODY, TAIL + 56, b"\x00" * 16)), "xored_ivs"),
    ("v6-hmac-slot-minus-2c1", V6, resealed_v6(V6_BODY, slot_shift=-2), "hmac"),
    ("v6-hmac-slot-plus-2c1", V6, resealed_v6(V6_BODY, slot_shift=2), "hmac"),
    (
        "v6-hwid-changed",
        V6,
        _primitives.seal_envelope(
            V6, V6_RESPONSE_IV, with_bytes(V6_BODY, TAIL + 48, b"CHANGED!") + V6_MAC
        ),
        "hmac",
    ),
    ("v6-cmid", V6, sealed(V6, client_machine_id=uuid.UUID(int=1)), "client_machine_id"),
    ("v6-time", V6, sealed(V6, response_time=1), "response_time"),
]


@pytest.mark.parametrize(
    ("version", "data", "check"),
    [
        pytest.param(version, data, check, id=name)
        for name, version, data, check in CLIENT_CHECK_CASES
    ],
)
def test_client_checks(version: ProtocolVersion, data: bytes, check: str) -> None:
    with pytest.raises(ResponseVerificationError) as info:
        open_response(data, pending(version))
    assert info.value.check == check


@pytest.mark.parametrize("slot_shift", [-1, 0, 1])
def test_hmac_with_slot_value_shifted_by_one_c1_is_accepted(slot_shift: int) -> None:
    # vlmcsd's client tries slot + k * C1 for k in -1, 0, +1 (spec 5.6; its CreateV6Hmac).
    verified = open_response(resealed_v6(V6_BODY, slot_shift=slot_shift), pending(V6))
    assert verified.response == spec_response(V6)


def test_pending_encrypted_request_without_ivs_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="IV"):
        open_response(h(EXCHANGE["v6"]["response"]), replace(pending(V6), request_iv=None))


# --- properties (architecture 4.11, item 4) ---------------------------------------------------


@given(request=requests(), iv=blocks)
def test_build_then_open_request_round_trips(request: KmsRequest, iv: bytes) -> None:
    sent = build_request(request, rng=fixed_rng(iv))
    opened = open_request(sent.wire)
    assert opened.request == sent.request
    assert opened.version == sent.request.version
    assert (opened.request_iv, opened.decrypted_iv) == (sent.request_iv, sent.decrypted_iv)


def _exchange(data: st.DataObject) -> tuple[PendingRequest, KmsResponse, bytes, bytes]:
    request = data.draw(requests(), label="request")
    response = data.draw(answers(request), label="response")
    iv, salt, response_iv, hwid = (data.draw(blocks) for _ in range(4))
    sent = build_request(request, rng=fixed_rng(iv))
    fallback_iv = bytes(byte ^ 0xFF for byte in iv)  # used only if response_iv == iv
    rng = fixed_rng(salt, response_iv, fallback_iv)
    wire = seal_response(open_request(sent.wire), response, hwid=hwid[:8], rng=rng)
    return sent, response, hwid[:8], wire


@given(st.data())
def test_seal_then_open_response_round_trips(data: st.DataObject) -> None:
    sent, response, hwid, wire = _exchange(data)
    verified = open_response(wire, sent)
    assert verified.response == response
    assert verified.hwid == (hwid if response.version == V6 else None)


@given(st.data())
def test_any_single_bit_flip_of_a_response_is_rejected(data: st.DataObject) -> None:
    sent, _, _, wire = _exchange(data)
    bit = data.draw(st.integers(0, len(wire) * 8 - 1), label="bit")
    flipped = bytearray(wire)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ResponseVerificationError):
        open_response(bytes(flipped), sent)


VERSION_WORDS = st.sampled_from([b"\x00\x00\x04\x00", b"\x00\x00\x05\x00", b"\x00\x00\x06\x00"])
fuzzed_requests = (
    st.binary(max_size=300)
    | st.builds(bytes.__add__, VERSION_WORDS, st.binary(min_size=240, max_size=300))
    | st.builds(
        _primitives.seal_envelope,
        st.sampled_from([V5, V6]),
        blocks,
        st.binary(min_size=220, max_size=250),
    )
)


@given(data=fuzzed_requests, verify_mac=st.booleans())
def test_open_request_raises_only_kms_errors(data: bytes, verify_mac: bool) -> None:
    with contextlib.suppress(KmsError):
        open_request(data, verify_v4_mac=verify_mac)


@given(data=st.binary(max_size=300), version=st.sampled_from([V4, V5, V6]))
def test_open_response_raises_only_verification_errors(
    data: bytes, version: ProtocolVersion
) -> None:
    with contextlib.suppress(ResponseVerificationError):
        open_response(data, pending(version))
