"""The host's lifecycle: build every part from the config, serve, and stop in order.

``serve()`` takes an optional ``shutdown_trigger`` (hypercorn's pattern, architecture 4.8):
the CLI passes none and gets SIGTERM/SIGINT handling; tests pass an event's ``wait`` and
read the bound ports from ``on_ready``. Parts start in dependency order inside one exit
stack, so they stop in reverse: the ``runtime.json`` marker, DNS (withdrawing a published
record), the dashboard (``[web]``), then the KMS listener (stop accepting, let calls in
flight finish within ``server.shutdown_grace_s``, cancel the rest), the metrics endpoint
(still scraped while the listener drains), then storage. A second signal forces the exit.

``serve --workers N`` builds the same parts in two kinds of process from the pieces
below: each worker runs :func:`start_activation` (identity, service, listener) on the shared
data dir, and the supervisor runs the once-only parts (``runtime.json``, DNS, the metrics
endpoint, the dashboard); see :mod:`kms_host.host.supervisor` and :mod:`kms_host.host.worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from kms_host import loop
from kms_host.addresses import format_address
from kms_host.clock import Clock
from kms_host.config import Config
from kms_host.discovery.publisher import run_publisher
from kms_host.discovery.responder import serve_dns
from kms_host.discovery.zone import SrvZone
from kms_host.errors import ConfigError
from kms_host.host.admission import PeerLimits
from kms_host.host.fdlimit import fit_fd_limit
from kms_host.host.identity import load_identity
from kms_host.host.listener import KmsServer, ServerLimits
from kms_host.host.lock import hold_data_dir
from kms_host.host.metrics import serve_metrics
from kms_host.host.observe import HostObserver, Observers
from kms_host.host.peer_policy import PeerPolicy
from kms_host.host.reload import reload_scenarios
from kms_host.host.service import ActivationService
from kms_host.policy.catalog import Catalog
from kms_host.policy.catalog_file import load_catalog
from kms_host.policy.scenario import ScenarioBook
from kms_host.storage import ClientStore, open_store
from kms_host.web.feed import ActivationFeed
from kms_host.web.server import serve_web
from protocol.kms import rijndael_build

__all__ = [
    "RUNTIME_FILE",
    "BoundAddresses",
    "check_catalog_settings",
    "log_listening",
    "run_dns",
    "runtime_file",
    "runtime_settings",
    "serve",
    "signal_trigger",
    "start_activation",
]

log = structlog.get_logger("kms_host.app")


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    """Where the host is reachable once every socket is bound."""

    tcp: tuple[tuple[str, int], ...]
    dns: tuple[tuple[str, int], ...] = ()
    metrics: tuple[tuple[str, int], ...] = ()
    web: tuple[tuple[str, int], ...] = ()


RUNTIME_FILE = "runtime.json"
"""Written into the data dir once every socket is bound and removed on a clean stop, so that
``kms-host status`` (which reads the data dir, not the daemon) can say where the daemon
listens and whether it runs (its ``pid``)."""


@contextlib.contextmanager
def runtime_file(
    config: Config, bound: BoundAddresses, workers: tuple[int, ...] = ()
) -> Iterator[None]:
    """Write ``runtime.json`` for the context's duration; ``workers`` are the workers' pids.

    ``started_at`` is real time, not the host clock (``[clock] offset_s`` shifts what clients
    are told, not when the process started). ``settings`` are the effective values that shape
    the answers, so that ``status`` and ``clients`` report what this daemon does rather than
    what their own config and environment would say.
    """
    path = config.storage.data_dir / RUNTIME_FILE
    document = {
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(),
        "settings": runtime_settings(config),
        **{
            kind: [format_address(a) for a in getattr(bound, kind)]
            for kind in ("tcp", "dns", "metrics", "web")
        },
        **({"workers": list(workers)} if workers else {}),
    }
    tmp = path.with_name(RUNTIME_FILE + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    try:
        yield
    finally:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            # The data dir turned read-only: the stop itself went well, and the file left
            # names a pid that no longer runs, which is how ``status`` reads a stale one.
            log.warning("runtime_file_left", detail=str(exc))


def runtime_settings(config: Config) -> dict[str, object]:
    """The effective settings ``runtime.json`` records (read back by ``kms-host status``)."""
    return {
        "config_file": str(config.source) if config.source else None,
        "listen": [str(address) for address in config.server.listen],
        "metrics_listen": str(config.metrics.listen) if config.metrics.listen else None,
        "workers": config.server.workers,
        "counting_mode": config.counting.mode.value,
        "prefill": config.counting.prefill.value,
        "fixed_count": config.counting.fixed_count,
        "window_days": config.counting.window_days,
        "scope": list(config.host.scope),
        "clock_offset_s": config.clock.offset_s,
        "activation_interval_min": config.host.activation_interval_min,
        "renewal_interval_min": config.host.renewal_interval_min,
    }


ShutdownTrigger = Callable[[], Awaitable[object]]


def signal_trigger() -> ShutdownTrigger:
    """Install SIGTERM/SIGINT handlers: the first signal fires the trigger, a second exits."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("forced_exit", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return stop.wait


