"""What every engine shares: the S-boxes, the tweaked key schedule and the argument checks.

Why one schedule for all engines (spec 5.2, 10.14): the two variants differ from AES only in
their round keys (Rijndael-160 expands a 20-byte key into 12 of them; V6 XORs a constant into
byte 0 of rk4, rk6 and rk8 after the full expansion), so computing the round keys once, here,
keeps the engines from disagreeing about them. ``cryptography`` exposes neither a 160-bit key
nor the key schedule, which is why any of this exists. The checks are here so that every
engine rejects the same inputs with the same message.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

__all__ = [
    "BLOCK_SIZE",
    "INV_SBOX",
    "SBOX",
    "ZERO_BLOCK",
    "check_blocks",
    "check_ecb",
    "check_messages",
    "check_side_by_side",
    "expand_key",
    "gf_mul",
]

BLOCK_SIZE = 16
ZERO_BLOCK = bytes(BLOCK_SIZE)


def _xtime(value: int) -> int:
    """Multiply by x (that is, 2) in GF(2^8) modulo the AES polynomial x^8+x^4+x^3+x+1."""
    value <<= 1
    return value ^ 0x11B if value & 0x100 else value


def gf_mul(a: int, b: int) -> int:
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


SBOX = _build_sbox()
INV_SBOX = tuple(SBOX.index(byte) for byte in range(256))


def expand_key(key: bytes, tweaks: Mapping[int, int] | None = None) -> tuple[bytes, ...]:
    """The round keys rk0..rkNr, 16 bytes each and tweaked, as spec 5.2 lists them.

    Rijndael key expansion (FIPS-197 5.2) for Nk = 4 (AES-128, V5/V6) or 5 (V4), so the extra
    SubWord step of Nk > 6 never applies. ``tweaks`` maps a round number to a byte XORed into
    byte 0 of that round key after the whole expansion, so it does not propagate.
    """
    if len(key) not in (16, 20):
        raise ValueError(f"Rijndael key must be 16 or 20 bytes, not {len(key)}")
    nk = len(key) // 4
    rounds = nk + 6
    words = list(struct.unpack(f">{nk}I", key))
    rcon = 1
    for i in range(nk, 4 * (rounds + 1)):
        temp = words[i - 1]
        if i % nk == 0:
            temp = (
                (SBOX[(temp >> 16) & 0xFF] << 24)
                | (SBOX[(temp >> 8) & 0xFF] << 16)
                | (SBOX[temp & 0xFF] << 8)
                | SBOX[temp >> 24]
            ) ^ (rcon << 24)
            rcon = _xtime(rcon)
        words.append(words[i - nk] ^ temp)
    for round_number, value in (tweaks or {}).items():
        if not 0 <= round_number <= rounds or not 0 <= value <= 0xFF:
            raise ValueError(f"invalid round-key tweak {round_number}: {value:#x}")
        words[4 * round_number] ^= value << 24
    return tuple(struct.pack(">4I", *words[i : i + 4]) for i in range(0, len(words), 4))


def check_blocks(iv: bytes, data: bytes) -> None:
    """CBC takes a 16-byte IV and whole blocks; the caller pads (spec 5.4)."""
    if len(iv) != BLOCK_SIZE or len(data) % BLOCK_SIZE:
        raise ValueError(
            f"CBC needs a 16-byte IV and whole 16-byte blocks, got {len(iv)} and {len(data)} bytes"
        )


def check_ecb(data: bytes) -> None:
    """Independent blocks: at least one, and whole ones."""
    if not data or len(data) % BLOCK_SIZE:
        raise ValueError(f"need whole 16-byte blocks, got {len(data)} bytes")


def check_messages(messages: Sequence[bytes]) -> None:
    """Several CBC decryptions under a zero IV (spec 5.4 view B): whole blocks in each."""
    if any(not m or len(m) % BLOCK_SIZE for m in messages):
        raise ValueError("CBC needs whole 16-byte blocks in every message")


def check_side_by_side(ivs: Sequence[bytes], plaintexts: Sequence[bytes]) -> int:
    """Several CBC encryptions side by side need one IV each and one length; return it."""
    size = len(plaintexts[0]) if plaintexts else 0
    if len(ivs) != len(plaintexts) or any(len(p) != size for p in plaintexts):
        raise ValueError("side-by-side CBC needs one IV per message and equal lengths")
    if size % BLOCK_SIZE or any(len(iv) != BLOCK_SIZE for iv in ivs):
        raise ValueError(f"CBC needs 16-byte IVs and whole 16-byte blocks, got {size} bytes")
    return size
