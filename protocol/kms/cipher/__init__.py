"""The Rijndael variants of KMS V4 and V6, and the one place that picks their engine.

Why this package (spec 5.2, 10.14): V4 MACs with Rijndael under a 160-bit key (Nk = 5, 11
rounds) and V6 encrypts with AES-128 whose round keys 4, 6 and 8 are tweaked; ``cryptography``
can do neither, so both are computed here (V5, standard AES, stays with ``cryptography``).
Spec 5.3 (the V4 MAC's padding) and 5.4 (the CBC framing) are the callers' business in
:mod:`protocol.kms._primitives`; this package offers the block operations they need.

Two engines compute the same cipher, each fastest where it runs:

* :mod:`~protocol.kms.cipher.interpreted`, for the interpreter: T-table chains, and the
  independent blocks of a message or a batch a round of all at once;
* :mod:`~protocol.kms.cipher.compiled`, for mypyc (``KMS_HOST_MYPYC=1``): S-box bytes and
  native word arithmetic, a block at a time.

Python imports an extension module in preference to the ``.py`` beside it, so no setting
says which build is installed: :func:`compiled_build` asks the imported module, and
:data:`rijndael` is the compiled engine exactly when it is compiled. Both take the key and
the tweaks and expand the keys with :func:`~protocol.kms.cipher._shared.expand_key`; the
protocol's keys are constants, so callers build one instance per key at import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Final, Protocol

from protocol.kms.cipher import compiled as _compiled_module
from protocol.kms.cipher.compiled import CompiledRijndael
from protocol.kms.cipher.interpreted import InterpretedRijndael

__all__ = ["ENGINES", "Engine", "RijndaelCipher", "compiled_build", "engine_name", "rijndael"]


class RijndaelCipher(Protocol):
    """What the KMS message layer needs from a Rijndael instance (spec 5.3-5.6).

    Every method takes whole 16-byte blocks (the caller pads) and raises ``ValueError``
    otherwise, with the same message in every engine.
    """

    round_keys: tuple[bytes, ...]
    """rk0..rkNr, 16 bytes each, tweaks applied: the form spec 5.2 lists them in."""

    def encrypt_block(self, block: bytes) -> bytes:
        """E_K(block)."""
        ...

    def decrypt_block(self, block: bytes) -> bytes:
        """D_K(block): the "decrypted IV" values Dc and Ds of spec 5.4."""
        ...

    def cbc_encrypt(self, iv: bytes, data: bytes) -> bytes:
        """CBC encryption under ``iv``."""
        ...

    def cbc_decrypt(self, iv: bytes, data: bytes) -> bytes:
        """CBC decryption under ``iv``."""
        ...

    def cbc_mac(self, data: bytes) -> bytes:
        """The last block of the CBC encryption of ``data`` under a zero IV (the V4 MAC's)."""
        ...

    def decrypt_blocks(self, data: bytes) -> bytes:
        """D_K of each of one or more blocks, independently (the Ds values of a V6 batch)."""
        ...

    def cbc_decrypt_many(self, messages: Sequence[bytes]) -> list[bytes]:
        """``cbc_decrypt(ZERO_BLOCK, m)`` of each message: spec 5.4 view B, ``IVc || C``."""
        ...

    def cbc_encrypt_many(self, ivs: Sequence[bytes], plaintexts: Sequence[bytes]) -> list[bytes]:
        """``cbc_encrypt(iv, p)`` of each pair; the plaintexts have one length."""
        ...


class Engine(Protocol):
    """An engine's class: a key (16 or 20 bytes) and its round-key tweaks in, a cipher out."""

    def __call__(self, key: bytes, *, tweaks: Mapping[int, int] | None = None) -> RijndaelCipher:
        """The cipher under ``key``; ``tweaks`` maps a round to the byte XORed into its byte 0."""
        ...


def compiled_build() -> bool:
    """Whether :mod:`protocol.kms.cipher.compiled` was imported from its mypyc extension."""
    return str(_compiled_module.__file__).endswith(tuple(EXTENSION_SUFFIXES))


ENGINES: Final[Mapping[str, Engine]] = {
    "interpreted": InterpretedRijndael,
    "compiled": CompiledRijndael,
}
"""Both engines, for the tests; interpreted, the compiled one is its source, and slow."""

engine_name: Final = "compiled" if compiled_build() else "interpreted"
"""The engine this process runs: the choice, made here and nowhere else."""

rijndael: Final[Engine] = ENGINES[engine_name]
"""The engine's class: ``rijndael(key, tweaks=...)`` builds the cipher the host uses."""