def check_catalog_settings(config: Config, catalog: Catalog) -> frozenset[str]:
    """Validate what the config says about the catalog; return the held host-key groups.

    Shared by ``serve`` and ``check-config`` so both refuse the same files.
    """
    try:
        scope = catalog.resolve_scope(config.host.scope)
    except ValueError as exc:
        raise ConfigError(str(exc), key="host.scope") from exc
    for key in config.host.epid:
        if catalog.host_key_group(key) is None:
            raise ConfigError(f"unknown host-key group {key!r}", key=f"host.epid.{key}")
    # A host key cannot be installed on a host OS older than its product (spec 6.2).
    for key in sorted(scope):
        group = catalog.host_key_group(key)
        if group and group.min_host_build and group.min_host_build > config.host.build:
            raise ConfigError(
                f"the {key} host key needs a host build of at least {group.min_host_build};"
                " raise host.build or narrow host.scope",
                key="host.build",
            )
    return scope


@contextlib.asynccontextmanager
async def _kms_listener(
    config: Config, service: ActivationService, observer: HostObserver, *, reuse_port: bool
) -> AsyncIterator[list[tuple[str, int]]]:
    server = KmsServer(
        reuse_port=reuse_port,
        listen=config.server.listen,
        handler=service.handle,
        observer=observer,
        limits=ServerLimits(
            idle_timeout_s=config.server.idle_timeout_s,
            exchange_timeout_s=config.server.exchange_timeout_s,
            max_connections=fit_fd_limit(config.server.max_connections),
            max_pdu_bytes=config.server.max_pdu_bytes,
            ndr64=config.server.ndr64,
            btfn=config.server.btfn,
            peers=PeerLimits(
                max_connections_per_peer=config.server.max_connections_per_peer,
                connection_rate_per_s=config.server.peer_connection_rate_per_s,
                connection_burst=config.server.peer_connection_burst,
                request_rate_per_s=config.server.peer_request_rate_per_s,
                request_burst=config.server.peer_request_burst,
            ),
            refused_log_interval_s=config.server.refused_log_interval_s,
        ),
        peers=PeerPolicy(allow=config.server.allow, proxy_from=config.server.proxy_protocol_from),
    )
    bound = await server.start()
    try:
        yield bound
    finally:
        log.info("stopping", open_connections=server.open_connections)
        await server.stop(config.server.shutdown_grace_s)


@contextlib.asynccontextmanager
async def run_dns(
    config: Config, kms_bound: list[tuple[str, int]]
) -> AsyncIterator[list[tuple[str, int]]]:
    """Run the SRV responder and the publisher that ``[dns]`` asks for (spec 9)."""
    dns = config.dns
    if not dns.enabled and dns.publish is None:
        yield []
        return
    zone = SrvZone.from_config(
        dns, kms_port=kms_bound[0][1], kms_addresses=[host for host, _ in kms_bound]
    )
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    bound: list[tuple[str, int]] = []
    try:
        if dns.enabled:
            ready: asyncio.Future[list[tuple[str, int]]] = (
                asyncio.get_running_loop().create_future()
            )
            responder = asyncio.create_task(
                serve_dns(
                    zone,
                    dns.listen,
                    rate_limit_qps=dns.rate_limit_qps,
                    rate_limit_burst=dns.rate_limit_burst,
                    tcp_idle_timeout_s=dns.tcp_idle_timeout_s,
                    stop=stop,
                    on_bound=ready.set_result,
                )
            )
            tasks.append(responder)
            waiters: set[asyncio.Future[Any]] = {responder, ready}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                responder.result()  # raises the bind error
            bound = ready.result()
            log.info(
                "dns_listening", addresses=[format_address(a) for a in bound], zone=zone.origin
            )
        if dns.publish is not None:
            tasks.append(asyncio.create_task(run_publisher(dns.publish, zone.targets, stop=stop)))
        yield bound
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def log_listening(
    config: Config,
    scope: frozenset[str],
    bound: BoundAddresses,
    *,
    counts: dict[str, int],
    **extra: object,
) -> None:
    """The ``listening`` event that scripts wait for: one per host, whatever its processes."""
    log.info(
        "listening",
        addresses=[format_address(address) for address in bound.tcp],
        data_dir=str(config.storage.data_dir),
        scope=sorted(scope),
        counting_mode=config.counting.mode.value,
        counts=counts,
        metrics=[format_address(address) for address in bound.metrics],
        web=[format_address(address) for address in bound.web],
        rijndael=rijndael_build(),
        event_loop=loop.running(),
        **extra,
    )


