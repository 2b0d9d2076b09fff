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
key at import time. The CBC chains below carry the whole per-message work (issue 7).

Speed (docs/performance.md): in the default, pure build this is every activation's hottest
code, tuned for the interpreter (the CBC chains below). A ``KMS_HOST_MYPYC=1`` build runs
:mod:`protocol.kms.rijndael_compact` instead, which compiles to much faster code than these
T-tables do; there this module only expands the keys.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

__all__ = ["Rijndael"]

_WORDS = struct.Struct(">4I")
_ZERO_BLOCK = bytes(16)


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
# Only 256-entry tables: they stay in cache between activations. 65,536-entry views of
# T1/T2 (indexed by 16 bits, one AND less per lookup) won 10% in a hot-cache micro-benchmark
# but cost the host 25% (pure) to 35% (compiled) more CPU per activation, where the rest of
# its work evicts their 2 MB of references (docs/performance.md, issue 7).

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


def _inv_mix_round_key(rk: _Words) -> _Words:
    return (
        _inv_mix_column(rk[0]),
        _inv_mix_column(rk[1]),
        _inv_mix_column(rk[2]),
        _inv_mix_column(rk[3]),
    )


def _group(words: list[int]) -> tuple[_Words, ...]:
    """Split expanded key words into round keys of four words."""
    return tuple(
        (words[i], words[i + 1], words[i + 2], words[i + 3]) for i in range(0, len(words), 4)
    )


_INNER_ROUNDS = 9  # rounds 1..9, unrolled in the chains; Rijndael-160 has a 10th (``extra``)


def _flatten(inner: tuple[_Words, ...]) -> tuple[tuple[int, ...], _Words | None]:
    """The inner round keys as the chains take them: 36 words, and the extra round's key."""
    body = tuple(word for rk in inner[:_INNER_ROUNDS] for word in rk)
    return body, (inner[_INNER_ROUNDS] if len(inner) > _INNER_ROUNDS else None)


