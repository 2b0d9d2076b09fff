"""KMS crypto building blocks shared by the host side and the client side of the protocol.

Spec 5.1 gives the keys, 5.2 the three cipher variants, 5.3 the V4 MAC, 5.4 the CBC framing
and 5.6 the V6 HMAC. V5 is standard AES-128 and goes through ``cryptography``; V4
(Rijndael-160) and V6 (AES-128 with tweaked round keys) go through
:mod:`protocol.kms.cipher`, whose engine suits the installation. The cipher instances are
built once, at import: the keys are protocol constants.

Every cipher offers the operations the protocol needs. ``decrypt_block`` gives the
"decrypted IV" values Dc and Ds of spec 5.4; CBC with an all-zero IV over
``IV || ciphertext`` (spec 5.4 view B) yields ``D_K(IV) || plaintext`` in one pass, which
the openers use.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocol.kms import cipher, codec
from protocol.kms.messages import ProtocolVersion

__all__ = [
    "BLOCK_SIZE",
    "V5_CIPHER",
    "V6_CIPHER",
    "ZERO_BLOCK",
    "CbcCipher",
    "Rng",
    "cipher_for",
    "draw_block",
    "require_ivs",
    "seal_envelope",
    "seal_v6_envelopes",
    "strip_pkcs7",
    "v4_mac",
    "v6_hmac",
    "v6_hmac_key",
    "xor_blocks",
]

Rng = Callable[[int], bytes]
"""Source of random bytes: ``os.urandom`` in the daemon, a fixed sequence in tests."""

BLOCK_SIZE: Final = 16
ZERO_BLOCK: Final = bytes(BLOCK_SIZE)

# Public protocol constants (spec 5.1), identical in vlmcsd and py-kms.
_K4: Final = bytes.fromhex("053D8307F9E5F088EB5EA6686CF037C7E4EFD2D6")
_K5: Final = bytes.fromhex("CD7E796F2AB25DCB55FFC8EF8364C470")
_K6: Final = bytes.fromhex("A94A4195E201432D9BCB460405D84A21")
_V6_TWEAKS: Final = {4: 0x73, 6: 0x09, 8: 0xE4}


# V6 HMAC time slot (spec 5.1, 5.6): slot = (T // C1) * C2 + C3 in unsigned 64-bit arithmetic.
_C1: Final = 0x00000022816889BD
_C2: Final = 0x000000208CBAB5ED
_C3: Final = 0x3156CD5AC628477A
_U64: Final = (1 << 64) - 1


class CbcCipher(Protocol):
    """What the KMS message crypto needs from a block cipher (spec 5.4)."""

    def decrypt_block(self, block: bytes) -> bytes:
        """Single-block decryption D_K(block)."""
        ...

    def cbc_encrypt(self, iv: bytes, plaintext: bytes) -> bytes:
        """CBC-encrypt whole blocks (the caller pads)."""
        ...

    def cbc_decrypt(self, iv: bytes, ciphertext: bytes) -> bytes:
        """CBC-decrypt whole blocks (the caller checks and strips padding)."""
        ...


class _AesCbc:
    """Standard AES-128 through ``cryptography`` (the V5 cipher, spec 5.2)."""

    __slots__ = ("_algorithm",)

    def __init__(self, key: bytes) -> None:
        self._algorithm = algorithms.AES(key)

    def decrypt_block(self, block: bytes) -> bytes:
        return self.cbc_decrypt(ZERO_BLOCK, block)

    def cbc_encrypt(self, iv: bytes, plaintext: bytes) -> bytes:
        encryptor = Cipher(self._algorithm, modes.CBC(iv)).encryptor()
        return encryptor.update(plaintext) + encryptor.finalize()

    def cbc_decrypt(self, iv: bytes, ciphertext: bytes) -> bytes:
        decryptor = Cipher(self._algorithm, modes.CBC(iv)).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()


def _add_pkcs7(data: bytes) -> bytes:
    """Append PKCS#7 padding: always 1..16 bytes, a whole block when aligned (spec 5.4, 10.15)."""
    count = BLOCK_SIZE - len(data) % BLOCK_SIZE
    return data + bytes((count,)) * count


def strip_pkcs7(data: bytes) -> bytes | None:
    """Remove PKCS#7 padding, or return ``None`` if it is not valid (spec 5.6, 5.7).

    Each caller turns ``None`` into its own error: an HRESULT on the server, a failed
    client check on the client.
    """
    count = data[-1] if data else 0
    if not 1 <= count <= BLOCK_SIZE or len(data) < count or data[-count:] != data[-1:] * count:
        return None
    return data[:-count]


