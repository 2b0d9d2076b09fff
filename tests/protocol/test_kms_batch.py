"""Many replies at once: side-by-side CBC, the wide CBC decryption and ``seal_responses``.

The captured conversations (tests/vectors/README.md) give the expected bytes: replies sealed
in one batch must each be the response the independent host sent. The CBC helpers are held
to :class:`Rijndael`'s own chains, which the spec's vectors pin down (``test_rijndael``).
Sizes on both sides of the wide cipher's threshold run in every build: 2 blocks or messages
in pure Python, 32 in the compiled one.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kms_vectors import CapturedCall, captured_calls, fixed_rng

from protocol.errors import KmsIntegrityError, KmsMalformed, UnsupportedVersion
from protocol.kms import ProtocolVersion, _primitives, open_request, open_requests, seal_responses
from protocol.kms.rijndael import Rijndael

V6_CHAIN = Rijndael(
    bytes.fromhex("A94A4195E201432D9BCB460405D84A21"), tweaks={4: 0x73, 6: 0x09, 8: 0xE4}
)
SIZES = [1, 2, 3, 16, 31, 32, 33, 40, 64, 65, 130]


@pytest.mark.parametrize("blocks", SIZES)
def test_cbc_decrypt_matches_the_block_chain(blocks: int) -> None:
    iv, data = bytes(range(16)), bytes(i * 7 % 256 for i in range(16 * blocks))
    assert _primitives.V6_CIPHER.cbc_decrypt(iv, data) == V6_CHAIN.cbc_decrypt(iv, data)


@pytest.mark.parametrize(
    "counts", [[1], [16], [16, 16], [3, 1, 2], [16] * 3, [1] * 40, [16] * 9, [70, 3]]
)
def test_cbc_decrypt_many_matches_the_block_chain(counts: list[int]) -> None:
    messages = [bytes((n * 31 + i) % 256 for i in range(16 * c)) for n, c in enumerate(counts)]
    expected = [V6_CHAIN.cbc_decrypt(bytes(16), m) for m in messages]
    assert _primitives.V6_CIPHER.cbc_decrypt_many(messages) == expected


@pytest.mark.parametrize("messages", [[bytes(17)], [bytes(16), b""], [bytes(32), bytes(8)]])
def test_cbc_decrypt_many_rejects_partial_blocks(messages: list[bytes]) -> None:
    with pytest.raises(ValueError, match="whole 16-byte blocks"):
        _primitives.V6_CIPHER.cbc_decrypt_many(messages)


@given(data=st.integers(1, 40).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n)))
def test_decrypt_blocks_is_ecb(data: bytes) -> None:
    expected = b"".join(V6_CHAIN.decrypt_block(data[i : i + 16]) for i in range(0, len(data), 16))
    assert _primitives.V6_CIPHER.decrypt_blocks(data) == expected


@pytest.mark.parametrize("count", SIZES)
def test_side_by_side_encryption_matches_one_at_a_time(count: int) -> None:
    ivs = [bytes([n]) * 16 for n in range(count)]
    plaintexts = [bytes([n, 255 - n]) * 8 * 15 for n in range(count)]
    expected = [V6_CHAIN.cbc_encrypt(iv, p) for iv, p in zip(ivs, plaintexts, strict=True)]
    assert _primitives.V6_CIPHER.cbc_encrypt_many(ivs, plaintexts) == expected


@settings(max_examples=25)
@given(
    st.integers(1, 3).flatmap(
        lambda blocks: st.lists(
            st.tuples(
                st.binary(min_size=16, max_size=16),
                st.binary(min_size=16 * blocks, max_size=16 * blocks),
            ),
            min_size=1,
            max_size=36,
        )
    )
)
def test_side_by_side_encryption_property(pairs: list[tuple[bytes, bytes]]) -> None:
    ivs, plaintexts = [iv for iv, _ in pairs], [p for _, p in pairs]
    expected = [V6_CHAIN.cbc_encrypt(iv, p) for iv, p in pairs]
    assert _primitives.V6_CIPHER.cbc_encrypt_many(ivs, plaintexts) == expected


@pytest.mark.parametrize(
    ("ivs", "plaintexts", "match"),
    [
        ([bytes(16)], [bytes(16), bytes(16)], "one IV per message"),
        ([bytes(16)] * 2, [bytes(16), bytes(32)], "equal lengths"),
        ([bytes(16)] * 40, [bytes(17)] * 40, "whole 16-byte blocks"),
        ([bytes(15)] * 40, [bytes(16)] * 40, "16-byte IVs"),
    ],
)
def test_side_by_side_encryption_rejects_mismatches(
    ivs: list[bytes], plaintexts: list[bytes], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        _primitives.V6_CIPHER.cbc_encrypt_many(ivs, plaintexts)


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


def test_batch_wider_than_the_compiled_threshold() -> None:
    hwid = _v6_hwids()[0]
    calls = [c for c in captured_calls() if c.hwid() == hwid] * 5
    assert len(calls) > 32
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
