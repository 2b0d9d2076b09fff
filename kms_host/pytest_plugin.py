"""The pytest plugin kms-host installs (entry point ``pytest11``): a real KMS host per test.

Installing kms-host (with pytest-asyncio, as ``kms-host[test]`` brings) makes the
``kms_host`` fixture available to every test, with no conftest::

    import pytest

    @pytest.mark.asyncio
    async def test_a_windows_client_activates(kms_host):
        result = await kms_host.activate()
        assert result.hresult == 0
        assert result.count >= 25

The fixture runs the real daemon (:func:`kms_host.host.app.serve`) on 127.0.0.1, port 0, with a
fresh data directory, in the test's event loop, and stops it gracefully afterwards. Its
config is TOML text: the ``kms_host_config`` fixture (empty by default; override it in a
module or a conftest) or, for one test, ``@pytest.mark.kms_host_config("...")``.

What the fixture offers is :class:`KmsHost`. Requests are judged by the same strict client as
``kms-host activate`` (:func:`kms_host.client.judgement.activate_once`, every check of spec 5.7),
and carry the *host's* clock by default, so that :meth:`KmsHost.advance` moves time for both
sides and only a ``time=`` passed on purpose makes a client's clock disagree.
:func:`running_host` is the same host as an async context manager, for fixtures of a wider
scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from kms_host.client.judgement import Outcome, activate_once, build_client_request, choose_product
from kms_host.clock import Clock
from kms_host.config import Config, ConfigOverrides, load_config
from kms_host.host.app import BoundAddresses, serve
from kms_host.policy.activation import AppTally, reported_count
from kms_host.policy.catalog import Catalog
from kms_host.policy.catalog_file import load_catalog
from kms_host.policy.scenario import ScenarioBook, parse_scenarios
from kms_host.storage import ClientRecord, open_store
from protocol.kms import LicenseStatus, ProtocolVersion

try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - then pytest itself says an async fixture needs a plugin
    _async_fixture = pytest.fixture  # type: ignore[assignment]

__all__ = ["KmsHost", "Outcome", "kms_host", "kms_host_config", "running_host"]

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 15.0
_MACHINE_NAME = "pytest-client.lab.test"


@dataclass
class KmsHost:
    """A running host, as the ``kms_host`` fixture hands it to a test."""

    host: str
    port: int
    config: Config
    """The effective configuration (``config.storage.data_dir`` is the data directory)."""
    clock: Clock
    scenarios: ScenarioBook
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)
    """Every structlog event the host emitted, as dicts (``structlog.testing``)."""
    catalog: Catalog = field(default_factory=load_catalog)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: what ``kms-host activate`` or ``slmgr /skms`` takes."""
        return f"{self.host}:{self.port}"

    def now(self) -> datetime:
        """The host's current time (its clock, moved by :meth:`advance`)."""
        return self.clock.now()

    def advance(
        self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0
    ) -> None:
        """Move the host's clock forward: the 30-day window and skew checks follow it."""
        self.clock.advance(timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds))

    def rules(self, *rules: Mapping[str, object]) -> None:
        """Replace the scenario rules with these tables (as in ``[[scenario]]``); none clears.

        Invalid rules raise :class:`kms_host.errors.ConfigError` and leave the old ones.
        """
        self.scenarios.install(parse_scenarios([dict(rule) for rule in rules]))

    def events(self, name: str) -> list[MutableMapping[str, Any]]:
        """The host's log events called ``name`` (e.g. ``"activation"``), oldest first."""
        return [entry for entry in self.logs if entry.get("event") == name]

    async def activate(
        self,
        *,
        product: str | None = None,
        app: uuid.UUID | None = None,
        kms_id: uuid.UUID | None = None,
        sku: uuid.UUID | None = None,
        protocol: int | None = None,
        ndr64: bool = True,
        btfn: bool = True,
        cmid: uuid.UUID | None = None,
        machine_name: str = _MACHINE_NAME,
        license_status: int = LicenseStatus.INITIAL_GRACE,
        vm: bool = False,
        required_count: int | None = None,
        time: datetime | None = None,
        require_activation: bool = False,
        timeout_s: float = 5.0,
    ) -> Outcome:
        """One request on a new connection; the options are those of ``kms-host activate``.

        Without options: a Windows 10/11 Pro client with a random CMID, at the host's time.
        Failures are results, not exceptions: ``hresult`` is what a Windows client would
        report (0xC004F074 for no usable answer, 0xC004F038 below the threshold when
        ``require_activation``), and ``stage``/``error`` say what happened.
        """
        chosen = choose_product(self.catalog, product, app=app, kms_id=kms_id, sku=sku)
        request = build_client_request(
            chosen,
            when=time or self.now(),
            version=ProtocolVersion(protocol) if protocol else None,
            cmid=cmid,
            machine_name=machine_name,
            license_status=license_status,
            is_vm=vm,
            required_count=required_count,
        )
        return await activate_once(
            self.host,
            self.port,
            request,
            threshold=chosen.threshold,
            ndr64=ndr64,
            btfn=btfn,
            timeout_s=timeout_s,
            require_activation=require_activation,
        )

    async def clients(self, app: str | None = None) -> list[ClientRecord]:
        """The client table (of one application key), most recently seen first."""
        store = await open_store(self.config.storage.data_dir)
        try:
            return await store.clients(app=app)
        finally:
            await store.close()

    async def counts(self) -> dict[str, int]:
        """Application key -> the count the host reports now (0 for every catalog app unseen)."""
        since = self.now() - timedelta(days=self.config.counting.window_days)
        store = await open_store(self.config.storage.data_dir)
        try:
            tallies = await store.tallies(since=since)
        finally:
            await store.close()
        empty = AppTally(live_clients=0, max_required_count=0)
        pools = {app.key: empty for app in self.catalog.applications.values()} | tallies
        counting = self.config.counting
        return {app: reported_count(t, required=0, counting=counting) for app, t in pools.items()}


