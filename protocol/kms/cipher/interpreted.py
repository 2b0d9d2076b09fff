"""The interpreted engine: T-table CBC chains, and many independent blocks at once.

Why this shape (spec 5.2, 5.4): interpreted Python pays per operation, so a chain walks a
whole message in one call with the rounds unrolled, the round keys in locals and one 32-bit
T-table lookup per byte (SubBytes, ShiftRows and MixColumns folded into ``_TE*``). Blocks
that do not depend on each other (CBC decryption, the same block of several messages) go
through :class:`WideRounds` instead, a round of all of them per step, from two blocks or
messages on, where it overtakes the chains.

The state is four big-endian 32-bit column words, so input byte ``i`` lands in row ``i % 4``
of column ``i // 4`` exactly as FIPS-197 maps it. Decryption uses the equivalent inverse
cipher: the *tweaked* encryption round keys in reverse order with InvMixColumns applied to
the inner ones, which is the form spec 5.2 requires for the V6 variant.

The wide half, :class:`WideRounds` (spec 5.4): interpreted, a T-table round costs 16 lookups
per block, but most of a message's blocks do not depend on each other. CBC *decryption* is
one independent block decryption per ciphertext block (P_i = D_K(C_i) xor C_(i-1)), and CBC
*encryption* of several messages can advance all of them one block per step. There a step
processes n blocks with a fixed number of C-level operations on one 128n-bit integer and one
16n-byte string, whatever n is: ``bytes.translate`` does SubBytes with the GF(2^8) multiples
MixColumns needs, masks and shifts do ShiftRows and the byte rotations inside each column,
and XOR adds the round key to every block at once. Compiled code runs a block's rounds
faster one block at a time, so only this engine has a wide half.

Wide layout: the blocks are concatenated in order and read as one big-endian integer, so byte
``i`` of a block is row ``i % 4`` of column ``i // 4`` (FIPS-197 3.4), and inside each
32-bit column word row 0 is the most significant byte. Masks and round keys are repeated
once per block; they depend on n only, so each width is built once and cached.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Final

from protocol.kms.cipher._shared import (
    BLOCK_SIZE,
    INV_SBOX,
    SBOX,
    ZERO_BLOCK,
    check_blocks,
    check_ecb,
    check_messages,
    check_side_by_side,
    expand_key,
    gf_mul,
)

__all__ = ["MAX_WIDTH", "InterpretedRijndael", "WideRounds"]

_WORDS = struct.Struct(">4I")
_WIDE_FROM: Final = 2  # blocks or messages; below this the chains are faster


def _ror8(word: int) -> int:
    return ((word >> 8) | (word << 24)) & 0xFFFFFFFF


def _rotations(table: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The table and its three byte rotations: T0..T3 of the classic T-table implementation."""
    tables = [table]
    for _ in range(3):
        tables.append(tuple(_ror8(word) for word in tables[-1]))
    return tuple(tables)


# Encryption: column (2s, s, s, 3s) of MixColumns applied to SubBytes output s.
_TE0, _TE1, _TE2, _TE3 = _rotations(
    tuple((gf_mul(s, 2) << 24) | (s << 16) | (s << 8) | gf_mul(s, 3) for s in SBOX)
)
# Decryption: column (14i, 9i, 13i, 11i) of InvMixColumns applied to InvSubBytes output i.
_TD0, _TD1, _TD2, _TD3 = _rotations(
    tuple(
        (gf_mul(i, 14) << 24) | (gf_mul(i, 9) << 16) | (gf_mul(i, 13) << 8) | gf_mul(i, 11)
        for i in INV_SBOX
    )
)
# Last round (no MixColumns): the S-boxes pre-shifted into each byte lane. Only 256-entry
# tables, so that they stay in cache between activations (docs/performance.md).
_S3, _S2, _S1, _S0 = (tuple(s << shift for s in SBOX) for shift in (24, 16, 8, 0))
_I3, _I2, _I1, _I0 = (tuple(i << shift for i in INV_SBOX) for shift in (24, 16, 8, 0))

_Words = tuple[int, int, int, int]  # a block or a round key as four column words
_INNER_ROUNDS = 9  # rounds 1..9, unrolled in the chains; Rijndael-160 has a 10th (``extra``)


