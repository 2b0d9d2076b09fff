"""The interpreted engine's batch half: one round of many independent blocks per step.

Why (spec 5.4): interpreted, a T-table round costs 16 lookups per block, but most of a
message's blocks do not depend on each other. CBC *decryption* is one independent block
decryption per ciphertext block (P_i = D_K(C_i) xor C_(i-1)), and CBC *encryption* of several
messages can advance all of them one block per step. Here a step processes n blocks with a
fixed number of C-level operations on one 128n-bit integer and one 16n-byte string, whatever
n is: ``bytes.translate`` does SubBytes with the GF(2^8) multiples MixColumns needs, masks
and shifts do ShiftRows and the byte rotations inside each column, and XOR adds the round key
to every block at once. Only :mod:`protocol.kms.cipher.interpreted` uses it; compiled code
runs a block's rounds faster one block at a time.

Layout: the blocks are concatenated in order and read as one big-endian integer, so byte
``i`` of a block is row ``i % 4`` of column ``i // 4`` (FIPS-197 3.4), and inside each
32-bit column word row 0 is the most significant byte. Masks and round keys are repeated
once per block; they depend on n only, so each width is built once and cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from protocol.kms.cipher._shared import BLOCK_SIZE, INV_SBOX, SBOX, gf_mul

__all__ = ["MAX_WIDTH", "WideRounds"]

MAX_WIDTH: Final = 64
"""Blocks per wide step. Masks and round keys take ~41 integers of 16 bytes per block of
width, so caching every width up to this costs ~1.4 MB per key; longer inputs go through
in steps of this many blocks."""


_S: Final = bytes(SBOX)
_INV_S: Final = bytes(INV_SBOX)
# Translation tables: SubBytes fused with the MixColumns multiples (x2 for encryption) and
# InvSubBytes fused with the InvMixColumns ones (x14, x11, x13, x9 for decryption).
_S2: Final = bytes(gf_mul(s, 2) for s in _S)
_I14, _I11, _I13, _I9 = (bytes(gf_mul(i, m) for i in _INV_S) for m in (14, 11, 13, 9))


def _byte_mask(positions: set[int]) -> int:
    """A 128-bit mask with 0xFF at the given byte indexes of a block."""
    return int.from_bytes(bytes(0xFF if i in positions else 0 for i in range(BLOCK_SIZE)))


def _repeat(value: int, count: int) -> int:
    """A 128-bit value repeated for ``count`` consecutive blocks."""
    return int.from_bytes(value.to_bytes(BLOCK_SIZE) * count)


def _inv_mix_columns(value: int) -> int:
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
        inner = tuple(_inv_mix_columns(key) for key in self._enc_keys[1:-1])
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
            s1 = from_bytes(shifted.translate(_S))
            if number == final:
                return s1 ^ key
            s2 = from_bytes(shifted.translate(_S2))
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
                return from_bytes(shifted.translate(_INV_S)) ^ key
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
