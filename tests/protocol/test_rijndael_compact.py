"""The compact Rijndael (the compiled build's cipher) against the spec's vectors and the T-tables.

Whichever build is imported runs here: the interpreted source in a default install, the
mypyc extension in a ``KMS_HOST_MYPYC=1`` one (``test_rijndael_builds`` holds the two to
each other). Expected bytes come from spec 5.2's checkpoints, FIPS-197 and ``cryptography``;
the T-table :class:`Rijndael`, itself pinned to the same vectors in ``test_rijndael``, is the
reference for everything else.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st
from kms_vectors import h, spec_vectors

from protocol.kms.rijndael import Rijndael
from protocol.kms.rijndael_compact import CompactRijndael

KEYS = spec_vectors()["keys"]
V6_TWEAKS = {int(r): int(value, 16) for r, value in KEYS["v6_round_key_tweaks"].items()}
BLOCKS = spec_vectors()["single_block"]
ZERO_IV = bytes(16)
whole_blocks = st.binary(max_size=128).map(lambda b: b[: len(b) // 16 * 16])


def compact(key: bytes, tweaks: dict[int, int] | None = None) -> CompactRijndael:
    return CompactRijndael(Rijndael(key, tweaks=tweaks).round_keys)


def test_fips197_c1_aes128() -> None:
    vector = spec_vectors()["fips197_c1"]
    cipher = compact(h(vector["key"]))
    assert cipher.cbc_encrypt(ZERO_IV, h(vector["plaintext"])) == h(vector["ciphertext"])
    assert cipher.decrypt_block(h(vector["ciphertext"])) == h(vector["plaintext"])


@pytest.mark.parametrize(
    ("key", "tweaks", "expected"),
    [
        pytest.param("k4", None, "rijndael160_k4_encrypt", id="rijndael160-k4"),
        pytest.param("k5", None, "aes128_k5_encrypt", id="aes128-k5"),
        pytest.param("k6", V6_TWEAKS, "v6_k6_encrypt", id="tweaked-k6"),
    ],
)
def test_single_block_vectors(key: str, tweaks: dict[int, int] | None, expected: str) -> None:
    cipher = compact(h(KEYS[key]), tweaks)
    ciphertext = cipher.cbc_encrypt(ZERO_IV, h(BLOCKS["plaintext"]))
    assert ciphertext == h(BLOCKS[expected])
    assert cipher.decrypt_block(ciphertext) == h(BLOCKS["plaintext"])


def test_single_block_tweaked_decrypt() -> None:
    cipher = compact(h(KEYS["k6"]), V6_TWEAKS)
    assert cipher.decrypt_block(h(BLOCKS["plaintext"])) == h(BLOCKS["v6_k6_decrypt"])


@given(
    key=st.binary(min_size=16, max_size=16),
    iv=st.binary(min_size=16, max_size=16),
    data=whole_blocks,
)
def test_untweaked_nk4_is_aes128_cbc(key: bytes, iv: bytes, data: bytes) -> None:
    oracle = Cipher(algorithms.AES(key), modes.CBC(iv))
    expected = oracle.encryptor().update(data)
    cipher = compact(key)
    assert cipher.cbc_encrypt(iv, data) == expected
    assert cipher.cbc_decrypt(iv, expected) == data


@given(
    key=st.binary(min_size=16, max_size=16) | st.binary(min_size=20, max_size=20),
    tweak=st.integers(0, 0xFF),
    iv=st.binary(min_size=16, max_size=16),
    data=whole_blocks,
)
def test_same_cipher_as_the_t_tables(key: bytes, tweak: int, iv: bytes, data: bytes) -> None:
    tables = Rijndael(key, tweaks={4: tweak, 6: 0x09})
    cipher = CompactRijndael(tables.round_keys)
    assert cipher.cbc_encrypt(iv, data) == tables.cbc_encrypt(iv, data)
    assert cipher.cbc_decrypt(iv, data) == tables.cbc_decrypt(iv, data)
    assert cipher.cbc_mac(data + iv) == tables.cbc_mac(data + iv)
    assert cipher.decrypt_block(iv) == tables.decrypt_block(iv)


@pytest.mark.parametrize("count", [0, 10, 13])
def test_takes_the_round_keys_of_a_128_or_160_bit_key(count: int) -> None:
    with pytest.raises(ValueError, match="11 or 12"):
        CompactRijndael([bytes(16)] * count)


def test_round_keys_are_16_bytes() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        CompactRijndael([bytes(16)] * 10 + [bytes(15)])
