"""The host's lifecycle: build every part from the config, serve, and stop in order.

``serve()`` takes an optional ``shutdown_trigger`` (hypercorn's pattern, architecture 4.8):
the CLI passes none and gets SIGTERM/SIGINT handling; tests pass an event's ``wait`` and
read the bound port from ``on_ready``. Stop order: stop accepting, let calls in flight finish
within ``server.shutdown_grace_s``, cancel the rest, close storage. A second signal forces
the exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from kms_host.catalog import load_catalog
from kms_host.clock import Clock
from kms_host.config import Config
from kms_host.errors import ConfigError
from kms_host.identity import load_identity
from kms_host.server import KmsServer, ServerLimits
from kms_host.service import ActivationService
from kms_host.storage import open_store

__all__ = ["BoundAddresses", "serve"]

log = structlog.get_logger("kms_host.app")


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    """Where the host is reachable once every socket is bound."""

    tcp: tuple[tuple[str, int], ...]


ShutdownTrigger = Callable[[], Awaitable[object]]


def _signal_trigger() -> ShutdownTrigger:
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


async def serve(
    config: Config,
    *,
    shutdown_trigger: ShutdownTrigger | None = None,
    on_ready: Callable[[BoundAddresses], None] | None = None,
    clock: Clock | None = None,
) -> None:
    """Run the host until the trigger fires (or a signal arrives)."""
    clock = clock or Clock()
    trigger = shutdown_trigger or _signal_trigger()
    log.info("config", **config.as_dict())
    catalog = load_catalog()
    try:
        scope = catalog.resolve_scope(config.host.scope)
    except ValueError as exc:
        raise ConfigError(str(exc), key="host.scope") from exc
    store = await open_store(config.storage.data_dir, synchronous=config.storage.synchronous)
    try:
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
        )
        await service.start()
        server = KmsServer(
            listen=config.server.listen,
            handler=service.handle,
            limits=ServerLimits(
                idle_timeout_s=config.server.idle_timeout_s,
                max_connections=config.server.max_connections,
                max_pdu_bytes=config.server.max_pdu_bytes,
                ndr64=config.server.ndr64,
                btfn=config.server.btfn,
            ),
        )
        bound = await server.start()
        log.info(
            "listening",
            addresses=[f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in bound],
            data_dir=str(config.storage.data_dir),
            scope=sorted(scope),
            counting_mode=config.counting.mode.value,
            counts=service.counts,
        )
        if on_ready is not None:
            on_ready(BoundAddresses(tcp=tuple(bound)))
        await trigger()
        log.info("stopping", open_connections=server.open_connections)
        await server.stop(config.server.shutdown_grace_s)
    finally:
        await store.close()
    log.info("stopped")
