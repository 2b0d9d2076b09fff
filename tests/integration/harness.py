"""Real daemons on 127.0.0.1 port 0 with a real SQLite file, and a request factory.

Product identities below are facts from the spec (sections 8.4 to 8.6), not read from our
catalog, so a catalog mistake shows up as a failing test.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from kms_host.client.strict import KmsClient
from kms_host.clock import Clock
from kms_host.config import ConfigOverrides, load_config
from kms_host.host.app import BoundAddresses, serve
from protocol.kms import KmsRequest, ProtocolVersion, datetime_to_filetime

WINDOWS = uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f")
OFFICE_2010 = uuid.UUID("59a52881-a989-479d-af46-f275c6370663")
OFFICE = uuid.UUID("0ff1ce15-a989-479d-af46-f275c6370663")


@dataclass(frozen=True)
class Product:
    application_id: uuid.UUID
    sku_id: uuid.UUID
    kms_id: uuid.UUID
    threshold: int


PRODUCTS = {
    "win10pro": Product(
        WINDOWS,
        uuid.UUID("2de67392-b7a7-462a-b1ca-108dd189f588"),
        uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148"),
        25,
    ),
    "ws2019dc": Product(
        WINDOWS,
        uuid.UUID("34e1ae55-27f8-4950-8877-7a03be5fb181"),
        uuid.UUID("8449b1fb-f0ea-497a-99ab-66ca96e9a0f5"),
        5,
    ),
    "ws2022dc": Product(
        WINDOWS,
        uuid.UUID("ef6cfc9f-8c5d-44ac-9aad-de6a2ea0ae03"),
        uuid.UUID("b74263e4-0f92-46c6-bcf8-c11d5efe2959"),
        5,
    ),
    "o2010pp": Product(
        OFFICE_2010,
        uuid.UUID("6f327760-8c5c-417c-9b61-836a98287e0c"),
        uuid.UUID("e85af946-2e25-47b7-83e1-bebcebeac611"),
        5,
    ),
    "o2016pp": Product(
        OFFICE,
        uuid.UUID("d450596f-894d-49e0-966a-fd39ed4c4c64"),
        uuid.UUID("85b5f61b-320b-4be3-814a-b76b2bfafc82"),
        5,
    ),
    "o2019pp": Product(
        OFFICE,
        uuid.UUID("85dd8b5f-eaa4-4af3-a628-cce9e77c9a03"),
        uuid.UUID("617d9eb1-ef36-4f82-86e0-a65ae07b96c6"),
        5,
    ),
    "o2021pp": Product(
        OFFICE,
        uuid.UUID("fbdb3e18-a8ef-4fb3-9183-dffd60bd0984"),
        uuid.UUID("86d50b16-4808-41af-b83b-b338274318b2"),
        5,
    ),
}


def make_request(
    product: str = "win10pro",
    *,
    version: ProtocolVersion = ProtocolVersion.V6,
    cmid: uuid.UUID | None = None,
    machine_name: str = "client01.lab.example",
    required: int | None = None,
    when: datetime | None = None,
    **overrides: Any,
) -> KmsRequest:
    p = PRODUCTS[product]
    fields: dict[str, Any] = {
        "version": version,
        "is_client_vm": 0,
        "license_status": 2,
        "grace_time_min": 43200,
        "application_id": p.application_id,
        "sku_id": p.sku_id,
        "kms_counted_id": p.kms_id,
        "client_machine_id": cmid or uuid.uuid4(),
        "required_client_count": p.threshold if required is None else required,
        "request_time": datetime_to_filetime(when or datetime.now(UTC)),
        "previous_client_machine_id": uuid.UUID(int=0),
        "machine_name": machine_name,
    }
    fields.update(overrides)
    return KmsRequest(**fields)


@dataclass
class RunningHost:
    port: int
    data_dir: Path
    clock: Clock
    logs: list[dict[str, Any]] = field(default_factory=list)
    host: str = "127.0.0.1"
    dns: tuple[tuple[str, int], ...] = ()
    web: tuple[tuple[str, int], ...] = ()
    metrics: tuple[tuple[str, int], ...] = ()

    def client(self, **options: Any) -> Any:
        return KmsClient.connect(self.host, self.port, **options)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.logs if entry.get("event") == name]


@contextlib.asynccontextmanager
async def run_host(
    tmp_path: Path,
    toml: str = "",
    *,
    clock: Clock | None = None,
    data_dir: Path | None = None,
    listen: str = "127.0.0.1:0",
) -> AsyncIterator[RunningHost]:
    """Start a real daemon on 127.0.0.1:0; stop it (gracefully) on exit."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_path = None
    if toml:
        config_path = tmp_path / "kms-host.toml"
        config_path.write_text(toml, encoding="utf-8")
    data = data_dir or tmp_path / "data"
    config = load_config(
        config_path, env={}, overrides=ConfigOverrides(listen=(listen,), data_dir=data)
    )
    clock = clock or Clock()
    stop = asyncio.Event()
    ready: asyncio.Future[BoundAddresses] = asyncio.get_running_loop().create_future()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(
            serve(config, shutdown_trigger=stop.wait, on_ready=ready.set_result, clock=clock)
        )
        done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises the start-up error
        assert ready.done(), "the host did not become ready within 10 s"
        bound = ready.result()
        host = RunningHost(
            port=bound.tcp[0][1],
            data_dir=data,
            clock=clock,
            logs=logs,
            dns=bound.dns,
            web=bound.web,
            metrics=bound.metrics,
        )
        try:
            yield host
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=15)
