"""Many requests and replies at once: ``open_requests`` and ``seal_responses``.

The captured conversations (tests/vectors/README.md) give the expected bytes: replies sealed
in one batch must each be the response the independent host sent, whichever engine runs.
The cipher's batch operations themselves are tested per engine in ``test_cipher``.
"""

from __future__ import annotations

import pytest
from kms_vectors import CapturedCall, captured_calls, fixed_rng

from protocol.errors import KmsIntegrityError, KmsMalformed, UnsupportedVersion
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