def _inv_mix_column(word: int) -> int:
    """InvMixColumns of one word, using Td(S(x)) = InvMixColumns column of x."""
    return (
        _TD0[SBOX[word >> 24]]
        ^ _TD1[SBOX[(word >> 16) & 0xFF]]
        ^ _TD2[SBOX[(word >> 8) & 0xFF]]
        ^ _TD3[SBOX[word & 0xFF]]
    )


def _flatten(inner: Sequence[_Words]) -> tuple[tuple[int, ...], _Words | None]:
    """The inner round keys as the chains take them: 36 words, and the extra round's key."""
    body = tuple(word for rk in inner[:_INNER_ROUNDS] for word in rk)
    return body, (inner[_INNER_ROUNDS] if len(inner) > _INNER_ROUNDS else None)


def _xor(left: bytes, right: bytes) -> bytes:
    return (int.from_bytes(left) ^ int.from_bytes(right)).to_bytes(len(left))


MAX_WIDTH: Final = 64
"""Blocks per wide step. Masks and round keys take ~41 integers of 16 bytes per block of
width, so caching every width up to this costs ~1.4 MB per key; longer inputs go through
in steps of this many blocks."""


_SUB: Final = bytes(SBOX)
_INV_SUB: Final = bytes(INV_SBOX)
# Translation tables: SubBytes fused with the MixColumns multiples (x2 for encryption) and
# InvSubBytes fused with the InvMixColumns ones (x14, x11, x13, x9 for decryption).
_SUB2: Final = bytes(gf_mul(s, 2) for s in _SUB)
_I14, _I11, _I13, _I9 = (bytes(gf_mul(i, m) for i in _INV_SUB) for m in (14, 11, 13, 9))


def _byte_mask(positions: set[int]) -> int:
    """A 128-bit mask with 0xFF at the given byte indexes of a block."""
    return int.from_bytes(bytes(0xFF if i in positions else 0 for i in range(BLOCK_SIZE)))


def _repeat(value: int, count: int) -> int:
    """A 128-bit value repeated for ``count`` consecutive blocks."""
    return int.from_bytes(value.to_bytes(BLOCK_SIZE) * count)


def _inv_mix_block(value: int) -> int:
    """InvMixColumns of one 16-byte value (FIPS-197 5.3.3), for the decryption round keys."""
    data = value.to_bytes(BLOCK_SIZE)
    out = bytearray(BLOCK_SIZE)
    for column in range(0, BLOCK_SIZE, 4):
        a = data[column : column + 4]
        for row in range(4):
            out[column + row] = (
                gf_mul(a[row], 14)
                ^ gf_mul(a[(row + 1) % 4], 11)
                ^ gf_mul(a[(row + 2) % 4], 13)
                ^ gf_mul(a[(row + 3) % 4], 9)
            )
    return int.from_bytes(out)


# Per-block masks. Row 0 of every column (byte indexes 4c), which ShiftRows leaves alone.
_ROW0: Final = _byte_mask({4 * c for c in range(4)})
# Rotation by k = 1, 2, 3 bytes inside every column word, bringing row r + k to row r: the
# rows that move up (shifted left 8k bits) and the ones that wrap around (right 32 - 8k).
_ROTATE: Final = tuple(
    (
        _byte_mask({4 * c + r for c in range(4) for r in range(4 - k)}),
        _byte_mask({4 * c + r for c in range(4) for r in range(4 - k, 4)}),
    )
    for k in range(1, 4)
)
# ShiftRows takes row r of column c from column c + r (mod 4); InvShiftRows from c - r. In
# each, the destination columns are split by whether the source lies to the right (a left
# shift by 32r bits) or, wrapping, to the left (a right shift by 128 - 32r bits). The six
# shifts are all different, so each destination mask alone picks the right source bytes:
# the whole state is shifted, with no mask for the source row first (one AND less a shift).
_SHIFT_LEFT_KEEP: Final = tuple(
    _byte_mask({4 * c + r for c in range(4) if c + r < 4}) for r in range(4)
)
_SHIFT_LEFT_WRAP: Final = tuple(
    _byte_mask({4 * c + r for c in range(4) if c + r >= 4}) for r in range(4)
)
_SHIFT_RIGHT_KEEP: Final = tuple(
    _byte_mask({4 * c + r for c in range(4) if c - r >= 0}) for r in range(4)
)
_SHIFT_RIGHT_WRAP: Final = tuple(
    _byte_mask({4 * c + r for c in range(4) if c - r < 0}) for r in range(4)
)