async def start_activation(
    stack: contextlib.AsyncExitStack,
    config: Config,
    *,
    catalog: Catalog,
    scope: frozenset[str],
    store: ClientStore,
    clock: Clock,
    observer: HostObserver,
    scenarios: ScenarioBook,
    reuse_port: bool = False,
) -> tuple[ActivationService, list[tuple[str, int]]]:
    """Start the activation service and its listener inside ``stack``; return the bound pairs.

    What one host process answers calls with: ``serve`` runs it once, and every worker of
    ``serve --workers`` runs it for itself (``reuse_port``) on the shared data dir.
    """
    identity = load_identity(
        config.storage.data_dir,
        catalog=catalog,
        host=config.host,
        today=clock.now().date(),
        rng=os.urandom,
    )
    service = ActivationService(
        config=config,
        catalog=catalog,
        scope=scope,
        identity=identity,
        store=store,
        clock=clock,
        observer=observer,
        scenarios=scenarios,
    )
    await service.start()
    listener = _kms_listener(config, service, observer, reuse_port=reuse_port)
    return service, await stack.enter_async_context(listener)


async def serve(
    config: Config,
    *,
    shutdown_trigger: ShutdownTrigger | None = None,
    on_ready: Callable[[BoundAddresses], None] | None = None,
    clock: Clock | None = None,
    scenarios: ScenarioBook | None = None,
) -> None:
    """Run the host until the trigger fires (or a signal arrives).

    ``scenarios`` lets a caller (the pytest plugin) keep a handle on the rules to change
    them at run time; without a trigger, SIGHUP re-reads them from ``config.source``.
    """
    clock = clock or Clock(timedelta(seconds=config.clock.offset_s))
    scenarios = scenarios or ScenarioBook(config.scenario)
    trigger = shutdown_trigger or signal_trigger()
    if shutdown_trigger is None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, reload_scenarios, scenarios, config.source)
    log.info("config", **config.as_dict())
    catalog = load_catalog()
    scope = check_catalog_settings(config, catalog)
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(hold_data_dir(config.storage.data_dir))
        store = await open_store(
            config.storage.data_dir,
            synchronous=config.storage.synchronous,
            commit_delay_s=config.storage.commit_delay_ms / 1000,
        )
        stack.push_async_callback(store.close)
        metrics = await stack.enter_async_context(
            serve_metrics(config.metrics.listen, catalog=catalog, store=store)
        )
        feed = ActivationFeed()
        service, bound = await start_activation(
            stack,
            config,
            catalog=catalog,
            scope=scope,
            store=store,
            clock=clock,
            observer=Observers(metrics.observer, feed) if config.web.listen else metrics.observer,
            scenarios=scenarios,
        )
        web_bound = await stack.enter_async_context(
            serve_web(config, catalog=catalog, scope=scope, store=store, feed=feed)
        )
        dns_bound = await stack.enter_async_context(run_dns(config, bound))
        addresses = BoundAddresses(
            tcp=tuple(bound), dns=tuple(dns_bound), metrics=metrics.bound, web=web_bound
        )
        stack.enter_context(runtime_file(config, addresses))
        log_listening(config, scope, addresses, counts=service.counts)
        if on_ready is not None:
            on_ready(addresses)
        await trigger()
    log.info("stopped")
