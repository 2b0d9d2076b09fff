"""The compact Rijndael's source is always tested, whichever build the package imports.

``protocol/kms/rijndael_compact.py`` is what a ``KMS_HOST_MYPYC=1`` build compiles with mypyc
(docs/performance.md); Python then imports the extension module in its place. This file
loads the *source* under another name and holds the imported module to it, so that a
compiled build is checked against the interpreted code, and that code itself still meets
FIPS-197 when a compiled build shadows it. (``test_rijndael_compact`` holds whichever is
imported to the spec's vectors and to the T-table cipher.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kms_vectors import h, spec_vectors

from protocol.kms import rijndael_build, rijndael_compact
from protocol.kms.rijndael import Rijndael

SOURCE = Path(__file__).resolve().parents[2] / "protocol" / "kms" / "rijndael_compact.py"
V6_TWEAKS = {4: 0x73, 6: 0x09, 8: 0xE4}


def _load_source() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_source_rijndael_compact", SOURCE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOURCE_MODULE = _load_source()
COMPILED = rijndael_build() == "compiled"


def test_which_build_is_imported() -> None:
    # Not an assertion about speed: a record, in -v output, of what the suite ran against.
    assert Path(str(rijndael_compact.__file__)).name.startswith("rijndael_compact")
    assert SOURCE_MODULE.__file__ == str(SOURCE)


def test_the_source_meets_fips197() -> None:
    vector = spec_vectors()["fips197_c1"]
    cipher = SOURCE_MODULE.CompactRijndael(Rijndael(h(vector["key"])).round_keys)
    assert cipher.cbc_encrypt(bytes(16), h(vector["plaintext"])) == h(vector["ciphertext"])
    assert cipher.decrypt_block(h(vector["ciphertext"])) == h(vector["plaintext"])


@pytest.mark.parametrize("key_size", [16, 20])
@given(data=st.binary(min_size=0, max_size=96).map(lambda b: b[: len(b) // 16 * 16]))
def test_imported_build_matches_the_source(key_size: int, data: bytes) -> None:
    round_keys = Rijndael(bytes(range(key_size)), tweaks=V6_TWEAKS).round_keys
    source = SOURCE_MODULE.CompactRijndael(round_keys)
    imported = rijndael_compact.CompactRijndael(round_keys)
    iv = bytes(range(16, 32))
    assert imported.cbc_encrypt(iv, data) == source.cbc_encrypt(iv, data)
    assert imported.cbc_decrypt(iv, data) == source.cbc_decrypt(iv, data)
    assert imported.cbc_mac(data + bytes(16)) == source.cbc_mac(data + bytes(16))


@pytest.mark.parametrize("module", [SOURCE_MODULE, rijndael_compact], ids=["source", "imported"])
@pytest.mark.parametrize(("iv", "data"), [(bytes(16), bytes(15)), (bytes(15), bytes(16))])
def test_cbc_needs_a_block_iv_and_whole_blocks(module: ModuleType, iv: bytes, data: bytes) -> None:
    cipher = module.CompactRijndael(Rijndael(bytes(16)).round_keys)
    for run in (lambda: cipher.cbc_encrypt(iv, data), lambda: cipher.cbc_decrypt(iv, data)):
        with pytest.raises(ValueError, match="16-byte"):
            run()


@pytest.mark.skipif(not COMPILED, reason="no compiled build installed")
def test_compiled_build_is_an_extension_module() -> None:
    assert str(rijndael_compact.__file__).endswith((".so", ".pyd"))