class _Width:
    """Masks and round keys repeated for one number of blocks."""

    __slots__ = (
        "dec_keys",
        "enc_keys",
        "inv_shift",
        "nbytes",
        "rotate",
        "row0",
        "shift",
    )

    def __init__(self, blocks: int, enc_keys: Sequence[int], dec_keys: Sequence[int]) -> None:
        self.nbytes = BLOCK_SIZE * blocks
        self.row0 = _repeat(_ROW0, blocks)
        self.rotate = tuple((_repeat(up, blocks), _repeat(wrap, blocks)) for up, wrap in _ROTATE)
        self.shift = tuple(
            (_repeat(_SHIFT_LEFT_KEEP[r], blocks), _repeat(_SHIFT_LEFT_WRAP[r], blocks))
            for r in range(1, 4)
        )
        self.inv_shift = tuple(
            (_repeat(_SHIFT_RIGHT_KEEP[r], blocks), _repeat(_SHIFT_RIGHT_WRAP[r], blocks))
            for r in range(1, 4)
        )
        self.enc_keys = tuple(_repeat(key, blocks) for key in enc_keys)
        self.dec_keys = tuple(_repeat(key, blocks) for key in dec_keys)


class WideRounds:
    """ECB decryption and side-by-side CBC encryption, a round of all blocks per step.

    ``round_keys`` are rk0..rkNr as 16-byte values, tweaks already applied (spec 5.2). The
    block count of a step sets its width, at most :data:`MAX_WIDTH` blocks; every width used
    is cached, so the memory they take is bounded whatever the batches (a host sees a few
    message and batch sizes). The caller checks the arguments.
    """

    __slots__ = ("_dec_keys", "_enc_keys", "_widths")

    def __init__(self, round_keys: Sequence[bytes]) -> None:
        if len(round_keys) < 2 or any(len(key) != BLOCK_SIZE for key in round_keys):
            raise ValueError("round keys must be at least two 16-byte values")
        self._enc_keys = tuple(int.from_bytes(key) for key in round_keys)
        # Equivalent inverse cipher (FIPS-197 5.3.5): InvMixColumns applied to inner keys,
        # taken in reverse order, so that every round is InvSub, InvShift, InvMix, AddKey.
        inner = tuple(_inv_mix_block(key) for key in self._enc_keys[1:-1])
        self._dec_keys = (self._enc_keys[-1], *reversed(inner), self._enc_keys[0])
        self._widths: dict[int, _Width] = {}

    def width(self, blocks: int) -> _Width:
        """The masks and keys for ``blocks`` blocks (1 to :data:`MAX_WIDTH`), cached."""
        width = self._widths.get(blocks)
        if width is None:
            if not 1 <= blocks <= MAX_WIDTH:
                raise ValueError(f"a width is 1 to {MAX_WIDTH} blocks, not {blocks}")
            width = self._widths[blocks] = _Width(blocks, self._enc_keys, self._dec_keys)
        return width

    def decrypt_blocks(self, data: bytes) -> bytes:
        """Decrypt each 16-byte block of ``data`` independently, :data:`MAX_WIDTH` per step."""
        step = MAX_WIDTH * BLOCK_SIZE
        parts = []
        for offset in range(0, len(data), step):
            chunk = data[offset : offset + step]
            width = self.width(len(chunk) // BLOCK_SIZE)
            parts.append(self.decrypt_int(int.from_bytes(chunk), width).to_bytes(width.nbytes))
        return b"".join(parts)

    def encrypt_side_by_side(
        self, ivs: Sequence[bytes], plaintexts: Sequence[bytes]
    ) -> list[bytes]:
        """CBC-encrypt equal-length messages, block i of up to :data:`MAX_WIDTH` per step."""
        out: list[bytes] = []
        for start in range(0, len(plaintexts), MAX_WIDTH):
            out += self._side_by_side(
                ivs[start : start + MAX_WIDTH], plaintexts[start : start + MAX_WIDTH]
            )
        return out

    def _side_by_side(self, ivs: Sequence[bytes], plaintexts: Sequence[bytes]) -> list[bytes]:
        """One wide step per block position: block i of every message, chained to its own."""
        width = self.width(len(plaintexts))
        encrypt, nbytes = self.encrypt_int, width.nbytes
        chain = int.from_bytes(b"".join(ivs))
        steps: list[bytes] = []
        for offset in range(0, len(plaintexts[0]), BLOCK_SIZE):
            block = int.from_bytes(b"".join([p[offset : offset + BLOCK_SIZE] for p in plaintexts]))
            chain = encrypt(block ^ chain, width)
            steps.append(chain.to_bytes(nbytes))
        return [
            b"".join([step[i : i + BLOCK_SIZE] for step in steps])
            for i in range(0, nbytes, BLOCK_SIZE)
        ]

    def encrypt_int(self, state: int, width: _Width) -> int:
        """Encrypt the blocks packed in ``state`` (big-endian, ``width``'s block count)."""
        nbytes, row0 = width.nbytes, width.row0
        (k1, w1), (k2, w2), (k3, w3) = width.shift
        (u1, d1), (u2, d2), _ = width.rotate
        keys = width.enc_keys
        final = len(keys) - 2  # the last round has no MixColumns
        from_bytes = int.from_bytes
        state ^= keys[0]
        for number, key in enumerate(keys[1:]):
            # ShiftRows first: it commutes with SubBytes, and then one string holds it all.
            shifted = (
                (state & row0)
                | ((state << 32) & k1) | ((state >> 96) & w1)
                | ((state << 64) & k2) | ((state >> 64) & w2)
                | ((state << 96) & k3) | ((state >> 32) & w3)
            ).to_bytes(nbytes)  # fmt: skip
            s1 = from_bytes(shifted.translate(_SUB))
            if number == final:
                return s1 ^ key
            s2 = from_bytes(shifted.translate(_SUB2))
            # MixColumns row r: 2a_r ^ 3a_(r+1) ^ a_(r+2) ^ a_(r+3), with 3a = 2a ^ a:
            # s2 ^ rot1(s2 ^ s1) ^ rot2(s1 ^ rot1(s1)).
            m = s2 ^ s1
            m = ((m << 8) & u1) | ((m >> 24) & d1)
            n = s1 ^ (((s1 << 8) & u1) | ((s1 >> 24) & d1))
            n = ((n << 16) & u2) | ((n >> 16) & d2)
            state = s2 ^ m ^ n ^ key
        raise AssertionError("unreachable: the loop returns in its last round")

    def decrypt_int(self, state: int, width: _Width) -> int:
        """Decrypt the blocks packed in ``state`` (big-endian, ``width``'s block count)."""
        nbytes, row0 = width.nbytes, width.row0
        (k1, w1), (k2, w2), (k3, w3) = width.inv_shift
        (u1, d1), (u2, d2), (u3, d3) = width.rotate
        keys = width.dec_keys
        final = len(keys) - 2  # the last round has no InvMixColumns
        from_bytes = int.from_bytes
        state ^= keys[0]
        for number, key in enumerate(keys[1:]):
            shifted = (
                (state & row0)
                | ((state >> 32) & k1) | ((state << 96) & w1)
                | ((state >> 64) & k2) | ((state << 64) & w2)
                | ((state >> 96) & k3) | ((state << 32) & w3)
            ).to_bytes(nbytes)  # fmt: skip
            if number == final:
                return from_bytes(shifted.translate(_INV_SUB)) ^ key
            a14 = from_bytes(shifted.translate(_I14))
            a11 = from_bytes(shifted.translate(_I11))
            a13 = from_bytes(shifted.translate(_I13))
            a9 = from_bytes(shifted.translate(_I9))
            # InvMixColumns row r: 14a_r ^ 11a_(r+1) ^ 13a_(r+2) ^ 9a_(r+3).
            state = (
                a14
                ^ ((a11 << 8) & u1) ^ ((a11 >> 24) & d1)
                ^ ((a13 << 16) & u2) ^ ((a13 >> 16) & d2)
                ^ ((a9 << 24) & u3) ^ ((a9 >> 8) & d3)
                ^ key
            )  # fmt: skip
        raise AssertionError("unreachable: the loop returns in its last round")


class InterpretedRijndael:
    """Rijndael with a 128-bit block, a 128- or 160-bit key and optional round-key tweaks.

    ``tweaks`` maps a round number to a byte XORed into byte 0 of that round key (spec 5.2:
    ``{4: 0x73, 6: 0x09, 8: 0xE4}`` for the V6 key); ``round_keys`` are rk0..rkNr as spec 5.2
    lists them. The methods are those of :class:`protocol.kms.cipher.RijndaelCipher`.
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
        "_wide",
        "round_keys",
    )

    def __init__(self, key: bytes, *, tweaks: Mapping[int, int] | None = None) -> None:
        self.round_keys = expand_key(key, tweaks)
        enc = [_WORDS.unpack(rk) for rk in self.round_keys]
        self._enc_first, self._enc_final = enc[0], enc[-1]
        self._enc_body, self._enc_extra = _flatten(enc[1:-1])
        dec_inner = [
            (_inv_mix_column(a), _inv_mix_column(b), _inv_mix_column(c), _inv_mix_column(d))
            for a, b, c, d in reversed(enc[1:-1])
        ]
        self._dec_first, self._dec_final = enc[-1], enc[0]
        self._dec_body, self._dec_extra = _flatten(dec_inner)
        self._wide = WideRounds(self.round_keys)

    def encrypt_block(self, block: bytes) -> bytes:
        return self.cbc_encrypt(ZERO_BLOCK, block)

    def decrypt_block(self, block: bytes) -> bytes:
        check_blocks(ZERO_BLOCK, block)
        out = bytearray(len(block))
        self._decrypt_chain((0, 0, 0, 0), block, out)
        return bytes(out)

    def cbc_encrypt(self, iv: bytes, data: bytes) -> bytes:
        check_blocks(iv, data)
        out = bytearray(len(data))
        self._encrypt_chain(_WORDS.unpack(iv), data, out)
        return bytes(out)

    def cbc_decrypt(self, iv: bytes, data: bytes) -> bytes:
        """P_i = D_K(C_i) xor C_(i-1) (spec 5.4): the blocks decrypted wide, one XOR to chain."""
        check_blocks(iv, data)
        if len(data) >= _WIDE_FROM * BLOCK_SIZE:
            return _xor(self._wide.decrypt_blocks(data), iv + data[:-BLOCK_SIZE])
        out = bytearray(len(data))
        self._decrypt_chain(_WORDS.unpack(iv), data, out)
        return bytes(out)

    def cbc_mac(self, data: bytes) -> bytes:
        check_blocks(ZERO_BLOCK, data)
        return _WORDS.pack(*self._encrypt_chain((0, 0, 0, 0), data, None))

    def decrypt_blocks(self, data: bytes) -> bytes:
        check_ecb(data)
        if len(data) >= _WIDE_FROM * BLOCK_SIZE:
            return self._wide.decrypt_blocks(data)
        return self.decrypt_block(data)

    def cbc_decrypt_many(self, messages: Sequence[bytes]) -> list[bytes]:
        """All the messages' blocks decrypted in one wide pass, then each chained to its own."""
        check_messages(messages)
        if len(messages) < _WIDE_FROM:
            return [self.cbc_decrypt(ZERO_BLOCK, m) for m in messages]
        chain = b"".join([ZERO_BLOCK + m[:-BLOCK_SIZE] for m in messages])
        plain = _xor(self._wide.decrypt_blocks(b"".join(messages)), chain)
        out, offset = [], 0
        for m in messages:
            out.append(plain[offset : offset + len(m)])
            offset += len(m)
        return out

    def cbc_encrypt_many(self, ivs: Sequence[bytes], plaintexts: Sequence[bytes]) -> list[bytes]:
        check_side_by_side(ivs, plaintexts)
        if len(plaintexts) < _WIDE_FROM:
            return [self.cbc_encrypt(iv, p) for iv, p in zip(ivs, plaintexts, strict=True)]
        return self._wide.encrypt_side_by_side(ivs, plaintexts)

    # The two chains below are the pure build's per-message hot path: the whole message is
    # walked in one call with the rounds unrolled and the round keys in local variables, so a
    # block costs no function call and no loop. Between rounds the state goes through
    # ``bytes``: ``pack`` turns the four column words into 16 bytes and unpacking them gives
    # each byte a local, so a T-table index is a plain name where ``(a >> 16) & 255`` costs
    # two operations and an integer object. The byte indexes are ShiftRows: column word ``j``
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
