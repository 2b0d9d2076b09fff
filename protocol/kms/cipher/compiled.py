"""The compiled engine: Rijndael from the 256-byte S-boxes and word arithmetic, for mypyc.

Why a second engine (spec 5.2): mypyc compiles the interpreted engine's T-table chains
too, but every T-table entry is then a boxed integer in a tuple, so each of a round's 16
lookups costs a bounds check and two conversions. Here a round reads 16 bytes from a
``bytes`` S-box and does MixColumns with shifts and XORs on ``i64`` words, which mypyc turns
into plain C arithmetic. Interpreted, the same code is several times slower than the
T-tables, so only a ``KMS_HOST_MYPYC=1`` build runs it; the pure build's tests run it too, to
check the source. ``i64`` is a type for mypyc alone: every use is an annotation, so the
interpreted module needs no ``mypy_extensions``.

The state is four big-endian 32-bit column words. SubBytes with ShiftRows builds output
column ``j`` from row ``r`` of column ``j + r`` (``j - r`` for the inverse), one S-box byte
each. MixColumns of a column word ``w`` (FIPS-197 5.1.3) is ``xtime(t) ^ r ^ rotl16(t)``
with ``r = rotl8(w)`` and ``t = w ^ r``, where ``xtime`` doubles each byte in GF(2^8);
InvMixColumns (5.3.3) is MixColumns of ``w ^ xtime(xtime(w ^ rotl16(w)))``, since the
inverse matrix is the forward one times the ``[5 0 4 0]`` circulant. Decryption is the
straightforward inverse cipher (5.3), so it runs on the (tweaked) encryption round keys as
they are. Compiled, a loop of blocks is as fast as any batching, so the batch methods loop.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from protocol.kms.cipher._shared import (
    INV_SBOX,
    SBOX,
    check_blocks,
    check_ecb,
    check_messages,
    check_side_by_side,
    expand_key,
)

if TYPE_CHECKING:
    from mypy_extensions import i64

    _Block = tuple[i64, i64, i64, i64]

__all__ = ["CompiledRijndael"]

_WORDS = struct.Struct(">4I")
_ZERO_BLOCK = bytes(16)
_SB: Final = bytes(SBOX)
_IB: Final = bytes(INV_SBOX)
_INNER_ROUNDS = 9  # rounds unrolled in the chains; Rijndael-160 has a 10th inner round


def _sub_word(a: i64, b: i64, c: i64, d: i64) -> i64:
    """S-box of the row-0 byte of ``a``, row 1 of ``b``, row 2 of ``c`` and row 3 of ``d``."""
    s = _SB
    y0: i64 = s[a >> 24]
    y1: i64 = s[(b >> 16) & 255]
    y2: i64 = s[(c >> 8) & 255]
    y3: i64 = s[d & 255]
    return (y0 << 24) | (y1 << 16) | (y2 << 8) | y3


def _inv_sub_word(a: i64, b: i64, c: i64, d: i64) -> i64:
    """:func:`_sub_word` with the inverse S-box."""
    s = _IB
    y0: i64 = s[a >> 24]
    y1: i64 = s[(b >> 16) & 255]
    y2: i64 = s[(c >> 8) & 255]
    y3: i64 = s[d & 255]
    return (y0 << 24) | (y1 << 16) | (y2 << 8) | y3


def _mix(w: i64) -> i64:
    """MixColumns of one column word (module docstring)."""
    r = ((w << 8) | (w >> 24)) & 0xFFFFFFFF
    t = w ^ r
    doubled = ((t << 1) & 0xFEFEFEFE) ^ (((t >> 7) & 0x01010101) * 0x1B)
    return doubled ^ r ^ (((t << 16) | (t >> 16)) & 0xFFFFFFFF)


def _inv_mix(w: i64) -> i64:
    """InvMixColumns of one column word: MixColumns after ``w ^ 4 * (w ^ rotl16(w))``."""
    t = w ^ (((w << 16) | (w >> 16)) & 0xFFFFFFFF)
    t = ((t << 1) & 0xFEFEFEFE) ^ (((t >> 7) & 0x01010101) * 0x1B)
    t = ((t << 1) & 0xFEFEFEFE) ^ (((t >> 7) & 0x01010101) * 0x1B)
    return _mix(w ^ t)


def _round(state: _Block, key: _Block) -> _Block:
    """SubBytes, ShiftRows, MixColumns, AddRoundKey (FIPS-197 5.1)."""
    a0, a1, a2, a3 = state
    return (
        _mix(_sub_word(a0, a1, a2, a3)) ^ key[0],
        _mix(_sub_word(a1, a2, a3, a0)) ^ key[1],
        _mix(_sub_word(a2, a3, a0, a1)) ^ key[2],
        _mix(_sub_word(a3, a0, a1, a2)) ^ key[3],
    )


def _inv_round(state: _Block, key: _Block) -> _Block:
    """InvShiftRows, InvSubBytes, AddRoundKey, InvMixColumns (FIPS-197 5.3)."""
    a0, a1, a2, a3 = state
    return (
        _inv_mix(_inv_sub_word(a0, a3, a2, a1) ^ key[0]),
        _inv_mix(_inv_sub_word(a1, a0, a3, a2) ^ key[1]),
        _inv_mix(_inv_sub_word(a2, a1, a0, a3) ^ key[2]),
        _inv_mix(_inv_sub_word(a3, a2, a1, a0) ^ key[3]),
    )


def _last(state: _Block, key: _Block) -> _Block:
    """The last round: no MixColumns (FIPS-197 5.1)."""
    a0, a1, a2, a3 = state
    return (
        _sub_word(a0, a1, a2, a3) ^ key[0],
        _sub_word(a1, a2, a3, a0) ^ key[1],
        _sub_word(a2, a3, a0, a1) ^ key[2],
        _sub_word(a3, a0, a1, a2) ^ key[3],
    )


def _inv_last(state: _Block, key: _Block) -> _Block:
    """The last round of the inverse cipher: no InvMixColumns (FIPS-197 5.3)."""
    a0, a1, a2, a3 = state
    return (
        _inv_sub_word(a0, a3, a2, a1) ^ key[0],
        _inv_sub_word(a1, a0, a3, a2) ^ key[1],
        _inv_sub_word(a2, a1, a0, a3) ^ key[2],
        _inv_sub_word(a3, a2, a1, a0) ^ key[3],
    )


class CompiledRijndael:
    """The interpreted engine's cipher, computed without T-tables (module docstring).

    ``tweaks`` maps a round number to a byte XORed into byte 0 of that round key (spec 5.2);
    ``round_keys`` are rk0..rkNr as spec 5.2 lists them. The methods are those of
    :class:`protocol.kms.cipher.RijndaelCipher`.
    """

    __slots__ = ("_extra", "_final", "_first", "_inner", "round_keys")

    def __init__(self, key: bytes, *, tweaks: Mapping[int, int] | None = None) -> None:
        self.round_keys: tuple[bytes, ...] = expand_key(key, tweaks)
        words: list[_Block] = [_WORDS.unpack(rk) for rk in self.round_keys]
        self._first, self._final = words[0], words[-1]
        self._inner = tuple(words[1 : 1 + _INNER_ROUNDS])
        self._extra = words[-2] if len(words) > _INNER_ROUNDS + 2 else None

    def encrypt_block(self, block: bytes) -> bytes:
        return self.cbc_encrypt(_ZERO_BLOCK, block)

    def decrypt_block(self, block: bytes) -> bytes:
        return self.cbc_decrypt(_ZERO_BLOCK, block)

    def cbc_encrypt(self, iv: bytes, data: bytes) -> bytes:
        check_blocks(iv, data)
        out = bytearray(len(data))
        self._encrypt_chain(_WORDS.unpack(iv), data, out)
        return bytes(out)

    def cbc_decrypt(self, iv: bytes, data: bytes) -> bytes:
        check_blocks(iv, data)
        out = bytearray(len(data))
        self._decrypt_chain(_WORDS.unpack(iv), data, out, True)
        return bytes(out)

    def cbc_mac(self, data: bytes) -> bytes:
        check_blocks(_ZERO_BLOCK, data)
        return _WORDS.pack(*self._encrypt_chain((0, 0, 0, 0), data, None))

    def decrypt_blocks(self, data: bytes) -> bytes:
        check_ecb(data)
        out = bytearray(len(data))
        self._decrypt_chain((0, 0, 0, 0), data, out, False)
        return bytes(out)

    def cbc_decrypt_many(self, messages: Sequence[bytes]) -> list[bytes]:
        check_messages(messages)
        return [self.cbc_decrypt(_ZERO_BLOCK, m) for m in messages]

    def cbc_encrypt_many(self, ivs: Sequence[bytes], plaintexts: Sequence[bytes]) -> list[bytes]:
        check_side_by_side(ivs, plaintexts)
        return [self.cbc_encrypt(iv, p) for iv, p in zip(ivs, plaintexts, strict=True)]

    # Both chains walk a whole message per call with the round keys in locals, as the
    # T-table chains do; a round is one native call here, since mypyc does not inline.
    # ``chained`` False makes decryption ECB: no block is XORed with the one before.

    def _encrypt_chain(self, iv: _Block, data: bytes, out: bytearray | None) -> _Block:
        first, final, extra = self._first, self._final, self._extra
        r1, r2, r3, r4, r5, r6, r7, r8, r9 = self._inner
        p0: i64
        p1: i64
        p2: i64
        p3: i64
        c0, c1, c2, c3 = iv
        for offset in range(0, len(data), 16):
            p0, p1, p2, p3 = _WORDS.unpack_from(data, offset)
            state = _round(
                (p0 ^ c0 ^ first[0], p1 ^ c1 ^ first[1], p2 ^ c2 ^ first[2], p3 ^ c3 ^ first[3]), r1
            )
            state = _round(_round(_round(_round(state, r2), r3), r4), r5)
            state = _round(_round(_round(_round(state, r6), r7), r8), r9)
            if extra is not None:
                state = _round(state, extra)
            c0, c1, c2, c3 = _last(state, final)
            if out is not None:
                _WORDS.pack_into(out, offset, c0, c1, c2, c3)
        return c0, c1, c2, c3

    def _decrypt_chain(self, iv: _Block, data: bytes, out: bytearray, chained: bool) -> None:
        first, final, extra = self._first, self._final, self._extra
        r1, r2, r3, r4, r5, r6, r7, r8, r9 = self._inner
        c0: i64
        c1: i64
        c2: i64
        c3: i64
        v0, v1, v2, v3 = iv
        for offset in range(0, len(data), 16):
            c0, c1, c2, c3 = _WORDS.unpack_from(data, offset)
            state: _Block = (c0 ^ final[0], c1 ^ final[1], c2 ^ final[2], c3 ^ final[3])
            if extra is not None:
                state = _inv_round(state, extra)
            state = _inv_round(_inv_round(_inv_round(_inv_round(state, r9), r8), r7), r6)
            state = _inv_round(_inv_round(_inv_round(_inv_round(state, r5), r4), r3), r2)
            p0, p1, p2, p3 = _inv_last(_inv_round(state, r1), first)
            _WORDS.pack_into(out, offset, p0 ^ v0, p1 ^ v1, p2 ^ v2, p3 ^ v3)
            if chained:
                v0, v1, v2, v3 = c0, c1, c2, c3