class Rijndael:
    """Rijndael with a 128-bit block, a 128- or 160-bit key and optional round-key tweaks.

    ``tweaks`` maps a round number to a byte XORed into byte 0 of that round key after the
    full expansion (spec 5.2: ``{4: 0x73, 6: 0x09, 8: 0xE4}`` for the V6 key). The tweak does
    not propagate into later round keys. ``round_keys`` exposes the (tweaked) round keys
    rk0..rkNr, 16 bytes each, in the form spec 5.2 lists them.
    """

    __slots__ = (
        "_dec_body",
        "_dec_extra",
        "_dec_final",
        "_dec_first",
        "_enc_body",
        "_enc_extra",
        "_enc_final",
        "_enc_first",
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
        self._enc_first, self._enc_final = enc[0], enc[-1]
        self._enc_body, self._enc_extra = _flatten(enc[1:-1])
        dec_inner = tuple(_inv_mix_round_key(rk) for rk in reversed(enc[1:-1]))
        self._dec_first, self._dec_final = enc[-1], enc[0]
        self._dec_body, self._dec_extra = _flatten(dec_inner)

    def encrypt_block(self, block: bytes) -> bytes:
        """Encrypt one 16-byte block."""
        return self.cbc_encrypt(_ZERO_BLOCK, block)

    def decrypt_block(self, block: bytes) -> bytes:
        """Decrypt one 16-byte block."""
        return self.cbc_decrypt(_ZERO_BLOCK, block)

    def cbc_encrypt(self, iv: bytes, data: bytes) -> bytes:
        """CBC-encrypt whole 16-byte blocks under ``iv`` (the caller pads)."""
        _check_blocks(iv, data)
        out = bytearray(len(data))
        self._encrypt_chain(_WORDS.unpack(iv), data, out)
        return bytes(out)

    def cbc_decrypt(self, iv: bytes, data: bytes) -> bytes:
        """CBC-decrypt whole 16-byte blocks under ``iv`` (the caller strips padding)."""
        _check_blocks(iv, data)
        out = bytearray(len(data))
        self._decrypt_chain(_WORDS.unpack(iv), data, out)
        return bytes(out)

    def cbc_mac(self, data: bytes) -> bytes:
        """The last block of the CBC encryption of ``data`` under a zero IV (no padding)."""
        _check_blocks(_ZERO_BLOCK, data)
        return _WORDS.pack(*self._encrypt_chain((0, 0, 0, 0), data, None))

    # The two chains below are the hot path of every activation in the pure build (issue 7):
    # the whole message is walked in one call with the rounds unrolled and the round keys in
    # local variables, so a block costs no function call and no loop. Between rounds the
    # state goes through ``bytes``: ``pack`` turns the four column words into 16 bytes and
    # unpacking them gives each byte a local, so a T-table index is a plain name, where
    # ``(a >> 16) & 255`` costs two operations and an integer object (31% fewer instructions
    # per block, docs/performance.md). The byte indexes are ShiftRows: column word ``j``
    # takes row ``r`` from column ``j + r`` (``j - r`` to decrypt). Rounds 1-9 are common to
    # both key sizes; Rijndael-160 has one more (``extra``). ``out`` is None for a MAC, which
    # keeps only the last block.

    def _encrypt_chain(self, iv: _Words, data: bytes, out: bytearray | None) -> _Words:
        t0, t1, t2, t3 = _TE0, _TE1, _TE2, _TE3
        u3, u2, u1, u0 = _S3, _S2, _S1, _S0
        f0, f1, f2, f3 = self._enc_first
        l0, l1, l2, l3 = self._enc_final
        extra = self._enc_extra
        # fmt: off
        (
            k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15, k16, k17, k18, k19, k20,
            k21, k22, k23, k24, k25, k26, k27, k28, k29, k30, k31, k32, k33, k34, k35, k36,
            k37, k38, k39,
        ) = self._enc_body
        # fmt: on
        pack, unpack_from, pack_into = _WORDS.pack, _WORDS.unpack_from, _WORDS.pack_into
        c0, c1, c2, c3 = iv
        for offset in range(0, len(data), 16):
            p0, p1, p2, p3 = unpack_from(data, offset)
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                p0 ^ c0 ^ f0, p1 ^ c1 ^ f1, p2 ^ c2 ^ f2, p3 ^ c3 ^ f3
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x5] ^ t2[x10] ^ t3[x15] ^ k4,
                t0[x4] ^ t1[x9] ^ t2[x14] ^ t3[x3] ^ k5,
                t0[x8] ^ t1[x13] ^ t2[x2] ^ t3[x7] ^ k6,
                t0[x12] ^ t1[x1] ^ t2[x6] ^ t3[x11] ^ k7,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x5] ^ t2[x10] ^ t3[x15] ^ k8,
                t0[x4] ^ t1[x9] ^ t2[x14] ^ t3[x3] ^ k9,
                t0[x8] ^ t1[x13] ^ t2[x2] ^ t3[x7] ^ k10,
                t0[x12] ^ t1[x1] ^ t2[x6] ^ t3[x11] ^ k11,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x5] ^ t2[x10] ^ t3[x15] ^ k12,
                t0[x4] ^ t1[x9] ^ t2[x14] ^ t3[x3] ^ k13,
                t0[x8] ^ t1[x13] ^ t2[x2] ^ t3[x7] ^ k14,
                t0[x12] ^ t1[x1] ^ t2[x6] ^ t3[x11] ^ k15,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x5] ^ t2[x10] ^ t3[x15] ^ k16,
                t0[x4] ^ t1[x9] ^ t2[x14] ^ t3[x3] ^ k17,
                t0[x8] ^ t1[x13] ^ t2[x2] ^ t3[x7] ^ k18,
                t0[x12] ^ t1[x1] ^ t2[x6] ^ t3[x11] ^ k19,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x5] ^ t2[x10] ^ t3[x15] ^ k20,
                t0[x4] ^ t1[x9] ^ t2[x14] ^ t3[x3] ^ k21,
                t0[x8] ^ t1[x13] ^ t2[x2] ^ t3[x7] ^ k22,
                t0[x12] ^ t1[x1] ^ t2[x6] ^ t3[x11] ^ k23,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x5] ^ t2[x10] ^ t3[x15] ^ k24,
                t0[x4] ^ t1[x9] ^ t2[x14] ^ t3[x3] ^ k25,
                t0[x8] ^ t1[x13] ^ t2[x2] ^ t3[x7] ^ k26,
                t0[x12] ^ t1[x1] ^ t2[x6] ^ t3[x11] ^ k27,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x5] ^ t2[x10] ^ t3[x15] ^ k28,
                t0[x4] ^ t1[x9] ^ t2[x14] ^ t3[x3] ^ k29,
                t0[x8] ^ t1[x13] ^ t2[x2] ^ t3[x7] ^ k30,
                t0[x12] ^ t1[x1] ^ t2[x6] ^ t3[x11] ^ k31,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x5] ^ t2[x10] ^ t3[x15] ^ k32,
                t0[x4] ^ t1[x9] ^ t2[x14] ^ t3[x3] ^ k33,
                t0[x8] ^ t1[x13] ^ t2[x2] ^ t3[x7] ^ k34,
                t0[x12] ^ t1[x1] ^ t2[x6] ^ t3[x11] ^ k35,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x5] ^ t2[x10] ^ t3[x15] ^ k36,
                t0[x4] ^ t1[x9] ^ t2[x14] ^ t3[x3] ^ k37,
                t0[x8] ^ t1[x13] ^ t2[x2] ^ t3[x7] ^ k38,
                t0[x12] ^ t1[x1] ^ t2[x6] ^ t3[x11] ^ k39,
            )
            if extra is not None:
                x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                    t0[x0] ^ t1[x5] ^ t2[x10] ^ t3[x15] ^ extra[0],
                    t0[x4] ^ t1[x9] ^ t2[x14] ^ t3[x3] ^ extra[1],
                    t0[x8] ^ t1[x13] ^ t2[x2] ^ t3[x7] ^ extra[2],
                    t0[x12] ^ t1[x1] ^ t2[x6] ^ t3[x11] ^ extra[3],
                )
            c0, c1, c2, c3 = (
                u3[x0] ^ u2[x5] ^ u1[x10] ^ u0[x15] ^ l0,
                u3[x4] ^ u2[x9] ^ u1[x14] ^ u0[x3] ^ l1,
                u3[x8] ^ u2[x13] ^ u1[x2] ^ u0[x7] ^ l2,
                u3[x12] ^ u2[x1] ^ u1[x6] ^ u0[x11] ^ l3,
            )
            if out is not None:
                pack_into(out, offset, c0, c1, c2, c3)
        return c0, c1, c2, c3

    def _decrypt_chain(self, iv: _Words, data: bytes, out: bytearray) -> None:
        t0, t1, t2, t3 = _TD0, _TD1, _TD2, _TD3
        u3, u2, u1, u0 = _I3, _I2, _I1, _I0
        f0, f1, f2, f3 = self._dec_first
        l0, l1, l2, l3 = self._dec_final
        extra = self._dec_extra
        # fmt: off
        (
            k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15, k16, k17, k18, k19, k20,
            k21, k22, k23, k24, k25, k26, k27, k28, k29, k30, k31, k32, k33, k34, k35, k36,
            k37, k38, k39,
        ) = self._dec_body
        # fmt: on
        pack, unpack_from, pack_into = _WORDS.pack, _WORDS.unpack_from, _WORDS.pack_into
        v0, v1, v2, v3 = iv
        for offset in range(0, len(data), 16):
            c0, c1, c2, c3 = unpack_from(data, offset)
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                c0 ^ f0, c1 ^ f1, c2 ^ f2, c3 ^ f3
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x13] ^ t2[x10] ^ t3[x7] ^ k4,
                t0[x4] ^ t1[x1] ^ t2[x14] ^ t3[x11] ^ k5,
                t0[x8] ^ t1[x5] ^ t2[x2] ^ t3[x15] ^ k6,
                t0[x12] ^ t1[x9] ^ t2[x6] ^ t3[x3] ^ k7,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x13] ^ t2[x10] ^ t3[x7] ^ k8,
                t0[x4] ^ t1[x1] ^ t2[x14] ^ t3[x11] ^ k9,
                t0[x8] ^ t1[x5] ^ t2[x2] ^ t3[x15] ^ k10,
                t0[x12] ^ t1[x9] ^ t2[x6] ^ t3[x3] ^ k11,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x13] ^ t2[x10] ^ t3[x7] ^ k12,
                t0[x4] ^ t1[x1] ^ t2[x14] ^ t3[x11] ^ k13,
                t0[x8] ^ t1[x5] ^ t2[x2] ^ t3[x15] ^ k14,
                t0[x12] ^ t1[x9] ^ t2[x6] ^ t3[x3] ^ k15,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x13] ^ t2[x10] ^ t3[x7] ^ k16,
                t0[x4] ^ t1[x1] ^ t2[x14] ^ t3[x11] ^ k17,
                t0[x8] ^ t1[x5] ^ t2[x2] ^ t3[x15] ^ k18,
                t0[x12] ^ t1[x9] ^ t2[x6] ^ t3[x3] ^ k19,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x13] ^ t2[x10] ^ t3[x7] ^ k20,
                t0[x4] ^ t1[x1] ^ t2[x14] ^ t3[x11] ^ k21,
                t0[x8] ^ t1[x5] ^ t2[x2] ^ t3[x15] ^ k22,
                t0[x12] ^ t1[x9] ^ t2[x6] ^ t3[x3] ^ k23,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x13] ^ t2[x10] ^ t3[x7] ^ k24,
                t0[x4] ^ t1[x1] ^ t2[x14] ^ t3[x11] ^ k25,
                t0[x8] ^ t1[x5] ^ t2[x2] ^ t3[x15] ^ k26,
                t0[x12] ^ t1[x9] ^ t2[x6] ^ t3[x3] ^ k27,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x13] ^ t2[x10] ^ t3[x7] ^ k28,
                t0[x4] ^ t1[x1] ^ t2[x14] ^ t3[x11] ^ k29,
                t0[x8] ^ t1[x5] ^ t2[x2] ^ t3[x15] ^ k30,
                t0[x12] ^ t1[x9] ^ t2[x6] ^ t3[x3] ^ k31,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x13] ^ t2[x10] ^ t3[x7] ^ k32,
                t0[x4] ^ t1[x1] ^ t2[x14] ^ t3[x11] ^ k33,
                t0[x8] ^ t1[x5] ^ t2[x2] ^ t3[x15] ^ k34,
                t0[x12] ^ t1[x9] ^ t2[x6] ^ t3[x3] ^ k35,
            )
            x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                t0[x0] ^ t1[x13] ^ t2[x10] ^ t3[x7] ^ k36,
                t0[x4] ^ t1[x1] ^ t2[x14] ^ t3[x11] ^ k37,
                t0[x8] ^ t1[x5] ^ t2[x2] ^ t3[x15] ^ k38,
                t0[x12] ^ t1[x9] ^ t2[x6] ^ t3[x3] ^ k39,
            )
            if extra is not None:
                x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = pack(
                    t0[x0] ^ t1[x13] ^ t2[x10] ^ t3[x7] ^ extra[0],
                    t0[x4] ^ t1[x1] ^ t2[x14] ^ t3[x11] ^ extra[1],
                    t0[x8] ^ t1[x5] ^ t2[x2] ^ t3[x15] ^ extra[2],
                    t0[x12] ^ t1[x9] ^ t2[x6] ^ t3[x3] ^ extra[3],
                )
            pack_into(
                out,
                offset,
                u3[x0] ^ u2[x13] ^ u1[x10] ^ u0[x7] ^ l0 ^ v0,
                u3[x4] ^ u2[x1] ^ u1[x14] ^ u0[x11] ^ l1 ^ v1,
                u3[x8] ^ u2[x5] ^ u1[x2] ^ u0[x15] ^ l2 ^ v2,
                u3[x12] ^ u2[x9] ^ u1[x6] ^ u0[x3] ^ l3 ^ v3,
            )
            v0, v1, v2, v3 = c0, c1, c2, c3


def _check_blocks(iv: bytes, data: bytes) -> None:
    if len(iv) != 16 or len(data) % 16:
        raise ValueError(
            f"CBC needs a 16-byte IV and whole 16-byte blocks, got {len(iv)} and {len(data)} bytes"
        )
