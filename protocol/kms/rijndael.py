"""A small table-driven Rijndael block cipher for the two non-standard KMS variants.

Why this module exists (spec 5.2, 10.14): KMS V4 MACs with Rijndael under a 160-bit key
(Nk = 5, 11 rounds), which is valid Rijndael but not AES, and KMS V6 uses AES-128 whose
expanded round keys 4, 6 and 8 have a constant XORed into their first byte. ``cryptography``
exposes neither a 160-bit key nor the key schedule, so both are done here. Standard AES
(V5) stays with ``cryptography``; this class also computes it (no tweaks, Nk = 4), which is
how the FIPS-197 vector checks the shared round function.

Theory of operation: the state is four big-endian 32-bit column words, so input byte ``i``
lands in row ``i % 4`` of column ``i // 4`` exactly as FIPS-197 maps it. One round is four
T-table lookups per column (SubBytes, ShiftRows and MixColumns folded into ``_TE*``) and an
XOR with the round key. Decryption uses the equivalent inverse cipher: the decryption round
keys are the *tweaked* encryption round keys in reverse order with InvMixColumns applied to
the inner ones, which is the form spec 5.2 requires for the V6 variant. Round keys are
expanded once per key; the protocol's keys are constants, so callers build one instance per
key at import time and the per-block work allocates only the four result words.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

__all__ = ["Rijndael"]

_WORDS = struct.Struct(">4I")


def _xtime(value: int) -> int:
    """Multiply by x (that is, 2) in GF(2^8) modulo the AES polynomial x^8+x^4+x^3+x+1."""
    value <<= 1
    return value ^ 0x11B if value & 0x100 else value


def _gf_mul(a: int, b: int) -> int:
    """Multiply two elements of GF(2^8) (shift-and-add)."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a = _xtime(a)
        b >>= 1
    return product


def _build_sbox() -> tuple[int, ...]:
    """The AES S-box: inverse in GF(2^8), then the affine map (FIPS-197 5.1.1)."""
    exp: list[int] = []
    log = [0] * 256
    value = 1
    for power in range(255):  # 3 generates the multiplicative group
        exp.append(value)
        log[value] = power
        value ^= _xtime(value)
    sbox = []
    for byte in range(256):
        inv = exp[(255 - log[byte]) % 255] if byte else 0
        rotations = inv
        for shift in range(1, 5):
            rotations ^= ((inv << shift) | (inv >> (8 - shift))) & 0xFF
        sbox.append(rotations ^ 0x63)
    return tuple(sbox)


def _ror8(word: int) -> int:
    return ((word >> 8) | (word << 24)) & 0xFFFFFFFF


