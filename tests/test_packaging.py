"""The package as pip builds it: pure by default, the mypyc-compiled cipher engine on request.

Each wheel is built once per session, the way a user builds it: ``pip wheel --no-deps`` with
build isolation, so pip installs ``[build-system] requires`` and asks the in-tree backend
(``_build/kms_host_backend.py``) for the rest. That is the logic under test: the default build
must not bring mypy, and ``KMS_HOST_MYPYC=1`` must. Both build from a copy of the sources,
because pip builds in the tree (``build/``, ``*.egg-info``, mypy's cache) and would package a
``*.so`` left there by a manual ``mypyc``.

The compiled wheel is unpacked (a wheel is a zip of what an install puts in site-packages) and
``tests/protocol/test_cipher.py`` runs against it in a fresh interpreter with
``KMS_HOST_EXPECT_COMPILED=1``: every engine against the vectors, and the check that the
extension is what was imported. Building it is mostly gcc on the generated C; without a C
compiler those tests skip (``.ci/compiled-engine.sh`` does not: CI has one).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    "pyproject.toml",
    "README.md",
    "setup.py",
    "MANIFEST.in",
    "_build",
    "protocol",
    "kms_host",
]
BUILD_TIMEOUT_S = 300  # generous: gcc on the generated C, and pip's cache may be cold
RUN_TIMEOUT_S = 120
EXTENSION = "protocol/kms/cipher/compiled" + sysconfig.get_config_var("EXT_SUFFIX")

needs_cc = pytest.mark.skipif(
    shutil.which("cc") is None, reason="no C compiler (cc): the mypyc build cannot be tried"
)


def build_wheel(tmp: Path, *, mypyc: str | None) -> tuple[Path | None, str]:
    """Build a wheel from a copy of the sources; return it (None if pip failed) and pip's output."""
    source, out = tmp / "src", tmp / "wheel"
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
            shutil.copytree(origin, source / name, ignore=ignore)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(origin, source / name)
    env = {k: v for k, v in os.environ.items() if k != "KMS_HOST_MYPYC"}
    if mypyc is not None:
        env["KMS_HOST_MYPYC"] = mypyc
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(out), str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        return None, output
    [wheel] = out.glob("*.whl")
    return wheel, output


def build_env_installs(output: str) -> set[str]:
    """The distributions pip installed into the build environment, by name."""
    names: set[str] = set()
    for line in re.findall(r"^\s*Successfully installed (.+)$", output, re.MULTILINE):
        names.update(item.rsplit("-", 1)[0].lower() for item in line.split())
    return names


@pytest.fixture(scope="session")
def pure_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    wheel, output = build_wheel(tmp_path_factory.mktemp("pure"), mypyc=None)
    assert wheel is not None, output
    return wheel, output


@pytest.fixture(scope="session")
def compiled_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    wheel, output = build_wheel(tmp_path_factory.mktemp("compiled"), mypyc="1")
    assert wheel is not None, output
    return wheel, output


def test_the_default_wheel_is_pure_and_built_without_mypy(pure_wheel: tuple[Path, str]) -> None:
    wheel, output = pure_wheel
    assert wheel.name.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "protocol/kms/cipher/compiled.py" in names
    assert "protocol/kms/cipher/interpreted.py" in names
    assert not [name for name in names if name.endswith((".so", ".pyd", ".c"))]
    installed = build_env_installs(output)
    assert "setuptools" in installed, output
    assert "mypy" not in installed


def test_a_bad_switch_value_stops_the_build(tmp_path: Path) -> None:
    wheel, output = build_wheel(tmp_path, mypyc="yes")
    assert wheel is None
    assert "KMS_HOST_MYPYC='yes'" in output


