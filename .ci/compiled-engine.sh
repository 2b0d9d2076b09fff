#!/usr/bin/env bash
# The compiled cipher engine's run (protocol/kms/cipher/compiled.py under mypyc): builds the
# KMS_HOST_MYPYC=1 wheel from a copy of the sources, installs it with the test extra into a
# second venv, .venv-compiled, and runs the cipher and KMS vector tests against that
# installed package. Never in place: a .so beside the source would shadow the interpreted
# engine for the first venv's editable install too. Fails unless the compiled engine is the
# one the tests loaded: KMS_HOST_EXPECT_COMPILED=1 has its test expect the compiled engine
# (without it, the interpreted one), and that test must show up as PASSED.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$PWD/.venv-compiled
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The build runs in a copy, so that its build/, *.egg-info and a stray *.so stay out of it.
mkdir "$work/src"
tar -c --exclude=__pycache__ --exclude='*.so' \
    pyproject.toml README.md setup.py MANIFEST.in _build protocol kms_host | tar -x -C "$work/src"
rm -rf "$venv"
python3 -m venv "$venv"
KMS_HOST_MYPYC=1 "$venv/bin/pip" wheel --no-deps -w "$work/wheel" "$work/src"
wheels=("$work"/wheel/kms_host-*.whl)
"$venv/bin/pip" install "${wheels[0]}[test]"

# -P everywhere: this work tree (the current directory) must not come first on sys.path.
where=$("$venv/bin/python" -P -c \
    'import protocol, protocol.kms as k; print(protocol.__file__, k.rijndael_build())')
case "$where" in
    "$venv"/*" compiled") echo "compiled run: $where" ;;
    *) echo "compiled run imports the wrong package or build: $where" >&2; exit 1 ;;
esac

KMS_HOST_EXPECT_COMPILED=1 "$venv/bin/python" -P -m pytest -p no:cacheprovider -q -rA \
    tests/protocol/test_cipher.py tests/protocol/test_kms_vectors.py \
    tests/protocol/test_kms_crypto.py tests/protocol/test_kms_batch.py \
    tests/protocol/test_kms_layouts.py | tee "$work/pytest.log" | grep -v '^PASSED '
if ! grep -q '^PASSED .*::test_the_expected_engine_is_loaded$' "$work/pytest.log"; then
    echo "the compiled engine's test did not pass (skipped?)" >&2
    exit 1
fi
