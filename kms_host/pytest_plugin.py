"""The pytest plugin kms-host installs (entry point ``pytest11``): a real KMS host per test.

Installing ``kms-host[pytest]`` makes the ``kms_host`` fixture available to every test, with
no conftest and no other plugin::

    import subprocess

    def test_vlmcs_activates(kms_host):
        subprocess.run(["vlmcs", kms_host.address], check=True)  # or any blocking client
        [event] = kms_host.events("activation")
        assert event["result"] == "activated"

    async def test_a_windows_client_activates(kms_host):
        result = await kms_host.aactivate()
        assert result.hresult == 0

The fixture runs the real daemon (:func:`kms_host.host.app.serve`) on 127.0.0.1, port 0, with
a fresh data directory, in a thread of its own with its own event loop
(:mod:`kms_host.testing.daemon` says why a thread), so that a blocking client in the test, a
subprocess and a coroutine are all answered. It stops the daemon gracefully after the test,
whether the test passed, failed or was interrupted. Its config is TOML text: the
``kms_host_config`` fixture (empty by default; override it in a module or a conftest) or, for
one test, ``@pytest.mark.kms_host_config("...")``. What the fixture hands out is
:class:`kms_host.testing.KmsHost`: blocking calls (``activate()``, ``counts()``,
``clients()``) and their coroutine twins (``aactivate()``, ``acounts()``, ``aclients()``).

Async tests. A coroutine test that requests ``kms_host`` runs whatever else is installed:

* With pytest-asyncio, a test it runs (``@pytest.mark.asyncio`` in strict mode, every
  coroutine test in auto mode) runs in its loop, as any other; the daemon's loop is not that
  loop, so loop scopes and loop-scoped fixtures change nothing for the host.
* anyio's plugin runs the tests it claims (those that use its ``anyio_backend``).
* Any other coroutine test that requests ``kms_host`` (no async plugin installed, or an
  unmarked test in pytest-asyncio's strict mode) is run here, by :func:`asyncio.run`, in a
  new event loop for that test. Those plugins claim their tests first (anyio's hook runs
  before this one; pytest-asyncio turns its tests into sync functions before any runs), so
  no test runs twice. Coroutine tests that do not request ``kms_host`` are left to pytest.

Async *fixtures* still need an async plugin; the ``kms_host`` fixture is not one.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator

import pytest

from kms_host.client.judgement import Outcome
from kms_host.testing import KmsHost, running_host

__all__ = ["KmsHost", "Outcome", "kms_host", "kms_host_config", "running_host"]

_FIXTURE = "kms_host"


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, so that ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers", "kms_host_config(toml): TOML config for this test's kms_host fixture"
    )


@pytest.fixture
def kms_host_config() -> str:
    """TOML text for the ``kms_host`` fixture's config; override it to configure the host."""
    return ""


@pytest.fixture
def kms_host(
    request: pytest.FixtureRequest,
    kms_host_config: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KmsHost]:
    """A real kms-host daemon for one test (see the module docstring)."""
    marker = request.node.get_closest_marker("kms_host_config")
    toml = str(marker.args[0]) if marker else kms_host_config
    with running_host(tmp_path_factory.mktemp("kms-host"), toml) as host:
        yield host


@pytest.hookimpl
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a coroutine test that requests ``kms_host`` and that no async plugin claimed.

    Claimed tests never get here as coroutines: anyio's hook runs first and stops the call,
    and pytest-asyncio swaps the test for a sync wrapper before the hook is called; what is
    still a coroutine function here would otherwise fail as "not natively supported".
    """
    if _FIXTURE not in pyfuncitem.fixturenames or not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**arguments))
    return True
