"""Many requests and replies at once: ``open_requests`` and ``seal_responses``.

The captured conversations (tests/vectors/README.md) give the expected bytes: replies sealed
in one batch must each be the response the independent host sent, whichever engine runs.
The cipher's batch operations themselves are tested per engine in ``test_cipher``.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kms_vectors import CapturedCall, captured_calls, fixed_rng

from protocol.errors import KmsError, KmsIntegrityError, KmsMalformed, UnsupportedVersion
from protocol.kms import ProtocolVersion, open_request, open_requests, seal_responses


def _batch(calls: list[CapturedCall]) -> tuple[list[bytes], list[bytes]]:
    """Seal every call's recorded response in one batch; return (sealed, captured)."""
    hwids = {hwid for call in calls if (hwid := call.hwid()) is not None}
    assert len(hwids) <= 1  # one host, one HwId
    randoms = [value for call in calls for value in call.server_randoms()]
    sealed = seal_responses(
        [(open_request(call.request_message), call.expected_response()) for call in calls],
        hwid=hwids.pop() if hwids else bytes(8),
        rng=fixed_rng(*randoms),
    )
    return sealed, [call.response_message for call in calls]


def _v6_hwids() -> list[bytes]:
    return sorted({h for call in captured_calls() if (h := call.hwid()) is not None}, key=bytes.hex)


@pytest.mark.parametrize("hwid", _v6_hwids(), ids=bytes.hex)
def test_mixed_batch_reproduces_every_captured_response(hwid: bytes) -> None:
    # Every V4 and V5 call with the V6 calls of one host, interleaved as they were captured.
    calls = [c for c in captured_calls() if c.version != ProtocolVersion.V6 or c.hwid() == hwid]
    sealed, captured = _batch(calls)
    assert sealed == captured


def test_batch_wider_than_one_wide_step() -> None:
    hwid = _v6_hwids()[0]
    calls = [c for c in captured_calls() if c.hwid() == hwid] * 9
    assert len(calls) > 64  # more than the interpreted engine's widest step
    sealed, captured = _batch(calls)
    assert sealed == captured


def test_empty_batch() -> None:
    assert seal_responses([], hwid=bytes(8), rng=fixed_rng()) == []


def test_batch_checks_the_hwid_first() -> None:
    (call,) = [c for c in captured_calls() if c.version == ProtocolVersion.V6][:1]
    reply = (open_request(call.request_message), call.expected_response())
    with pytest.raises(ValueError, match="HwId must be 8 bytes"):
        seal_responses([reply], hwid=bytes(7), rng=fixed_rng())


def test_one_batch_opens_every_captured_request() -> None:
    calls = captured_calls()
    opened = open_requests([call.request_message for call in calls])
    for call, result in zip(calls, opened, strict=True):
        assert not isinstance(result, Exception), call.id
        assert result.request == call.expected_request()
        assert result.version == call.version
        if call.version != ProtocolVersion.V4:
            assert result.request_iv == bytes.fromhex(call.request_kms["request_iv"])


def test_errors_stay_with_their_own_message() -> None:
    v6 = [c.request_message for c in captured_calls() if c.version == ProtocolVersion.V6][:4]
    bad_padding = v6[0][:-1] + bytes([v6[0][-1] ^ 1])
    messages = [
        v6[1],
        bad_padding,
        b"\x00\x00\x07\x00" + v6[2][4:],  # version 7.0
        v6[2][:200],  # shorter than 260 bytes
        b"\x00\x00\x05\x00" + v6[3][4:],  # V6 ciphertext under a V5 header
        v6[3],
    ]
    results = open_requests(messages)
    assert results[0] == open_request(v6[1])
    assert isinstance(results[1], KmsIntegrityError)
    assert isinstance(results[2], UnsupportedVersion)
    assert isinstance(results[3], KmsMalformed)
    assert isinstance(results[4], KmsIntegrityError | KmsMalformed)
    assert results[5] == open_request(v6[3])


def test_open_request_raises_what_the_batch_returns() -> None:
    message = next(c for c in captured_calls() if c.version == ProtocolVersion.V6).request_message
    broken = message[:-1] + bytes([message[-1] ^ 1])
    (result,) = open_requests([broken])
    with pytest.raises(KmsIntegrityError, match=str(result)):
        open_request(broken)


def test_empty_open_batch() -> None:
    assert open_requests([]) == []


CAPTURED_MESSAGES = [call.request_message for call in captured_calls()]


@st.composite
def damaged_messages(draw: st.DrawFn) -> bytes:
    """A captured request, intact or with a few bytes changed, cut short or extended."""
    message = bytearray(draw(st.sampled_from(CAPTURED_MESSAGES)))
    for _ in range(draw(st.integers(0, 3))):
        message[draw(st.integers(0, len(message) - 1))] ^= draw(st.integers(1, 255))
    cut = draw(st.integers(0, len(message)))
    return bytes(message[:cut]) + draw(st.binary(max_size=20))


@settings(max_examples=200, deadline=None)
@given(st.lists(damaged_messages() | st.binary(max_size=300), max_size=8), st.booleans())
def test_a_batch_of_any_messages_gives_what_each_alone_gives(
    messages: list[bytes], verify_mac: bool
) -> None:
    """Only KMS errors come out, returned in place, never raised; no message sways another."""
    results = open_requests(messages, verify_v4_mac=verify_mac)
    assert len(results) == len(messages)
    for message, result in zip(messages, results, strict=True):
        if isinstance(result, KmsError):
            with pytest.raises(type(result), match=re.escape(str(result))):
                open_request(message, verify_v4_mac=verify_mac)
        else:
            assert result == open_request(message, verify_v4_mac=verify_mac)