@contextlib.asynccontextmanager
async def running_host(directory: Path, toml: str = "") -> AsyncIterator[KmsHost]:
    """Run a host on 127.0.0.1:0 with its config file and data in ``directory``."""
    config = _prepare(directory, toml)
    clock = Clock(timedelta(seconds=config.clock.offset_s))
    scenarios = ScenarioBook(config.scenario)
    stop = asyncio.Event()
    ready: asyncio.Future[BoundAddresses] = asyncio.get_running_loop().create_future()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(
            serve(
                config,
                shutdown_trigger=stop.wait,
                on_ready=ready.set_result,
                clock=clock,
                scenarios=scenarios,
            )
        )
        waiters: set[asyncio.Future[Any]] = {task, ready}
        await asyncio.wait(waiters, timeout=_START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises what stopped the start
        if not ready.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise RuntimeError(f"the KMS host did not start within {_START_TIMEOUT_S} s")
        host, port = ready.result().tcp[0]
        try:
            yield KmsHost(host, port, config, clock, scenarios, logs)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=_STOP_TIMEOUT_S)


def _prepare(directory: Path, toml: str) -> Config:
    """Write the config file (the host's ``config.source``, as for a daemon) and load it."""
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "kms-host.toml"
    config_file.write_text(toml, encoding="utf-8")
    overrides = ConfigOverrides(listen=("127.0.0.1:0",), data_dir=directory / "data")
    return load_config(config_file, env={}, overrides=overrides)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, so that ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers", "kms_host_config(toml): TOML config for this test's kms_host fixture"
    )


@pytest.fixture
def kms_host_config() -> str:
    """TOML text for the ``kms_host`` fixture's config; override it to configure the host."""
    return ""


@_async_fixture
async def kms_host(
    request: pytest.FixtureRequest,
    kms_host_config: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[KmsHost]:
    """A real kms-host daemon for one test (see the module docstring)."""
    marker = request.node.get_closest_marker("kms_host_config")
    toml = str(marker.args[0]) if marker else kms_host_config
    async with running_host(tmp_path_factory.mktemp("kms-host"), toml) as host:
        yield host
