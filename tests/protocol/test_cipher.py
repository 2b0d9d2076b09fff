"""Every Rijndael engine against FIPS-197, the spec 5.2 vectors, ``cryptography`` and each other.

One set of known-answer tests, run once per engine importable in this process: the
interpreted one always, and the compiled one, which is its mypyc extension in a
``KMS_HOST_MYPYC=1`` install and its source otherwise (so the pure suite still checks the code
a compiled build is made from). Expected bytes come from the spec's vectors and FIPS-197
(``tests/vectors/spec-vectors.json``) and from ``cryptography``'s AES for untweaked keys; for
tweaked keys at random inputs the reference is the interpreted engine's block chain, itself
pinned to the spec's V4/V6 vectors here. ``KMS_HOST_EXPECT_COMPILED=1`` (``.ci/run``'s
compiled run) makes :func:`test_the_expected_engine_is_loaded` fail unless the compiled engine
is the one the host uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from kms_vectors import h, spec_vectors

import protocol
from protocol.kms import _primitives, cipher, rijndael_build
from protocol.kms.cipher import Engine, RijndaelCipher, compiled, interpreted
from protocol.kms.cipher.interpreted import MAX_WIDTH

KEYS = spec_vectors()["keys"]
V6_TWEAKS = {int(r): int(value, 16) for r, value in KEYS["v6_round_key_tweaks"].items()}
BLOCKS = spec_vectors()["single_block"]
FIPS = spec_vectors()["fips197_c1"]
ZERO_IV = bytes(16)
SIZES = [1, 2, 3, 16, 31, 32, 33, 40, 64, 65, 130]

ENGINE_IDS = {"interpreted": "interpreted"}
ENGINE_IDS["compiled"] = "compiled" if cipher.compiled_build() else "compiled-source"


@pytest.fixture(scope="module", params=list(cipher.ENGINES), ids=lambda name: ENGINE_IDS[name])
def engine(request: pytest.FixtureRequest) -> Engine:
    return cipher.ENGINES[request.param]


def blocks_of(count: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    return count.flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n))


whole_blocks = blocks_of(st.integers(0, 8))
some_blocks = blocks_of(st.integers(1, 40))
keys = st.binary(min_size=16, max_size=16) | st.binary(min_size=20, max_size=20)
blocks = st.binary(min_size=16, max_size=16)


def split(data: bytes) -> list[bytes]:
    return [data[i : i + 16] for i in range(0, len(data), 16)]


def xor(left: bytes, right: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(left, right, strict=True))


class Reference:
    """CBC composed from the interpreted engine's one-block chains (pinned to the vectors)."""

    def __init__(self, key: bytes, tweaks: dict[int, int] | None) -> None:
        self.cipher = cipher.ENGINES["interpreted"](key, tweaks=tweaks)

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        out, chain = [], iv
        for block in split(data):
            chain = self.cipher.encrypt_block(xor(block, chain))
            out.append(chain)
        return b"".join(out)

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        chained = [iv, *split(data)]
        return b"".join(
            xor(self.cipher.decrypt_block(block), chained[n]) for n, block in enumerate(split(data))
        )


# --- the build: which engine runs ----------------------------------------------------------


def test_the_expected_engine_is_loaded() -> None:
    # A work tree's editable install is the interpreted build; a stray .so beside the source
    # would switch it silently, so that is a failure too. The compiled run says what it
    # expects (.ci/compiled-engine.sh sets KMS_HOST_EXPECT_COMPILED=1).
    built = cipher.compiled_build()
    if os.environ.get("KMS_HOST_EXPECT_COMPILED") != "1":
        assert not built, f"{compiled.__file__} is compiled: set KMS_HOST_EXPECT_COMPILED=1"
        assert cipher.engine_name == "interpreted"
        assert rijndael_build() == "pure"
        assert isinstance(_primitives.V6_CIPHER, interpreted.InterpretedRijndael)
        return
    assert built, f"KMS_HOST_EXPECT_COMPILED=1 but {compiled.__file__} is not an extension"
    # An installed package, not a .so built in place in a work tree.
    assert "site-packages" in Path(str(protocol.__file__)).parts, protocol.__file__
    assert str(compiled.__file__).endswith((".so", ".pyd"))
    assert cipher.engine_name == "compiled"
    assert rijndael_build() == "compiled"
    assert isinstance(_primitives.V6_CIPHER, compiled.CompiledRijndael)


