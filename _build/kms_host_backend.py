"""kms-host's build backend: setuptools', plus an opt-in mypyc build of the cipher's engine.

Why a backend of our own: ``[build-system] requires`` is static, and the default install must
stay what it was (pure Python, no compiler, no mypy downloaded into the build environment).
So mypy is asked for only when ``KMS_HOST_MYPYC=1`` is set, through the PEP 517 hooks that
may add requirements at build time. ``setup.py`` calls :func:`compiled_extensions` to give
setuptools the extension modules (none by default), and only while a wheel or an editable
install is built. ``KMS_HOST_MYPYC=1 pip install -e .`` compiles in place, beside
``protocol/kms/cipher/compiled.py``, as a manual ``mypyc`` does (docs/performance.md). An
sdist stays source.

The variable is read strictly: unset, empty or ``0`` build pure; ``1`` compiles; anything
else stops the build, since a typo must not quietly give the build that was not asked for.
When compiling was asked for and fails (no mypy, no compiler, a type error), the build fails
too: falling back to pure Python would hide it. The extension shadows ``compiled.py``, which
stays in the wheel; :mod:`protocol.kms.cipher` runs the compiled engine exactly when it is
the extension, and the interpreted engine otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (
    build_sdist,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

if TYPE_CHECKING:
    from setuptools import Extension

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "compiled_extensions",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

SWITCH = "KMS_HOST_MYPYC"
MYPY = "mypy>=1.15,<3"
"""The mypy that compiles the module (mypyc ships inside it). Builds with 1.15.0 and 2.4.1
pass ``tests/protocol``, and 1.20.2 and 2.0.0 import; 1.10.1 and 1.12.1 build a module that
cannot be imported from within its package (``cannot access submodule 'kms'``). Only the
build needs mypy; the wheel does not."""
MYPYC_ARGS = ["--follow-imports=skip", "protocol/kms/cipher/compiled.py"]
"""What mypyc compiles, with mypy's options (``[tool.mypy]`` applies too). Besides the standard
library the module imports only the S-boxes, key schedule and argument checks of
``protocol/kms/cipher/_shared.py``, which it may see untyped; following the imports of its
parent packages would type-check ``construct`` and ``cryptography``, which the build
environment does not have."""

_COMPILING: ContextVar[bool] = ContextVar("kms_host_compiling", default=False)
"""True while ``build_wheel`` or ``build_editable`` runs. setuptools runs ``setup.py`` for
every hook, but only these two build code; the others (requirements, metadata, sdist) must
not need mypy, which is not installed yet when pip asks for the requirements."""

ConfigSettings = dict[str, Any] | None


def mypyc_requested() -> bool:
    """True when ``KMS_HOST_MYPYC=1``; ValueError for a value that is neither on nor off."""
    value = os.environ.get(SWITCH, "")
    if value not in ("", "0", "1"):
        raise ValueError(
            f"{SWITCH}={value!r}: set it to 1 for the mypyc build, 0 or unset for pure"
        )
    return value == "1"


def get_requires_for_build_wheel(config_settings: ConfigSettings = None) -> list[str]:
    """setuptools' build requirements, and mypy when the compiled build was asked for."""
    required = list(_setuptools.get_requires_for_build_wheel(config_settings))
    return [*required, MYPY] if mypyc_requested() else required


def get_requires_for_build_editable(config_settings: ConfigSettings = None) -> list[str]:
    """As for a wheel."""
    required = list(_setuptools.get_requires_for_build_editable(config_settings))
    return [*required, MYPY] if mypyc_requested() else required


def build_wheel(
    wheel_directory: str,
    config_settings: ConfigSettings = None,
    metadata_directory: str | None = None,
) -> str:
    """setuptools' wheel, with the extension modules of :func:`compiled_extensions`."""
    return _compiling(_setuptools.build_wheel, wheel_directory, config_settings, metadata_directory)


def build_editable(
    wheel_directory: str,
    config_settings: ConfigSettings = None,
    metadata_directory: str | None = None,
) -> str:
    """As for a wheel; setuptools builds the extension in place, beside its source."""
    return _compiling(
        _setuptools.build_editable, wheel_directory, config_settings, metadata_directory
    )


def _compiling(hook: Callable[..., object], *args: object) -> str:
    """Run a setuptools hook that builds code, so that ``setup.py`` gets the extensions."""
    token = _COMPILING.set(True)
    try:
        return str(hook(*args))
    finally:
        _COMPILING.reset(token)


def compiled_extensions() -> list[Extension]:
    """The mypyc extension modules for ``setup(ext_modules=...)``; none unless asked for."""
    if not (_COMPILING.get() and mypyc_requested()):
        return []
    try:
        from mypyc.build import mypycify  # noqa: PLC0415  (present only when asked for)
    except ImportError as exc:
        raise RuntimeError(
            f"{SWITCH}=1 needs {MYPY} in the build environment; pip adds it through this "
            "backend, unless --no-build-isolation is given (then install it first)"
        ) from exc
    return list(mypycify(MYPYC_ARGS))
