"""Every request/response pair captured from vlmcsd and py-kms, opened, rebuilt and tampered.

The captures (tests/vectors/README.md) come from independent implementations: the vlmcs and
py-kms clients against vlmcsd and py-kms servers, with the servers' random values recorded,
so each response must be reproduced byte for byte from the opened request, the recorded
response fields and those randoms.
"""

from __future__ import annotations

import pytest
from kms_vectors import CapturedCall, captured_calls, fixed_rng

from protocol.errors import ResponseVerificationError
from protocol.kms import (
    PendingRequest,
    ProtocolVersion,
    _primitives,
    build_request,
    open_request,
    open_response,
    seal_response,
)

CALLS = [pytest.param(call, id=call.id) for call in captured_calls()]
ENCRYPTED_CALLS = [param for param in CALLS if param.values[0].version != ProtocolVersion.V4]
DEFAULT_HWID = bytes(8)  # unused by V4/V5 responses, which carry no HwId


def pending_for(call: CapturedCall) -> PendingRequest:
    """What the capturing client held after sending its request."""
    opened = open_request(call.request_message)
    return PendingRequest(
        opened.request, call.request_message, opened.request_iv, opened.decrypted_iv
    )


def test_every_conversation_was_loaded() -> None:
    assert len(captured_calls()) == 60
    assert {call.version for call in captured_calls()} == set(ProtocolVersion)


@pytest.mark.parametrize("call", CALLS)
def test_request_opens_to_recorded_fields(call: CapturedCall) -> None:
    opened = open_request(call.request_message)
    assert opened.request == call.expected_request()
    assert opened.version == call.version
    if call.version != ProtocolVersion.V4:
        assert opened.request_iv == bytes.fromhex(call.request_kms["request_iv"])


@pytest.mark.parametrize("call", CALLS)
def test_build_request_reproduces_captured_request(call: CapturedCall) -> None:
    iv = call.request_message[4:20]  # the client's IVc (unused for V4)
    assert build_request(call.expected_request(), rng=fixed_rng(iv)).wire == call.request_message


@pytest.mark.parametrize("call", CALLS)
def test_response_is_rebuilt_byte_for_byte(call: CapturedCall) -> None:
    opened = open_request(call.request_message)
    sealed = seal_response(
        opened,
        call.expected_response(),
        hwid=call.hwid() or DEFAULT_HWID,
        rng=fixed_rng(*call.server_randoms()),
    )
    assert sealed == call.response_message


@pytest.mark.parametrize("call", CALLS)
def test_open_response_accepts_capture(call: CapturedCall) -> None:
    verified = open_response(call.response_message, pending_for(call))
    assert verified.response == call.expected_response()
    assert verified.hwid == call.hwid()


@pytest.mark.parametrize("call", CALLS)
def test_every_single_byte_change_is_rejected(call: CapturedCall) -> None:
    # Every byte: the version word, the ePID, CMID and time (in the clear for V4, inside the
    # ciphertext for V5/V6), the V4 MAC, and every IV and ciphertext byte of V5/V6.
    sent = pending_for(call)
    accepted = []
    for offset in range(len(call.response_message)):
        tampered = bytearray(call.response_message)
        tampered[offset] ^= 0x01
        try:
            open_response(bytes(tampered), sent)
        except ResponseVerificationError:
            continue
        accepted.append(offset)
    assert accepted == []


def _regions(call: CapturedCall) -> dict[str, range]:
    """Plaintext field ranges within the base response and payload (spec 4.5, 4.6, 4.8)."""
    pid_size = len(call.expected_response().epid) * 2 + 2
    regions = {
        "epid": range(8, 8 + pid_size),
        "cmid": range(8 + pid_size, 24 + pid_size),
        "time": range(24 + pid_size, 32 + pid_size),
    }
    if call.version == ProtocolVersion.V4:
        regions["mac"] = range(44 + pid_size, 60 + pid_size)
    if call.version == ProtocolVersion.V6:
        regions["hwid"] = range(92 + pid_size, 100 + pid_size)
        regions["hmac"] = range(116 + pid_size, 132 + pid_size)
    return regions


def _with_plaintext_change(call: CapturedCall, offset: int) -> bytes:
    """The response with one payload byte XORed with 1 and then correctly re-encrypted."""
    message = call.response_message
    if call.version == ProtocolVersion.V4:
        return message[:offset] + bytes([message[offset] ^ 1]) + message[offset + 1 :]
    cipher = _primitives.cipher_for(call.version)
    iv = message[4:20]
    payload = _primitives.strip_pkcs7(cipher.cbc_decrypt(iv, message[20:]))
    assert payload is not None
    changed = payload[:offset] + bytes([payload[offset] ^ 1]) + payload[offset + 1 :]
    return _primitives.seal_envelope(call.version, iv, changed)


@pytest.mark.parametrize("call", CALLS)
def test_plaintext_field_changes_are_rejected(call: CapturedCall) -> None:
    # V5 has no MAC: a re-encrypted ePID change is undetectable (see the next test), so only
    # the echoed CMID and time protect its base response.
    sent = pending_for(call)
    regions = _regions(call)
    if call.version == ProtocolVersion.V5:
        del regions["epid"]
    accepted = []
    for name, region in regions.items():
        for offset in region:
            try:
                open_response(_with_plaintext_change(call, offset), sent)
            except ResponseVerificationError:
                continue
            accepted.append((name, offset))
    assert accepted == []


@pytest.mark.parametrize(
    "call", [param for param in ENCRYPTED_CALLS if param.values[0].version == ProtocolVersion.V5]
)
def test_v5_cannot_protect_the_epid(call: CapturedCall) -> None:
    # Pins a property of the protocol, not of our code: V5 carries no MAC over the base
    # response, so a host (or anyone holding the public key) can change the ePID freely.
    first_digit = _regions(call)["epid"].start
    verified = open_response(_with_plaintext_change(call, first_digit), pending_for(call))
    assert verified.response.epid != call.expected_response().epid