def test_the_choice_follows_the_build() -> None:
    # A record, in -v output, of what the suite ran against, and the one place's rule.
    name = "compiled" if cipher.compiled_build() else "interpreted"
    assert cipher.engine_name == name
    assert rijndael_build() == ("compiled" if name == "compiled" else "pure")
    assert cipher.rijndael is cipher.ENGINES[name]
    assert type(_primitives.V6_CIPHER) is cipher.ENGINES[name]
    assert str(interpreted.__file__).endswith(".py")  # only the compiled engine compiles


# --- known answers: FIPS-197 and spec 5.2 --------------------------------------------------


def test_fips197_c1_aes128(engine: Engine) -> None:
    aes = engine(h(FIPS["key"]))
    assert aes.encrypt_block(h(FIPS["plaintext"])) == h(FIPS["ciphertext"])
    assert aes.decrypt_block(h(FIPS["ciphertext"])) == h(FIPS["plaintext"])
    assert aes.cbc_encrypt(ZERO_IV, h(FIPS["plaintext"])) == h(FIPS["ciphertext"])


@pytest.mark.parametrize("count", [1, 2, 7])
def test_fips197_c1_in_every_block(engine: Engine, count: int) -> None:
    aes = engine(h(FIPS["key"]))
    plain, expected = h(FIPS["plaintext"]), h(FIPS["ciphertext"])
    assert aes.decrypt_blocks(expected * count) == plain * count
    assert aes.cbc_encrypt_many([ZERO_IV] * count, [plain] * count) == [expected] * count


def test_rijndael160_round_keys_of_k4(engine: Engine) -> None:
    round_keys = engine(h(KEYS["k4"])).round_keys
    assert [key.hex() for key in round_keys] == spec_vectors()["rijndael160_k4_round_keys"]


def test_tweaked_round_keys_of_k6(engine: Engine) -> None:
    round_keys = engine(h(KEYS["k6"]), tweaks=V6_TWEAKS).round_keys
    assert [key.hex() for key in round_keys] == spec_vectors()["v6_k6_round_keys"]


def test_tweaks_change_only_byte_zero_of_rounds_4_6_8(engine: Engine) -> None:
    plain = engine(h(KEYS["k6"])).round_keys
    tweaked = engine(h(KEYS["k6"]), tweaks=V6_TWEAKS).round_keys
    prefixes = spec_vectors()["v6_k6_untweaked_round_key_prefixes"]
    for number, (standard, variant) in enumerate(zip(plain, tweaked, strict=True)):
        if str(number) in prefixes:
            assert standard.hex().startswith(prefixes[str(number)])
            assert standard[1:] == variant[1:]
            assert standard[0] ^ variant[0] == V6_TWEAKS[number]
        else:
            assert standard == variant


SPEC_BLOCKS = [
    pytest.param("k4", None, "rijndael160_k4_encrypt", id="rijndael160-k4"),
    pytest.param("k5", None, "aes128_k5_encrypt", id="aes128-k5"),
    pytest.param("k6", V6_TWEAKS, "v6_k6_encrypt", id="tweaked-k6"),
]


@pytest.mark.parametrize(("key", "tweaks", "expected"), SPEC_BLOCKS)
def test_single_block_vectors(
    engine: Engine, key: str, tweaks: dict[int, int] | None, expected: str
) -> None:
    rijndael = engine(h(KEYS[key]), tweaks=tweaks)
    ciphertext = rijndael.encrypt_block(h(BLOCKS["plaintext"]))
    assert ciphertext == h(BLOCKS[expected])
    assert rijndael.decrypt_block(ciphertext) == h(BLOCKS["plaintext"])


@pytest.mark.parametrize(("key", "tweaks", "expected"), SPEC_BLOCKS)
def test_single_block_vectors_between_other_blocks(
    engine: Engine, key: str, tweaks: dict[int, int] | None, expected: str
) -> None:
    # The vector's block between two others: neighbours must not leak into it.
    rijndael = engine(h(KEYS[key]), tweaks=tweaks)
    plain, ciphertext = h(BLOCKS["plaintext"]), h(BLOCKS[expected])
    assert rijndael.decrypt_blocks(b"\xff" * 16 + ciphertext + bytes(16))[16:32] == plain
    sealed = rijndael.cbc_encrypt_many([ZERO_IV] * 3, [bytes(16), plain, b"\xff" * 16])
    assert sealed[1] == ciphertext


def test_single_block_tweaked_decrypt(engine: Engine) -> None:
    v6 = engine(h(KEYS["k6"]), tweaks=V6_TWEAKS)
    decrypted = v6.decrypt_block(h(BLOCKS["plaintext"]))
    assert decrypted == h(BLOCKS["v6_k6_decrypt"])
    assert v6.encrypt_block(decrypted) == h(BLOCKS["plaintext"])
    assert v6.decrypt_blocks(h(BLOCKS["plaintext"]) * 3) == h(BLOCKS["v6_k6_decrypt"]) * 3


