"""Prometheus metrics: a :class:`~kms_host.host.observe.HostObserver` and its HTTP endpoint.

``[metrics] listen = "HOST:PORT"`` serves ``/metrics`` in the Prometheus text format; empty
(the default) serves nothing and the host keeps its :class:`~kms_host.host.observe.NullObserver`.

Why prometheus-client's own threaded WSGI server (``start_wsgi_server``) rather than an
asyncio handler: it is the library's maintained HTTP code (HEAD, gzip, ``name[]`` filters,
HTTP/1.1 details a hand-written parser gets wrong), and a scrape renders in its own thread,
so neither rendering nor a slow scraper ever holds the event loop that answers clients. The
observer methods run on the event loop and only bump locked counters (microseconds).

The client table's size is read at scrape time, from the scrape thread: it hands
:meth:`~kms_host.storage.ClientStore.sizes` to the event loop, which passes it on to the
store's worker thread, so SQLite is never touched on the loop thread and the figure is never
staler than the scrape, whoever wrote the table (the daemon or ``kms-host clients``).

With ``serve --workers N`` the workers answer the calls and the supervisor serves
``/metrics``, by prometheus-client's multiprocess mode (its documented way for servers of
several processes): each worker's observer writes to files in a directory that the
supervisor puts in the workers' ``PROMETHEUS_MULTIPROC_DIR`` (read when prometheus-client is
imported), and the supervisor's endpoint adds them up: counters and histograms sum, open
connections sum over the live workers. The current count is not a worker's to report: a
worker's cached figures trail its siblings' activations, and of two near-simultaneous
answers the smaller may be set last. The supervisor reads it from the client table at scrape
time instead, as the table's size is read. ``process_*`` is left out there: it would describe
the supervisor alone, and the library cannot add up several processes' figures.

Label values come from bounded sets (the catalog's application and host-key group keys, the
three protocol versions, our own HRESULTs and error class names): whatever a client sends,
it cannot create new time series.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_wsgi_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from kms_host.addresses import ListenAddress
from kms_host.errors import StorageError
from kms_host.host.observe import ActivationOutcome, HostObserver, NullObserver
from kms_host.policy.catalog import Catalog
from kms_host.storage import ClientStore

__all__ = [
    "MetricsEndpoint",
    "PrometheusObserver",
    "WorkerMetrics",
    "forget_worker",
    "serve_metrics",
    "worker_observer",
]

SCRAPE_STORE_TIMEOUT_S = 5.0
"""How long a scrape waits for the client table's size before leaving the series out."""

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""A served activation takes about a millisecond (one fsync'd SQLite commit dominates)."""

_PROTOCOLS = frozenset({"4.0", "5.0", "6.0"})
_UNKNOWN = "unknown"
_NONE = "none"


def _hex(hresult: int) -> str:
    return f"0x{hresult & 0xFFFFFFFF:08X}"


def _catalog_apps(catalog: Catalog) -> frozenset[str]:
    return frozenset(app.key for app in catalog.applications.values())


def _app_label(apps: frozenset[str], app: str | None) -> str:
    """The ``app`` label: a catalog application key, else "unknown"."""
    return app if app is not None and app in apps else _UNKNOWN


class PrometheusObserver:
    """Counts what the host does into its own registry (never the process-global one)."""

    def __init__(self, catalog: Catalog, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._apps = _catalog_apps(catalog)
        self._groups = frozenset(group.key for group in catalog.host_key_groups)
        self._activations = Counter(
            "kms_host_activations",
            "Answered RequestActivation calls; result is activated, refused, malformed,"
            " storage_failed or probe (the reserved probe CMID, never counted by the host).",
            ["protocol", "app", "host_key_group", "hresult", "result"],
            registry=self.registry,
        )
        self._refused = Counter(
            "kms_host_refused_requests",
            "Requests answered with a KMS error HRESULT (refused or malformed, probes aside).",
            ["hresult"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "kms_host_request_duration_seconds",
            "Time from a call's arrival to its answer, storage commit included.",
            ["result"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._count = Gauge(
            "kms_host_current_count",
            "The client count the host reports per application (slmgr /dlv 'Current count').",
            ["app"],
            registry=self.registry,
        )
        self._open = Gauge(
            "kms_host_open_connections",
            "TCP connections being served.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._refused_connections = Counter(
            "kms_host_refused_connections",
            "Connections closed at accept because server.max_connections were open.",
            registry=self.registry,
        )
        self._connections_refused = Counter(
            "kms_host_connections_refused",
            "Connections closed at accept, by reason: max_connections, not_allowed (a peer"
            " outside server.allow) or proxy_header_invalid (no valid PROXY v2 header from a"
            " server.proxy_protocol_from address).",
            ["reason"],
            registry=self.registry,
        )
        self._peer_limited = Counter(
            "kms_host_peer_limited",
            "Connections closed at accept and calls faulted (nca_s_server_too_busy) because"
            " one peer went over server.max_connections_per_peer, peer_connection_rate_per_s"
            " or peer_request_rate_per_s; limit names which.",
            ["limit"],
            registry=self.registry,
        )
        self._timed_out = Counter(
            "kms_host_timed_out_connections",
            "Connections closed by server.idle_timeout_s (timeout=idle) or"
            " server.exchange_timeout_s (timeout=exchange).",
            ["timeout"],
            registry=self.registry,
        )
        self._malformed = Counter(
            "kms_host_malformed_pdus",
            "RPC protocol violations by peers, by error class.",
            ["error"],
            registry=self.registry,
        )

    def app_label(self, app: str | None) -> str:
        """The ``app`` label: a catalog application key, else "unknown"."""
        return _app_label(self._apps, app)

    def activation(self, outcome: ActivationOutcome) -> None:
        """Count one answered call and its latency."""
        protocol = outcome.protocol if outcome.protocol in _PROTOCOLS else _UNKNOWN
        group = outcome.host_key_group if outcome.host_key_group in self._groups else _NONE
        hresult = _hex(outcome.hresult)
        self._activations.labels(
            protocol, self.app_label(outcome.app), group, hresult, outcome.result
        ).inc()
        if outcome.hresult and outcome.result in ("refused", "malformed"):
            self._refused.labels(hresult).inc()
        self._latency.labels(outcome.result).observe(outcome.latency_s)

    def counts(self, counts: dict[str, int]) -> None:
        """Set the current count of every application given (the service gives them all)."""
        for label, count in _by_label(counts, self.app_label).items():
            self._count.labels(label).set(count)

    def connection_opened(self) -> None:
        """One more open connection."""
        self._open.inc()

    def connection_closed(self) -> None:
        """One fewer open connection."""
        self._open.dec()

    def connection_refused(self, reason: str = "max_connections") -> None:
        """Count a refused connection by reason (the listener's own words: a bounded set).

        ``kms_host_refused_connections`` keeps its meaning, max_connections alone, for the
        dashboards that read it.
        """
        self._connections_refused.labels(reason).inc()
        if reason == "max_connections":
            self._refused_connections.inc()

    def peer_limited(self, limit: str) -> None:
        """Count a refusal by a per-peer limit (its name: one of three)."""
        self._peer_limited.labels(limit).inc()

    def connection_timed_out(self, timeout: str) -> None:
        """Count a connection closed by a timeout ("idle" or "exchange")."""
        self._timed_out.labels(timeout).inc()

    def protocol_violation(self, error: str) -> None:
        """Count a malformed PDU by its error class (our own class names: a bounded set)."""
        self._malformed.labels(error).inc()


class _WorkerObserver(PrometheusObserver):
    """A worker's observer: everything but the current count, which the supervisor reads."""

    def counts(self, counts: dict[str, int]) -> None:
        """Leave the count to the supervisor's scrape (see the module docstring)."""


_Reader = Callable[[], Coroutine[Any, Any, dict[str, int]]]


class _ScrapedGauge(Collector):
    """A per-application gauge read on the event loop when scraped (the client table's)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        read: _Reader,
        *,
        loop: asyncio.AbstractEventLoop,
        apps: frozenset[str],
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._read = read
        self._loop = loop
        self._apps = apps

    def _label(self, app: str) -> str:
        return _app_label(self._apps, app)

    def collect(self) -> Iterable[Metric]:
        """Runs in the scrape thread; leaves the series out if the store cannot answer."""
        try:
            future = asyncio.run_coroutine_threadsafe(self._read(), self._loop)
        except RuntimeError:  # the loop is closed: the host is gone
            return []
        try:
            per_app = future.result(timeout=SCRAPE_STORE_TIMEOUT_S)
        except (StorageError, TimeoutError, CancelledError):
            future.cancel()
            return []
        family = GaugeMetricFamily(self._name, self._documentation, labels=["app"])
        for label, value in sorted(_by_label(per_app, self._label).items()):
            family.add_metric([label], value)
        return [family]


def _by_label(per_app: dict[str, int], label: Callable[[str], str]) -> dict[str, int]:
    """Sum per ``app`` label: every unknown application GUID shares "unknown"."""
    totals: dict[str, int] = {}
    for app, value in per_app.items():
        totals[label(app)] = totals.get(label(app), 0) + value
    return totals


@dataclass(frozen=True, slots=True)
class MetricsEndpoint:
    """What the host gets from :func:`serve_metrics`: the observer to pass on, and where."""

    observer: HostObserver = field(default_factory=NullObserver)
    bound: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """What the supervisor of ``serve --workers`` serves instead of an observer of its own."""

    directory: Path
    """The workers' ``PROMETHEUS_MULTIPROC_DIR``."""
    counts: _Reader
    """The current count per application, as the workers would answer it, from the table."""


@contextlib.asynccontextmanager
async def serve_metrics(
    listen: ListenAddress | None,
    *,
    catalog: Catalog,
    store: ClientStore,
    workers: WorkerMetrics | None = None,
) -> AsyncIterator[MetricsEndpoint]:
    """Serve ``/metrics`` on ``listen`` until the context exits; nothing when it is None.

    With ``workers`` the endpoint serves what the workers wrote and the counts it reads, and
    the observer it gives is a :class:`NullObserver`: the supervisor answers no calls itself.
    Binding happens before the context is entered, so a port in use stops the start like the
    KMS port does. On exit the HTTP thread is shut down and joined (within its 0.5 s poll).
    """
    if listen is None:
        yield MetricsEndpoint()
        return
    loop, apps = asyncio.get_running_loop(), _catalog_apps(catalog)
    observer: HostObserver
    if workers is None:
        observer = own = PrometheusObserver(catalog)
        registry = own.registry
        ProcessCollector(registry=registry)
    else:
        observer, registry = NullObserver(), CollectorRegistry()
        # prometheus-client's multiprocess module has no annotations; called as documented.
        MultiProcessCollector(registry, path=str(workers.directory))  # type: ignore[no-untyped-call]
        registry.register(
            _ScrapedGauge(
                "kms_host_current_count",
                "The client count the host reports per application (slmgr /dlv 'Current count').",
                workers.counts,
                loop=loop,
                apps=apps,
            )
        )
    registry.register(
        _ScrapedGauge(
            "kms_host_clients",
            "Rows in the client table per application (kms-host clients), live or not.",
            store.sizes,
            loop=loop,
            apps=apps,
        )
    )
    server, thread = await asyncio.to_thread(start_wsgi_server, listen.port, listen.host, registry)
    try:
        yield MetricsEndpoint(observer=observer, bound=(_address(server),))
    finally:
        await asyncio.to_thread(_stop, server, thread)


def worker_observer(listen: ListenAddress | None, catalog: Catalog) -> HostObserver:
    """What a worker of ``serve --workers`` reports to: the files its supervisor serves, if any.

    They are prometheus-client's, in the ``PROMETHEUS_MULTIPROC_DIR`` the supervisor put in the
    worker's environment; a worker serves no endpoint of its own.
    """
    return NullObserver() if listen is None else _WorkerObserver(catalog)


def forget_worker(directory: Path, pid: int) -> None:
    """Drop an exited worker's live gauges (its open connections); its counters stay summed."""
    mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def _address(server: WSGIServer) -> tuple[str, int]:
    host, port = server.server_address[:2]
    return str(host), int(port)


def _stop(server: WSGIServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join()
