"""The wide Rijndael against FIPS-197, the spec 5.2 vectors, ``cryptography`` and the T-tables.

Every expected block comes from the spec's vectors or from an independent implementation
(``cryptography``'s AES), except for the tweaked cipher at random inputs, which is held to
:class:`Rijndael` (itself checked against the spec's V6 vectors in ``test_rijndael``).
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st
from kms_vectors import h, spec_vectors

from protocol.kms.rijndael import Rijndael
from protocol.kms.rijndael_wide import MAX_WIDTH, WideRijndael

KEYS = spec_vectors()["keys"]
V6_TWEAKS = {int(r): int(value, 16) for r, value in KEYS["v6_round_key_tweaks"].items()}
BLOCKS = spec_vectors()["single_block"]


def wide(key: bytes, tweaks: dict[int, int] | None = None) -> WideRijndael:
    return WideRijndael(Rijndael(key, tweaks=tweaks).round_keys)


@pytest.mark.parametrize("count", [1, 2, 7])
def test_fips197_c1_in_every_block(count: int) -> None:
    vector = spec_vectors()["fips197_c1"]
    cipher = wide(h(vector["key"]))
    plain, expected = h(vector["plaintext"]), h(vector["ciphertext"])
    assert cipher.encrypt_blocks(plain * count) == expected * count
    assert cipher.decrypt_blocks(expected * count) == plain * count


@pytest.mark.parametrize(
    ("key", "tweaks", "expected"),
    [
        pytest.param("k4", None, "rijndael160_k4_encrypt", id="rijndael160-k4"),
        pytest.param("k5", None, "aes128_k5_encrypt", id="aes128-k5"),
        pytest.param("k6", V6_TWEAKS, "v6_k6_encrypt", id="tweaked-k6"),
    ],
)
def test_spec_single_block_vectors_side_by_side(
    key: str, tweaks: dict[int, int] | None, expected: str
) -> None:
    cipher = wide(h(KEYS[key]), tweaks)
    plain, ciphertext = h(BLOCKS["plaintext"]), h(BLOCKS[expected])
    # The vector's block between two other blocks: neighbours must not leak into it.
    assert cipher.encrypt_blocks(bytes(16) + plain + b"\xff" * 16)[16:32] == ciphertext
    assert cipher.decrypt_blocks(b"\xff" * 16 + ciphertext + bytes(16))[16:32] == plain


def test_spec_tweaked_decrypt_vector() -> None:
    cipher = wide(h(KEYS["k6"]), V6_TWEAKS)
    assert cipher.decrypt_blocks(h(BLOCKS["plaintext"]) * 3) == h(BLOCKS["v6_k6_decrypt"]) * 3


@given(
    key=st.binary(min_size=16, max_size=16),
    data=st.integers(1, 40).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n)),
)
def test_untweaked_nk4_is_aes128_ecb(key: bytes, data: bytes) -> None:
    # ECB: the blocks are independent, which is exactly what the wide cipher computes.
    oracle = Cipher(algorithms.AES(key), modes.ECB())
    expected = oracle.encryptor().update(data)
    cipher = wide(key)
    assert cipher.encrypt_blocks(data) == expected
    assert cipher.decrypt_blocks(expected) == data


@given(
    key=st.binary(min_size=16, max_size=16) | st.binary(min_size=20, max_size=20),
    data=st.integers(1, 40).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n)),
    tweak=st.integers(0, 0xFF),
)
def test_agrees_with_the_t_table_cipher(key: bytes, data: bytes, tweak: int) -> None:
    narrow = Rijndael(key, tweaks={4: tweak, 6: 0x09, 8: 0xE4})
    cipher = WideRijndael(narrow.round_keys)
    chunks = [data[i : i + 16] for i in range(0, len(data), 16)]
    assert cipher.encrypt_blocks(data) == b"".join(map(narrow.encrypt_block, chunks))
    assert cipher.decrypt_blocks(data) == b"".join(map(narrow.decrypt_block, chunks))


def test_more_widths_than_the_cache_holds() -> None:
    cipher = wide(h(KEYS["k6"]), V6_TWEAKS)
    plain, expected = h(BLOCKS["plaintext"]), h(BLOCKS["v6_k6_encrypt"])
    for count in range(1, 80):
        assert cipher.encrypt_blocks(plain * count) == expected * count


@pytest.mark.parametrize("size", [0, 15, 17, 40])
def test_rejects_partial_blocks(size: int) -> None:
    cipher = wide(bytes(16))
    with pytest.raises(ValueError, match="whole 16-byte blocks"):
        cipher.encrypt_blocks(bytes(size))
    with pytest.raises(ValueError, match="whole 16-byte blocks"):
        cipher.decrypt_blocks(bytes(size))


@pytest.mark.parametrize("round_keys", [(), (bytes(16),), (bytes(16), bytes(15))])
def test_rejects_bad_round_keys(round_keys: tuple[bytes, ...]) -> None:
    with pytest.raises(ValueError, match="round keys"):
        WideRijndael(round_keys)


@pytest.mark.parametrize("blocks", [0, MAX_WIDTH + 1])
def test_rejects_widths_out_of_range(blocks: int) -> None:
    with pytest.raises(ValueError, match=f"1 to {MAX_WIDTH} blocks"):
        wide(bytes(16)).width(blocks)


def test_long_inputs_go_in_bounded_steps() -> None:
    cipher = wide(h(KEYS["k6"]), V6_TWEAKS)
    plain, expected = h(BLOCKS["plaintext"]), h(BLOCKS["v6_k6_encrypt"])
    count = 3 * MAX_WIDTH + 5
    assert cipher.encrypt_blocks(plain * count) == expected * count
    assert cipher.decrypt_blocks(expected * count) == plain * count
    assert max(cipher._widths) <= MAX_WIDTH  # what the host's memory bound rests on
