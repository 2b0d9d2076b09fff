"""The Prometheus observer and its endpoint, without a daemon."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sightings import windows_sighting

from kms_host.addresses import ListenAddress
from kms_host.host.metrics import PrometheusObserver, WorkerMetrics, serve_metrics, worker_observer
from kms_host.host.observe import ActivationOutcome, NullObserver
from kms_host.policy.catalog_file import load_catalog
from kms_host.storage import open_store

CATALOG = load_catalog()
SEED = windows_sighting(
    0,
    seen_at=datetime.now(UTC),
    cmid=uuid.UUID(int=0),
    machine_name="",
    license_status=1,
    peer="seed",
)


def outcome(**changes: object) -> ActivationOutcome:
    fields: dict[str, object] = {
        "protocol": "6.0",
        "app": "windows",
        "host_key_group": "windows-server-2025",
        "hresult": 0,
        "result": "activated",
        "latency_s": 0.002,
        "count": 25,
    }
    fields.update(changes)
    return ActivationOutcome(**fields)  # type: ignore[arg-type]


def test_activations_refusals_and_latency() -> None:
    observer = PrometheusObserver(CATALOG)
    observer.activation(outcome())
    observer.activation(outcome())
    observer.activation(outcome(hresult=0xC004F042, result="refused", latency_s=0.2))
    observer.activation(outcome(result="probe", count=0))
    value = observer.registry.get_sample_value
    labels = {
        "protocol": "6.0",
        "app": "windows",
        "host_key_group": "windows-server-2025",
        "hresult": "0x00000000",
        "result": "activated",
    }
    assert value("kms_host_activations_total", labels) == 2
    assert value("kms_host_activations_total", {**labels, "result": "probe"}) == 1
    assert value("kms_host_refused_requests_total", {"hresult": "0xC004F042"}) == 1
    latency = "kms_host_request_duration_seconds"
    assert value(f"{latency}_count", {"result": "activated"}) == 2
    assert value(f"{latency}_bucket", {"result": "refused", "le": "0.1"}) == 0
    assert value(f"{latency}_bucket", {"result": "refused", "le": "0.25"}) == 1


def test_labels_a_client_controls_stay_in_bounded_sets() -> None:
    observer = PrometheusObserver(CATALOG)
    for n in range(50):  # made-up versions, application GUIDs and groups
        observer.activation(
            outcome(
                protocol=f"{n}.{n}",
                app=f"0000{n:04}-0000-0000-0000-000000000000",
                host_key_group=f"group-{n}",
                hresult=0x8007000D,
                result="malformed",
            )
        )
    observer.activation(outcome(protocol=None, app=None, host_key_group=None, result="malformed"))
    labels = {
        "protocol": "unknown",
        "app": "unknown",
        "host_key_group": "none",
        "hresult": "0x8007000D",
        "result": "malformed",
    }
    assert observer.registry.get_sample_value("kms_host_activations_total", labels) == 50
    [family] = [m for m in observer.registry.collect() if m.name == "kms_host_activations"]
    assert len([s for s in family.samples if s.name.endswith("_total")]) == 2


def test_counts_connections_and_malformed_pdus() -> None:
    observer = PrometheusObserver(CATALOG)
    observer.counts({"windows": 25, "office": 5, "0ff1ce00-unknown": 3})
    observer.counts({"windows": 26, "office": 0})
    for _ in range(3):
        observer.connection_opened()
    observer.connection_closed()
    observer.connection_refused()
    observer.protocol_violation("MalformedPdu")
    observer.protocol_violation("MalformedPdu")
    value = observer.registry.get_sample_value
    assert value("kms_host_current_count", {"app": "windows"}) == 26
    assert value("kms_host_current_count", {"app": "office"}) == 0
    assert value("kms_host_current_count", {"app": "unknown"}) == 3
    assert value("kms_host_open_connections") == 2
    assert value("kms_host_refused_connections_total") == 1
    assert value("kms_host_malformed_pdus_total", {"error": "MalformedPdu"}) == 2


def test_refused_connections_are_counted_by_reason() -> None:
    observer = PrometheusObserver(CATALOG)
    observer.connection_refused()
    observer.connection_refused("not_allowed")
    observer.connection_refused("not_allowed")
    observer.connection_refused("proxy_header_invalid")
    value = observer.registry.get_sample_value
    assert value("kms_host_connections_refused_total", {"reason": "max_connections"}) == 1
    assert value("kms_host_connections_refused_total", {"reason": "not_allowed"}) == 2
    assert value("kms_host_connections_refused_total", {"reason": "proxy_header_invalid"}) == 1
    assert value("kms_host_refused_connections_total") == 1  # its meaning kept: the limit's


def test_each_observer_has_its_own_registry() -> None:
    first, second = PrometheusObserver(CATALOG), PrometheusObserver(CATALOG)
    first.connection_refused()
    assert second.registry.get_sample_value("kms_host_refused_connections_total") == 0


@pytest.mark.asyncio
async def test_no_listen_address_serves_nothing(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        async with serve_metrics(None, catalog=CATALOG, store=store) as endpoint:
            assert isinstance(endpoint.observer, NullObserver)
            assert endpoint.bound == ()
    finally:
        await store.close()


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@pytest.mark.asyncio
async def test_endpoint_serves_the_registry_and_the_table_size_then_stops(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path)
    try:
        await store.seed(SEED, 3)
        async with serve_metrics(
            ListenAddress("127.0.0.1", 0), catalog=CATALOG, store=store
        ) as endpoint:
            [(host, port)] = endpoint.bound
            endpoint.observer.connection_refused()
            text = await asyncio.to_thread(fetch, f"http://{host}:{port}/metrics")
        assert "kms_host_refused_connections_total 1.0" in text
        assert "process_resident_memory_bytes" in text
        assert 'kms_host_clients{app="windows"} 3.0' in text
        with pytest.raises(urllib.error.URLError):
            await asyncio.to_thread(fetch, f"http://{host}:{port}/metrics")
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_supervisors_endpoint_serves_worker_files_and_reads_the_count(
    tmp_path: Path,
) -> None:
    # The workers' own files are covered by tests/integration/test_workers.py: this process
    # imported prometheus-client without PROMETHEUS_MULTIPROC_DIR, so it cannot write them.
    store = await open_store(tmp_path)

    async def counts() -> dict[str, int]:
        return {"windows": 27, "office": 5}

    try:
        await store.seed(SEED, 2)
        files = WorkerMetrics(tmp_path / "workers", counts)
        files.directory.mkdir()
        async with serve_metrics(
            ListenAddress("127.0.0.1", 0), catalog=CATALOG, store=store, workers=files
        ) as endpoint:
            assert isinstance(endpoint.observer, NullObserver)  # the supervisor answers nothing
            [(host, port)] = endpoint.bound
            text = await asyncio.to_thread(fetch, f"http://{host}:{port}/metrics")
    finally:
        await store.close()
    assert 'kms_host_current_count{app="windows"} 27.0' in text
    assert 'kms_host_current_count{app="office"} 5.0' in text
    assert 'kms_host_clients{app="windows"} 2.0' in text
    assert "process_resident_memory_bytes" not in text  # it would be the supervisor's alone


def test_a_workers_observer_leaves_the_count_to_the_supervisor() -> None:
    assert isinstance(worker_observer(None, CATALOG), NullObserver)
    observer = worker_observer(ListenAddress("127.0.0.1", 0), CATALOG)
    assert isinstance(observer, PrometheusObserver)
    observer.counts({"windows": 30})
    observer.connection_opened()
    value = observer.registry.get_sample_value
    assert value("kms_host_current_count", {"app": "windows"}) is None
    assert value("kms_host_open_connections") == 1
