"""Prometheus metrics: a :class:`~kms_host.observe.HostObserver` and its HTTP endpoint (issue 4).

``[metrics] listen = "HOST:PORT"`` serves ``/metrics`` in the Prometheus text format; empty
(the default) serves nothing and the host keeps its :class:`~kms_host.observe.NullObserver`.

Why prometheus-client's own threaded WSGI server (``start_wsgi_server``) rather than an
asyncio handler: it is the library's maintained HTTP code (HEAD, gzip, ``name[]`` filters,
HTTP/1.1 details a hand-written parser gets wrong), and a scrape renders in its own thread,
so neither rendering nor a slow scraper ever holds the event loop that answers clients. The
observer methods run on the event loop and only bump locked counters (microseconds).

The client table's size is read at scrape time, from the scrape thread: it hands
:meth:`~kms_host.storage.ClientStore.sizes` to the event loop, which passes it on to the
store's worker thread, so SQLite is never touched on the loop thread and the figure is never
staler than the scrape, whoever wrote the table (the daemon or ``kms-host clients``).

Label values come from bounded sets (the catalog's application and host-key group keys, the
three protocol versions, our own HRESULTs and error class names): whatever a client sends,
it cannot create new time series.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
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
from prometheus_client.registry import Collector

from kms_host.catalog import Catalog
from kms_host.config import ListenAddress
from kms_host.errors import StorageError
from kms_host.observe import ActivationOutcome, HostObserver, NullObserver
from kms_host.storage import ClientStore

__all__ = ["MetricsEndpoint", "PrometheusObserver", "serve_metrics"]

SCRAPE_STORE_TIMEOUT_S = 5.0
"""How long a scrape waits for the client table's size before leaving the series out."""

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""A served activation takes about a millisecond (one fsync'd SQLite commit dominates)."""

_PROTOCOLS = frozenset({"4.0", "5.0", "6.0"})
_UNKNOWN = "unknown"
_NONE = "none"


def _hex(hresult: int) -> str:
    return f"0x{hresult & 0xFFFFFFFF:08X}"


class PrometheusObserver:
    """Counts what the host does into its own registry (never the process-global one)."""

    def __init__(self, catalog: Catalog, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._apps = frozenset(app.key for app in catalog.applications.values())
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
        )
        self._refused_connections = Counter(
            "kms_host_refused_connections",
            "Connections closed at accept because server.max_connections were open.",
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
        return app if app in self._apps else _UNKNOWN

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

    def connection_refused(self) -> None:
        """Count a connection refused over ``server.max_connections``."""
        self._refused_connections.inc()

    def protocol_violation(self, error: str) -> None:
        """Count a malformed PDU by its error class (our own class names: a bounded set)."""
        self._malformed.labels(error).inc()


class _ClientTableCollector(Collector):
    """``kms_host_clients{app}``: rows in the client table, read when scraped."""

    def __init__(
        self, store: ClientStore, loop: asyncio.AbstractEventLoop, observer: PrometheusObserver
    ) -> None:
        self._store = store
        self._loop = loop
        self._observer = observer

    def collect(self) -> Iterable[Metric]:
        """Runs in the scrape thread; leaves the series out if the store cannot answer."""
        try:
            future = asyncio.run_coroutine_threadsafe(self._store.sizes(), self._loop)
        except RuntimeError:  # the loop is closed: the host is gone
            return []
        try:
            sizes = future.result(timeout=SCRAPE_STORE_TIMEOUT_S)
        except (StorageError, TimeoutError, CancelledError):
            future.cancel()
            return []
        family = GaugeMetricFamily(
            "kms_host_clients",
            "Rows in the client table per application (kms-host clients), live or not.",
            labels=["app"],
        )
        for label, count in sorted(_by_label(sizes, self._observer.app_label).items()):
            family.add_metric([label], count)
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


@contextlib.asynccontextmanager
async def serve_metrics(
    listen: ListenAddress | None, *, catalog: Catalog, store: ClientStore
) -> AsyncIterator[MetricsEndpoint]:
    """Serve ``/metrics`` on ``listen`` until the context exits; nothing when it is None.

    Binding happens before the context is entered, so a port in use stops the start like the
    KMS port does. On exit the HTTP thread is shut down and joined (within its 0.5 s poll).
    """
    if listen is None:
        yield MetricsEndpoint()
        return
    observer = PrometheusObserver(catalog)
    ProcessCollector(registry=observer.registry)
    observer.registry.register(_ClientTableCollector(store, asyncio.get_running_loop(), observer))
    server, thread = await asyncio.to_thread(
        start_wsgi_server, listen.port, listen.host, observer.registry
    )
    try:
        yield MetricsEndpoint(observer=observer, bound=(_address(server),))
    finally:
        await asyncio.to_thread(_stop, server, thread)


def _address(server: WSGIServer) -> tuple[str, int]:
    host, port = server.server_address[:2]
    return str(host), int(port)


def _stop(server: WSGIServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join()