# --- properties: cryptography's AES, round trips, the engines agree ------------------------


@given(key=blocks, iv=blocks, data=whole_blocks)
def test_untweaked_nk4_is_aes128_cbc(engine: Engine, key: bytes, iv: bytes, data: bytes) -> None:
    expected = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor().update(data)
    aes = engine(key)
    assert aes.cbc_encrypt(iv, data) == expected
    assert aes.cbc_decrypt(iv, expected) == data


@given(key=blocks, data=some_blocks)
def test_untweaked_nk4_is_aes128_ecb(engine: Engine, key: bytes, data: bytes) -> None:
    # ECB on independent blocks is exactly the batch operations' primitive, not a mode choice.
    oracle = Cipher(algorithms.AES(key), modes.ECB())
    expected = oracle.encryptor().update(data)
    aes = engine(key)
    assert aes.decrypt_blocks(expected) == data
    assert aes.cbc_encrypt_many([ZERO_IV] * (len(data) // 16), split(data)) == split(expected)


@given(key=keys, block=blocks, tweak=st.integers(0, 0xFF))
def test_decrypt_inverts_encrypt(engine: Engine, key: bytes, block: bytes, tweak: int) -> None:
    rijndael = engine(key, tweaks={4: tweak, 6: 0x09})
    assert rijndael.decrypt_block(rijndael.encrypt_block(block)) == block
    assert rijndael.encrypt_block(rijndael.decrypt_block(block)) == block


@given(key=keys, tweak=st.integers(0, 0xFF), iv=blocks, data=whole_blocks)
def test_same_cipher_as_the_reference(
    engine: Engine, key: bytes, tweak: int, iv: bytes, data: bytes
) -> None:
    tweaks = {4: tweak, 6: 0x09, 8: 0xE4}
    reference, rijndael = Reference(key, tweaks), engine(key, tweaks=tweaks)
    expected = reference.encrypt(iv, data)
    assert rijndael.cbc_encrypt(iv, data) == expected
    assert rijndael.cbc_decrypt(iv, data) == reference.decrypt(iv, data)
    assert rijndael.cbc_decrypt(iv, expected) == data
    assert rijndael.cbc_mac(data + iv) == reference.encrypt(ZERO_IV, data + iv)[-16:]
    assert rijndael.decrypt_block(iv) == reference.decrypt(ZERO_IV, iv)


@given(key=keys, data=some_blocks)
def test_decrypt_blocks_is_ecb(engine: Engine, key: bytes, data: bytes) -> None:
    reference, rijndael = Reference(key, V6_TWEAKS), engine(key, tweaks=V6_TWEAKS)
    expected = b"".join(reference.decrypt(ZERO_IV, block) for block in split(data))
    assert rijndael.decrypt_blocks(data) == expected


# --- the batch operations the host uses (spec 5.4 view B, seal_responses) ------------------


@pytest.fixture(scope="module")
def v6(engine: Engine) -> RijndaelCipher:
    return engine(h(KEYS["k6"]), tweaks=V6_TWEAKS)


V6_REFERENCE = Reference(h(KEYS["k6"]), V6_TWEAKS)


@pytest.mark.parametrize("count", SIZES)
def test_cbc_decrypt_matches_the_block_chain(v6: RijndaelCipher, count: int) -> None:
    iv, data = bytes(range(16)), bytes(i * 7 % 256 for i in range(16 * count))
    assert v6.cbc_decrypt(iv, data) == V6_REFERENCE.decrypt(iv, data)


@pytest.mark.parametrize(
    "counts", [[1], [16], [16, 16], [3, 1, 2], [16] * 3, [1] * 40, [16] * 9, [70, 3]]
)
def test_cbc_decrypt_many_matches_the_block_chain(v6: RijndaelCipher, counts: list[int]) -> None:
    messages = [bytes((n * 31 + i) % 256 for i in range(16 * c)) for n, c in enumerate(counts)]
    expected = [V6_REFERENCE.decrypt(ZERO_IV, m) for m in messages]
    assert v6.cbc_decrypt_many(messages) == expected


@pytest.mark.parametrize("count", SIZES)
def test_side_by_side_encryption_matches_one_at_a_time(v6: RijndaelCipher, count: int) -> None:
    ivs = [bytes([n]) * 16 for n in range(count)]
    plaintexts = [bytes([n, 255 - n]) * 8 * 15 for n in range(count)]
    expected = [V6_REFERENCE.encrypt(iv, p) for iv, p in zip(ivs, plaintexts, strict=True)]
    assert v6.cbc_encrypt_many(ivs, plaintexts) == expected


@settings(max_examples=25)
@given(
    st.integers(1, 3).flatmap(
        lambda count: st.lists(
            st.tuples(blocks, st.binary(min_size=16 * count, max_size=16 * count)),
            min_size=1,
            max_size=36,
        )
    )
)
def test_side_by_side_encryption_property(
    v6: RijndaelCipher, pairs: list[tuple[bytes, bytes]]
) -> None:
    ivs, plaintexts = [iv for iv, _ in pairs], [p for _, p in pairs]
    expected = [V6_REFERENCE.encrypt(iv, p) for iv, p in pairs]
    assert v6.cbc_encrypt_many(ivs, plaintexts) == expected


def test_batches_wider_than_a_step(v6: RijndaelCipher) -> None:
    plain, expected = h(BLOCKS["plaintext"]), h(BLOCKS["v6_k6_encrypt"])
    count = 3 * MAX_WIDTH + 5
    assert v6.decrypt_blocks(expected * count) == plain * count
    assert v6.cbc_encrypt_many([ZERO_IV] * count, [plain] * count) == [expected] * count


def test_every_batch_width(v6: RijndaelCipher) -> None:
    plain, expected = h(BLOCKS["plaintext"]), h(BLOCKS["v6_k6_encrypt"])
    for count in range(1, 80):
        assert v6.cbc_encrypt_many([ZERO_IV] * count, [plain] * count) == [expected] * count
        assert v6.decrypt_blocks(expected * count) == plain * count


# --- what every engine rejects, with the same message --------------------------------------


@pytest.mark.parametrize("size", [0, 15, 24, 32])
def test_rejects_unsupported_key_sizes(engine: Engine, size: int) -> None:
    with pytest.raises(ValueError, match="16 or 20 bytes"):
        engine(bytes(size))


@pytest.mark.parametrize("tweaks", [{11: 1}, {-1: 1}, {4: 0x100}])
def test_rejects_invalid_tweaks(engine: Engine, tweaks: dict[int, int]) -> None:
    with pytest.raises(ValueError, match="tweak"):
        engine(bytes(16), tweaks=tweaks)


def test_a_160_bit_key_has_twelve_round_keys(engine: Engine) -> None:
    assert len(engine(bytes(20)).round_keys) == 12
    assert len(engine(bytes(16)).round_keys) == 11


@pytest.mark.parametrize(("iv", "data"), [(bytes(16), bytes(15)), (bytes(15), bytes(16))])
def test_cbc_needs_a_block_iv_and_whole_blocks(engine: Engine, iv: bytes, data: bytes) -> None:
    aes = engine(bytes(16))
    runs: list[Callable[[], bytes]] = [
        lambda: aes.cbc_encrypt(iv, data),
        lambda: aes.cbc_decrypt(iv, data),
    ]
    for run in runs:
        with pytest.raises(ValueError, match="16-byte"):
            run()


@pytest.mark.parametrize("size", [0, 15, 17, 40])
def test_decrypt_blocks_rejects_partial_blocks(engine: Engine, size: int) -> None:
    with pytest.raises(ValueError, match="whole 16-byte blocks"):
        engine(bytes(16)).decrypt_blocks(bytes(size))


@pytest.mark.parametrize("messages", [[bytes(17)], [bytes(16), b""], [bytes(32), bytes(8)]])
def test_cbc_decrypt_many_rejects_partial_blocks(engine: Engine, messages: list[bytes]) -> None:
    with pytest.raises(ValueError, match="whole 16-byte blocks"):
        engine(bytes(16)).cbc_decrypt_many(messages)


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
    engine: Engine, ivs: list[bytes], plaintexts: list[bytes], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        engine(bytes(16)).cbc_encrypt_many(ivs, plaintexts)


# --- the interpreted engine's wide steps: their memory stays bounded -----------------------


def test_wide_widths_are_bounded() -> None:
    v6 = interpreted.InterpretedRijndael(h(KEYS["k6"]), tweaks=V6_TWEAKS)
    wide = v6._wide
    for blocks_count in (0, MAX_WIDTH + 1):
        with pytest.raises(ValueError, match=f"1 to {MAX_WIDTH} blocks"):
            wide.width(blocks_count)
    count = 3 * MAX_WIDTH + 5
    v6.decrypt_blocks(bytes(16 * count))
    v6.cbc_encrypt_many([ZERO_IV] * count, [bytes(16)] * count)
    assert max(wide._widths) <= MAX_WIDTH  # what the host's memory bound rests on