_V4_CIPHER: Final = cipher.rijndael(_K4)
V5_CIPHER: Final = _AesCbc(_K5)
V6_CIPHER: Final = cipher.rijndael(_K6, tweaks=_V6_TWEAKS)


def v4_mac(message: bytes) -> bytes:
    """The V4 MAC: CBC-MAC under Rijndael-160 with ISO/IEC 9797-1 padding 2 (spec 5.3).

    No CMAC subkeys: the ``80 00..00`` padding is always appended, a whole block of it when
    the message is already block-aligned.
    """
    return _V4_CIPHER.cbc_mac(message + b"\x80" + bytes(-(len(message) + 1) % BLOCK_SIZE))


def cipher_for(version: ProtocolVersion) -> CbcCipher:
    """The cipher of an encrypted version: plain AES-128 for V5, the tweaked one for V6."""
    return V5_CIPHER if version == ProtocolVersion.V5 else V6_CIPHER


def seal_envelope(version: ProtocolVersion, iv: bytes, payload: bytes) -> bytes:
    """``version || IV || CBC_Enc(K, IV, PKCS7(payload))`` (spec 4.4, 4.7, 4.8)."""
    ciphertext = cipher_for(version).cbc_encrypt(iv, _add_pkcs7(payload))
    return codec.build_envelope(codec.Envelope(version.value, 0, iv, ciphertext))


def seal_v6_envelopes(ivs: Sequence[bytes], payloads: Sequence[bytes]) -> list[bytes]:
    """``seal_envelope(V6, iv, payload)`` of each pair, equal-sized ones side by side."""
    padded = [_add_pkcs7(payload) for payload in payloads]
    by_size: dict[int, list[int]] = {}
    for index, data in enumerate(padded):
        by_size.setdefault(len(data), []).append(index)
    sealed = [b""] * len(padded)
    for indexes in by_size.values():
        group_ivs = [ivs[i] for i in indexes]
        ciphertexts = V6_CIPHER.cbc_encrypt_many(group_ivs, [padded[i] for i in indexes])
        for index, iv, ciphertext in zip(indexes, group_ivs, ciphertexts, strict=True):
            envelope = codec.Envelope(ProtocolVersion.V6.value, 0, iv, ciphertext)
            sealed[index] = codec.build_envelope(envelope)
    return sealed


def xor_blocks(left: bytes, right: bytes) -> bytes:
    """Bytewise XOR of two equal-length values (blocks or whole messages), as one integer XOR."""
    return (int.from_bytes(left) ^ int.from_bytes(right)).to_bytes(len(left))


def draw_block(rng: Rng) -> bytes:
    """16 bytes from ``rng``; a wrong length is a programming error, not bad input."""
    value = rng(BLOCK_SIZE)
    if len(value) != BLOCK_SIZE:
        raise ValueError(f"rng returned {len(value)} bytes instead of {BLOCK_SIZE}")
    return value


def require_ivs(
    version: ProtocolVersion, iv: bytes | None, decrypted_iv: bytes | None
) -> tuple[bytes, bytes]:
    """The request IV and its decryption, which every V5/V6 reply needs (spec 5.6, 5.7)."""
    if iv is None or decrypted_iv is None:
        raise ValueError(f"a KMS v{version.value} exchange needs the request IV and its decryption")
    return iv, decrypted_iv


def v6_hmac_key(response_time: int, slot_shift: int = 0) -> bytes:
    """The last 16 bytes of SHA-256 over the u64le time slot of ``response_time`` (spec 5.6).

    ``slot_shift`` adds that many times C1 to the slot value (not to T): vlmcsd's client
    accepts shifts -1, 0 and +1, an odd tolerance that never matters for an echoed time.
    A host always uses 0.
    """
    slot = ((response_time // _C1) * _C2 + _C3 + slot_shift * _C1) & _U64
    return hashlib.sha256(slot.to_bytes(8, "little")).digest()[16:]


def v6_hmac(key: bytes, decrypted_iv: bytes, body: bytes) -> bytes:
    """The HMAC field: bytes 16..31 of HMAC-SHA256(key, Ds || body) (spec 4.8, 5.6)."""
    return hmac.digest(key, decrypted_iv + body, "sha256")[16:]
