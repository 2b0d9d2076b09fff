"""What a test holds of a running host: its address, its clock, its rules, its table.

Every query has a blocking form for sync tests (``activate()``, ``counts()``, ``clients()``)
and an ``a``-prefixed coroutine twin for async tests (``aactivate()``, ``acounts()``,
``aclients()``). Both are the same client: requests are judged by the strict client of
``kms-host activate`` (:func:`kms_host.client.judgement.activate_once`, every check of spec
5.7), and the table is read through the store's own API on a connection of its own (SQLite in
WAL mode lets it read beside the daemon's writes). The blocking forms run that client on an
event loop of their own, in a worker thread, so they work from any thread, even one whose loop
is running (an async test): that loop is then blocked for the call, which is why the twins
exist. The daemon's loop is never the client's: a client is a separate party, and a host
whose loop hangs shows up as the 0xC004F074 a client would report, not as a hang of the test.

Requests carry the *host's* clock by default, so that :meth:`KmsHost.advance` moves time for
both sides and only a ``time=`` passed on purpose makes a client's clock disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, TypeVar, Unpack

from kms_host.client.judgement import Outcome, activate_once, build_client_request, choose_product
from kms_host.clock import Clock
from kms_host.config import Config, ConfigOverrides, load_config
from kms_host.policy.activation import AppTally, reported_count
from kms_host.policy.catalog_file import load_catalog
from kms_host.policy.scenario import ScenarioBook, parse_scenarios
from kms_host.storage import ClientRecord, open_store
from kms_host.testing.daemon import HostThread, captured_logs
from protocol.kms import LicenseStatus, ProtocolVersion

__all__ = ["ActivateOptions", "KmsHost", "running_host"]

_T = TypeVar("_T")

MACHINE_NAME = "pytest-client.lab.test"
"""The workstation name a request carries unless ``machine_name=`` says otherwise."""


class ActivateOptions(TypedDict, total=False):
    """The options of ``kms-host activate``, as keywords; leave out any of them.

    ``product`` (name, GVLK or GUID, searched in the catalog; default Windows 10/11 Pro),
    ``app``/``kms_id``/``sku`` (override the product's IDs), ``protocol`` (4, 5 or 6; default
    the product's), ``ndr64``/``btfn`` (what the bind offers; default both), ``cmid``
    (default random), ``machine_name``, ``license_status`` (default initial grace), ``vm``,
    ``required_count`` (default the product's threshold), ``time`` (the client's clock;
    default the host's), ``require_activation`` (a count below the threshold is 0xC004F038),
    ``timeout_s`` (per step: connect, bind, call; default 5).
    """

    product: str | None
    app: uuid.UUID | None
    kms_id: uuid.UUID | None
    sku: uuid.UUID | None
    protocol: int | None
    ndr64: bool
    btfn: bool
    cmid: uuid.UUID | None
    machine_name: str
    license_status: int
    vm: bool
    required_count: int | None
    time: datetime | None
    require_activation: bool
    timeout_s: float


class KmsHost:
    """A running host, as the ``kms_host`` fixture and :func:`running_host` hand it out."""

    def __init__(
        self, daemon: HostThread, address: tuple[str, int], logs: list[MutableMapping[str, Any]]
    ) -> None:
        self.host, self.port = address
        self.config: Config = daemon.config
        """The effective configuration (``config.storage.data_dir`` is the data directory)."""
        self.clock: Clock = daemon.clock
        self.scenarios: ScenarioBook = daemon.scenarios
        self.logs = logs
        """Every structlog event emitted while the host runs, as dicts, oldest first."""
        self.catalog = load_catalog()
        self._daemon = daemon

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: what ``kms-host activate``, ``vlmcs`` or ``slmgr /skms`` takes."""
        return f"{self.host}:{self.port}"

    def now(self) -> datetime:
        """The host's current time (its clock, moved by :meth:`advance`)."""
        return self.clock.now()

    def advance(
        self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0
    ) -> None:
        """Move the host's clock forward: the 30-day window and skew checks follow it."""
        delta = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        self._daemon.call(lambda: self.clock.advance(delta))

    def rules(self, *rules: Mapping[str, object]) -> None:
        """Replace the scenario rules with these tables (as in ``[[scenario]]``); none clears.

        Invalid rules raise :class:`kms_host.errors.ConfigError` and leave the old ones.
        """
        parsed = parse_scenarios([dict(rule) for rule in rules])
        self._daemon.call(lambda: self.scenarios.install(parsed))

    def events(self, name: str) -> list[MutableMapping[str, Any]]:
        """The log events called ``name`` (e.g. ``"activation"``), oldest first.

        A host logs a request's ``activation`` event before it sends the answer, so the event
        of a request that was answered is always here.
        """
        return [entry for entry in list(self.logs) if entry.get("event") == name]

    # --- blocking forms ---------------------------------------------------------------------

    def activate(self, **options: Unpack[ActivateOptions]) -> Outcome:
        """One request on a new connection; blocks until it is judged (see :meth:`aactivate`)."""
        return self._blocking(lambda: self.aactivate(**options))

    def counts(self) -> dict[str, int]:
        """Application key -> the count the host reports now (0 for every catalog app unseen)."""
        return self._blocking(self.acounts)

    def clients(self, app: str | None = None) -> list[ClientRecord]:
        """The client table (of one application key), most recently seen first."""
        return self._blocking(lambda: self.aclients(app))

    # --- coroutine twins --------------------------------------------------------------------

    async def aactivate(self, **options: Unpack[ActivateOptions]) -> Outcome:
        """One request on a new connection; the options are those of ``kms-host activate``.

        Without options: a Windows 10/11 Pro client with a random CMID, at the host's time.
        Failures are results, not exceptions: ``hresult`` is what a Windows client would
        report (0xC004F074 for no usable answer, 0xC004F038 below the threshold when
        ``require_activation``), and ``stage``/``error`` say what happened.
        """
        chosen = choose_product(
            self.catalog,
            options.get("product"),
            app=options.get("app"),
            kms_id=options.get("kms_id"),
            sku=options.get("sku"),
        )
        protocol = options.get("protocol")
        request = build_client_request(
            chosen,
            when=options.get("time") or self.now(),
            version=ProtocolVersion(protocol) if protocol else None,
            cmid=options.get("cmid"),
            machine_name=options.get("machine_name", MACHINE_NAME),
            license_status=options.get("license_status", LicenseStatus.INITIAL_GRACE),
            is_vm=options.get("vm", False),
            required_count=options.get("required_count"),
        )
        return await activate_once(
            self.host,
            self.port,
            request,
            threshold=chosen.threshold,
            ndr64=options.get("ndr64", True),
            btfn=options.get("btfn", True),
            timeout_s=options.get("timeout_s", 5.0),
            require_activation=options.get("require_activation", False),
        )

    async def acounts(self) -> dict[str, int]:
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

    async def aclients(self, app: str | None = None) -> list[ClientRecord]:
        """The client table (of one application key), most recently seen first."""
        store = await open_store(self.config.storage.data_dir)
        try:
            return await store.clients(app=app)
        finally:
            await store.close()

    @staticmethod
    def _blocking(coroutine: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Run a twin to completion on a loop of its own, in a thread of its own.

        A thread per call, so that nothing outlives the call: a host's object stays usable
        after its daemon stopped (a request then fails as a client's would, 0xC004F074).
        """
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kms-host-client") as pool:
            return pool.submit(lambda: asyncio.run(coroutine())).result()


@contextlib.contextmanager
def _hosted(directory: Path, toml: str) -> Iterator[KmsHost]:
    config = _prepare(directory, toml)
    with captured_logs() as logs:
        daemon = HostThread(
            config, Clock(timedelta(seconds=config.clock.offset_s)), ScenarioBook(config.scenario)
        )
        host = KmsHost(daemon, daemon.start(), logs)
        try:
            yield host
        finally:
            daemon.stop()


class _RunningHost:
    """:func:`running_host`'s context: ``with`` in sync code, ``async with`` in a coroutine."""

    def __init__(self, directory: Path, toml: str) -> None:
        self._context = _hosted(directory, toml)

    def __enter__(self) -> KmsHost:
        return self._context.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return self._context.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> KmsHost:
        return await asyncio.to_thread(self._context.__enter__)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await asyncio.to_thread(self._context.__exit__, exc_type, exc, tb)


def running_host(directory: Path, toml: str = "") -> _RunningHost:
    """Run a host on 127.0.0.1:0 with its config file (``toml``) and data in ``directory``.

    The ``kms_host`` fixture is this, for one test; use it directly for a host shared by
    a module or a session (a fixture of a wider scope), as ``with running_host(...) as
    host:`` or, in a coroutine, ``async with``. The host starts in its own thread with a
    fresh clock and stops gracefully when the block ends, however it ends.
    """
    return _RunningHost(directory, toml)


def _prepare(directory: Path, toml: str) -> Config:
    """Write the config file (the host's ``config.source``, as for a daemon) and load it."""
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "kms-host.toml"
    config_file.write_text(toml, encoding="utf-8")
    overrides = ConfigOverrides(listen=("127.0.0.1:0",), data_dir=directory / "data")
    return load_config(config_file, env={}, overrides=overrides)