def _rotations(table: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The table and its three byte rotations: T0..T3 of the classic T-table implementation."""
    tables = [table]
    for _ in range(3):
        tables.append(tuple(_ror8(word) for word in tables[-1]))
    return tuple(tables)


_SBOX = _build_sbox()
_INV_SBOX = tuple(_SBOX.index(byte) for byte in range(256))

# Encryption: column (2s, s, s, 3s) of MixColumns applied to SubBytes output s.
_TE0, _TE1, _TE2, _TE3 = _rotations(
    tuple((_gf_mul(s, 2) << 24) | (s << 16) | (s << 8) | _gf_mul(s, 3) for s in _SBOX)
)
# Decryption: column (14i, 9i, 13i, 11i) of InvMixColumns applied to InvSubBytes output i.
_TD0, _TD1, _TD2, _TD3 = _rotations(
    tuple(
        (_gf_mul(i, 14) << 24) | (_gf_mul(i, 9) << 16) | (_gf_mul(i, 13) << 8) | _gf_mul(i, 11)
        for i in _INV_SBOX
    )
)
# Last round (no MixColumns): the S-boxes pre-shifted into each byte lane.
_S3, _S2, _S1, _S0 = (tuple(s << shift for s in _SBOX) for shift in (24, 16, 8, 0))
_I3, _I2, _I1, _I0 = (tuple(i << shift for i in _INV_SBOX) for shift in (24, 16, 8, 0))

_Words = tuple[int, int, int, int]  # a block or a round key as four column words


def _expand_key(key: bytes, rounds: int) -> list[int]:
    """Rijndael key expansion into 4 * (rounds + 1) words (spec 5.2; FIPS-197 5.2).

    Only Nk = 4 and 5 are supported, so the extra SubWord step of Nk > 6 never applies.
    """
    nk = len(key) // 4
    words = list(struct.unpack(f">{nk}I", key))
    rcon = 1
    for i in range(nk, 4 * (rounds + 1)):
        temp = words[i - 1]
        if i % nk == 0:
            temp = (
                (_SBOX[(temp >> 16) & 0xFF] << 24)
                | (_SBOX[(temp >> 8) & 0xFF] << 16)
                | (_SBOX[temp & 0xFF] << 8)
                | _SBOX[temp >> 24]
            ) ^ (rcon << 24)
            rcon = _xtime(rcon)
        words.append(words[i - nk] ^ temp)
    return words


def _inv_mix_column(word: int) -> int:
    """InvMixColumns of one word, using Td(S(x)) = InvMixColumns column of x."""
    return (
        _TD0[_SBOX[word >> 24]]
        ^ _TD1[_SBOX[(word >> 16) & 0xFF]]
        ^ _TD2[_SBOX[(word >> 8) & 0xFF]]
        ^ _TD3[_SBOX[word & 0xFF]]
    )


def _group(words: list[int]) -> tuple[_Words, ...]:
    """Split expanded key words into round keys of four words."""
    return tuple(
        (words[i], words[i + 1], words[i + 2], words[i + 3]) for i in range(0, len(words), 4)
    )


class Rijndael:
    """Rijndael with a 128-bit block, a 128- or 160-bit key and optional round-key tweaks.

    ``tweaks`` maps a round number to a byte XORed into byte 0 of that round key after the
    full expansion (spec 5.2: ``{4: 0x73, 6: 0x09, 8: 0xE4}`` for the V6 key). The tweak does
    not propagate into later round keys. ``round_keys`` exposes the (tweaked) round keys
    rk0..rkNr, 16 bytes each, in the form spec 5.2 lists them.
    """

    __slots__ = (
        "_dec_final",
        "_dec_first",
        "_dec_inner",
        "_enc_final",
        "_enc_first",
        "_enc_inner",
        "round_keys",
    )

    def __init__(self, key: bytes, *, tweaks: Mapping[int, int] | None = None) -> None:
        if len(key) not in (16, 20):
            raise ValueError(f"Rijndael key must be 16 or 20 bytes, not {len(key)}")
        rounds = len(key) // 4 + 6
        words = _expand_key(key, rounds)
        for round_number, value in (tweaks or {}).items():
            if not 0 <= round_number <= rounds or not 0 <= value <= 0xFF:
                raise ValueError(f"invalid round-key tweak {round_number}: {value:#x}")
            words[4 * round_number] ^= value << 24
        enc = _group(words)
        self.round_keys: tuple[bytes, ...] = tuple(_WORDS.pack(*rk) for rk in enc)
        self._enc_first, self._enc_inner, self._enc_final = enc[0], enc[1:-1], enc[-1]
        dec = (enc[-1], *(tuple(_inv_mix_column(w) for w in rk) for rk in reversed(enc[1:-1])))
        self._dec_first, self._dec_inner, self._dec_final = dec[0], dec[1:], enc[0]

    def encrypt_words(self, s0: int, s1: int, s2: int, s3: int) -> _Words:
        """Encrypt one block given as four big-endian column words."""
        t0, t1, t2, t3 = _TE0, _TE1, _TE2, _TE3
        k0, k1, k2, k3 = self._enc_first
        s0 ^= k0
        s1 ^= k1
        s2 ^= k2
        s3 ^= k3
        for k0, k1, k2, k3 in self._enc_inner:
            s0, s1, s2, s3 = (
                t0[s0 >> 24] ^ t1[(s1 >> 16) & 0xFF] ^ t2[(s2 >> 8) & 0xFF] ^ t3[s3 & 0xFF] ^ k0,
                t0[s1 >> 24] ^ t1[(s2 >> 16) & 0xFF] ^ t2[(s3 >> 8) & 0xFF] ^ t3[s0 & 0xFF] ^ k1,
                t0[s2 >> 24] ^ t1[(s3 >> 16) & 0xFF] ^ t2[(s0 >> 8) & 0xFF] ^ t3[s1 & 0xFF] ^ k2,
                t0[s3 >> 24] ^ t1[(s0 >> 16) & 0xFF] ^ t2[(s1 >> 8) & 0xFF] ^ t3[s2 & 0xFF] ^ k3,
            )
        k0, k1, k2, k3 = self._enc_final
        return (
            _S3[s0 >> 24] ^ _S2[(s1 >> 16) & 0xFF] ^ _S1[(s2 >> 8) & 0xFF] ^ _S0[s3 & 0xFF] ^ k0,
            _S3[s1 >> 24] ^ _S2[(s2 >> 16) & 0xFF] ^ _S1[(s3 >> 8) & 0xFF] ^ _S0[s0 & 0xFF] ^ k1,
            _S3[s2 >> 24] ^ _S2[(s3 >> 16) & 0xFF] ^ _S1[(s0 >> 8) & 0xFF] ^ _S0[s1 & 0xFF] ^ k2,
            _S3[s3 >> 24] ^ _S2[(s0 >> 16) & 0xFF] ^ _S1[(s1 >> 8) & 0xFF] ^ _S0[s2 & 0xFF] ^ k3,
        )

    def decrypt_words(self, s0: int, s1: int, s2: int, s3: int) -> _Words:
        """Decrypt one block given as four big-endian column words (equivalent inverse cipher)."""
        t0, t1, t2, t3 = _TD0, _TD1, _TD2, _TD3
        k0, k1, k2, k3 = self._dec_first
        s0 ^= k0
        s1 ^= k1
        s2 ^= k2
        s3 ^= k3
        for k0, k1, k2, k3 in self._dec_inner:
            s0, s1, s2, s3 = (
                t0[s0 >> 24] ^ t1[(s3 >> 16) & 0xFF] ^ t2[(s2 >> 8) & 0xFF] ^ t3[s1 & 0xFF] ^ k0,
                t0[s1 >> 24] ^ t1[(s0 >> 16) & 0xFF] ^ t2[(s3 >> 8) & 0xFF] ^ t3[s2 & 0xFF] ^ k1,
                t0[s2 >> 24] ^ t1[(s1 >> 16) & 0xFF] ^ t2[(s0 >> 8) & 0xFF] ^ t3[s3 & 0xFF] ^ k2,
                t0[s3 >> 24] ^ t1[(s2 >> 16) & 0xFF] ^ t2[(s1 >> 8) & 0xFF] ^ t3[s0 & 0xFF] ^ k3,
            )
        k0, k1, k2, k3 = self._dec_final
        return (
            _I3[s0 >> 24] ^ _I2[(s3 >> 16) & 0xFF] ^ _I1[(s2 >> 8) & 0xFF] ^ _I0[s1 & 0xFF] ^ k0,
            _I3[s1 >> 24] ^ _I2[(s0 >> 16) & 0xFF] ^ _I1[(s3 >> 8) & 0xFF] ^ _I0[s2 & 0xFF] ^ k1,
            _I3[s2 >> 24] ^ _I2[(s1 >> 16) & 0xFF] ^ _I1[(s0 >> 8) & 0xFF] ^ _I0[s3 & 0xFF] ^ k2,
            _I3[s3 >> 24] ^ _I2[(s2 >> 16) & 0xFF] ^ _I1[(s1 >> 8) & 0xFF] ^ _I0[s0 & 0xFF] ^ k3,
        )

    def encrypt_block(self, block: bytes) -> bytes:
        """Encrypt one 16-byte block."""
        return _WORDS.pack(*self.encrypt_words(*_WORDS.unpack(block)))

    def decrypt_block(self, block: bytes) -> bytes:
        """Decrypt one 16-byte block."""
        return _WORDS.pack(*self.decrypt_words(*_WORDS.unpack(block)))