@needs_cc
def test_the_compiled_wheel_holds_the_extension_and_the_source(
    compiled_wheel: tuple[Path, str],
) -> None:
    wheel, output = compiled_wheel
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert wheel.name.endswith(f"-{python}-{python}-{platform}.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert EXTENSION in names
    assert "protocol/kms/cipher/compiled.py" in names  # the source the extension shadows
    assert "protocol/kms/cipher/interpreted.py" in names  # the tests' reference engine
    assert "mypy" in build_env_installs(output)


@needs_cc
def test_the_compiled_module_is_imported_and_matches_fips197_and_the_source(
    compiled_wheel: tuple[Path, str], tmp_path: Path
) -> None:
    site = tmp_path / "site-packages"
    zipfile.ZipFile(compiled_wheel[0]).extractall(site)
    env = {k: v for k, v in os.environ.items() if k != "KMS_HOST_MYPYC"}
    env["PYTHONPATH"] = str(site)  # before this checkout (an editable install maps it later)
    env["KMS_HOST_EXPECT_COMPILED"] = "1"
    tests = ROOT / "tests" / "protocol" / "test_cipher.py"
    result = subprocess.run(
        # -P: not the working directory first; the unpacked wheel must be what imports.
        [sys.executable, "-P", "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(tests)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^PASSED .*::test_the_expected_engine_is_loaded$", result.stdout, re.M)
    probe = (
        "from protocol.kms import rijndael_build as b; from protocol.kms.cipher import compiled;"
        " print(compiled.__file__, b())"
    )
    imported = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=True,
    )
    assert imported.stdout.split() == [str(site / EXTENSION), "compiled"]


LAB_TESTS = """
import subprocess
import sys
import uuid

import blocking_client
import pytest


def test_a_blocking_socket_client_is_answered(kms_host):
    cmid = uuid.uuid4()
    request = blocking_client.windows_request(cmid)
    response = blocking_client.activate(kms_host.host, kms_host.port, request)
    assert (response.client_machine_id, response.current_client_count) == (cmid, 25)
    assert [client.cmid for client in kms_host.clients()] == [cmid]


@pytest.mark.kms_host_config('[counting]\\nprefill = "none"\\n')
def test_sync(kms_host):
    client = [sys.executable, "-m", "kms_host", "activate", kms_host.address]
    subprocess.run(client, check=True, capture_output=True, timeout=60)
    assert kms_host.activate(require_activation=True).hresult == 0xC004F038
    assert kms_host.counts()["windows"] == 2
    kms_host.advance(days=31)
    assert kms_host.counts()["windows"] == 0


async def test_async(kms_host):
    kms_host.rules({"sku": "2de67392-b7a7-462a-b1ca-108dd189f588", "hresult": "0xC004F042"})
    assert (await kms_host.aactivate()).hresult == 0xC004F042
    assert (await kms_host.acounts())["windows"] == 0
"""


def test_the_fixture_works_in_an_empty_directory_with_only_the_package(
    pure_wheel: tuple[Path, str], tmp_path: Path
) -> None:
    """A lab's suite: ``pip install 'kms-host[pytest]'`` into a new venv, and nothing else.

    No pytest-asyncio (the async test runs on the plugin's own runner), no conftest, the
    package from its wheel rather than this checkout. The venv gets no pip of its own: this
    interpreter's pip installs into it (``--python``), from pip's cache where it can.
    """
    venv, lab = tmp_path / "venv", tmp_path / "lab"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", f"{pure_wheel[0]}[pytest]"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    lab.mkdir()
    (lab / "test_lab.py").write_text(LAB_TESTS)
    shutil.copy2(ROOT / "tests" / "integration" / "blocking_client.py", lab)
    result = subprocess.run(
        [python, "-m", "pytest", "-v", "-p", "no:cacheprovider"],
        cwd=lab,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    # No async plugin came with it: the plugins pytest names are this one alone.
    assert re.search(r"^plugins: kms-host-\S+$", result.stdout, re.M), result.stdout


def test_the_package_imports_without_pytest() -> None:
    """Only pytest loads the plugin module; every other module must import without pytest."""
    probe = """
import importlib, pkgutil, sys
sys.modules["pytest"] = None  # "import pytest" now raises ImportError
import kms_host
names = [m.name for m in pkgutil.walk_packages(kms_host.__path__, "kms_host.")]
for name in names:
    if name not in ("kms_host.pytest_plugin", "kms_host.__main__"):  # __main__ runs the CLI
        importlib.import_module(name)
print(len(names))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 50
