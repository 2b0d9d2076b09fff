"""Rijndael against FIPS-197, the spec 5.2 checkpoints and ``cryptography`` as an oracle."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st
from kms_vectors import h, spec_vectors

from protocol.kms.rijndael import Rijndael

KEYS = spec_vectors()["keys"]
V6_TWEAKS = {int(r): int(value, 16) for r, value in KEYS["v6_round_key_tweaks"].items()}
BLOCKS = spec_vectors()["single_block"]


def test_fips197_c1_aes128_encrypt_and_decrypt() -> None:
    vector = spec_vectors()["fips197_c1"]
    cipher = Rijndael(h(vector["key"]))
    assert cipher.encrypt_block(h(vector["plaintext"])) == h(vector["ciphertext"])
    assert cipher.decrypt_block(h(vector["ciphertext"])) == h(vector["plaintext"])


def test_rijndael160_round_keys_of_k4() -> None:
    cipher = Rijndael(h(KEYS["k4"]))
    assert [key.hex() for key in cipher.round_keys] == spec_vectors()["rijndael160_k4_round_keys"]


def test_tweaked_round_keys_of_k6() -> None:
    cipher = Rijndael(h(KEYS["k6"]), tweaks=V6_TWEAKS)
    assert [key.hex() for key in cipher.round_keys] == spec_vectors()["v6_k6_round_keys"]


def test_tweaks_change_only_byte_zero_of_rounds_4_6_8() -> None:
    plain = Rijndael(h(KEYS["k6"])).round_keys
    tweaked = Rijndael(h(KEYS["k6"]), tweaks=V6_TWEAKS).round_keys
    prefixes = spec_vectors()["v6_k6_untweaked_round_key_prefixes"]
    for number, (standard, variant) in enumerate(zip(plain, tweaked, strict=True)):
        if str(number) in prefixes:
            assert standard.hex().startswith(prefixes[str(number)])
            assert standard[1:] == variant[1:]
            assert standard[0] ^ variant[0] == V6_TWEAKS[number]
        else:
            assert standard == variant


@pytest.mark.parametrize(
    ("key", "tweaks", "expected"),
    [
        pytest.param("k4", None, "rijndael160_k4_encrypt", id="rijndael160-k4"),
        pytest.param("k5", None, "aes128_k5_encrypt", id="aes128-k5"),
        pytest.param("k6", V6_TWEAKS, "v6_k6_encrypt", id="tweaked-k6"),
    ],
)
def test_single_block_encrypt(key: str, tweaks: dict[int, int] | None, expected: str) -> None:
    cipher = Rijndael(h(KEYS[key]), tweaks=tweaks)
    ciphertext = cipher.encrypt_block(h(BLOCKS["plaintext"]))
    assert ciphertext == h(BLOCKS[expected])
    assert cipher.decrypt_block(ciphertext) == h(BLOCKS["plaintext"])


def test_single_block_tweaked_decrypt() -> None:
    cipher = Rijndael(h(KEYS["k6"]), tweaks=V6_TWEAKS)
    decrypted = cipher.decrypt_block(h(BLOCKS["plaintext"]))
    assert decrypted == h(BLOCKS["v6_k6_decrypt"])
    assert cipher.encrypt_block(decrypted) == h(BLOCKS["plaintext"])


@given(key=st.binary(min_size=16, max_size=16), block=st.binary(min_size=16, max_size=16))
def test_untweaked_nk4_is_aes128(key: bytes, block: bytes) -> None:
    # ECB on one block is exactly the single-block primitive under test, not a mode choice.
    oracle = Cipher(algorithms.AES(key), modes.ECB())
    expected = oracle.encryptor().update(block)
    cipher = Rijndael(key)
    assert cipher.encrypt_block(block) == expected
    assert cipher.decrypt_block(expected) == block


@given(
    key=st.binary(min_size=16, max_size=16) | st.binary(min_size=20, max_size=20),
    block=st.binary(min_size=16, max_size=16),
    tweak=st.integers(0, 0xFF),
)
def test_decrypt_inverts_encrypt(key: bytes, block: bytes, tweak: int) -> None:
    cipher = Rijndael(key, tweaks={4: tweak, 6: 0x09})
    assert cipher.decrypt_block(cipher.encrypt_block(block)) == block
    assert cipher.encrypt_block(cipher.decrypt_block(block)) == block


@pytest.mark.parametrize("size", [0, 15, 24, 32])
def test_rejects_unsupported_key_sizes(size: int) -> None:
    with pytest.raises(ValueError, match="16 or 20 bytes"):
        Rijndael(bytes(size))


@pytest.mark.parametrize("tweaks", [{11: 1}, {-1: 1}, {4: 0x100}])
def test_rejects_invalid_tweaks(tweaks: dict[int, int]) -> None:
    with pytest.raises(ValueError, match="tweak"):
        Rijndael(bytes(16), tweaks=tweaks)
