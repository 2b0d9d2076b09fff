"""One worker process of ``kms-host serve --workers N``.

:mod:`kms_host.host.supervisor` starts it as ``python -m kms_host.host.worker``; it is not for
people to run. A worker is a host without the once-only parts. It resolves the same configuration as
its supervisor (the same file and environment; the supervisor passes its flags on) except
the listen addresses: it binds the concrete ones the supervisor reserved, with SO_REUSEPORT,
so that the kernel spreads connections over the workers. It answers calls against the shared
data dir, and leaves ``runtime.json``, DNS and the ``/metrics`` endpoint to the supervisor
(its metrics go to the files that endpoint serves, :func:`~kms_host.host.metrics.worker_observer`).

The supervisor and the worker share one socket pair, the channel:

* once it listens, the worker writes one line on it: that is how the supervisor knows that
  every worker is ready before it logs ``listening``;
* the worker reads it until end of file, which comes when the supervisor is gone, even
  SIGKILLed: the worker then stops as on SIGTERM rather than serve on as an orphan.

Every log line carries ``worker``, the index, bound in structlog's context variables before
anything logs, so that the lines of all workers on the one stdout they share can be told
apart. Sibling workers write the client table all the time, so the counts a worker caches
for its ``counts`` events are reloaded at most every :data:`COUNTS_RELOAD_INTERVAL_S`; the
count in each answer is the committed tally, exact whatever the interval.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from pathlib import Path

import structlog

from kms_host import loop
from kms_host.addresses import format_address
from kms_host.clock import Clock
from kms_host.config import Config, ConfigOverrides, load_config
from kms_host.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError, KmsHostError
from kms_host.host.app import check_catalog_settings, signal_trigger, start_activation
from kms_host.host.metrics import worker_observer
from kms_host.host.reload import reload_scenarios
from kms_host.host.supervisor import READY
from kms_host.logs import configure_logging
from kms_host.policy.catalog_file import load_catalog
from kms_host.policy.scenario import ScenarioBook
from kms_host.storage import open_store

__all__ = ["COUNTS_RELOAD_INTERVAL_S", "main"]

log = structlog.get_logger("kms_host.worker")

COUNTS_RELOAD_INTERVAL_S = 1.0
"""Most often a worker reloads its cached counts after other workers' writes. Each reload is
one more store query before an answer; a sibling writes nearly between any two of them."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kms_host.host.worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--log-format", required=True)
    parser.add_argument("--log-level", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve as worker ``--index`` until SIGTERM/SIGINT or the supervisor's end."""
    args = _parser().parse_args(argv)
    structlog.contextvars.bind_contextvars(worker=args.index)
    channel = socket.socket(fileno=args.channel_fd)
    overrides = ConfigOverrides(
        listen=tuple(args.listen),
        data_dir=args.data_dir,
        log_format=args.log_format,
        log_level=args.log_level,
    )
    try:
        config = load_config(args.config, env=os.environ, overrides=overrides)
    except ConfigError as exc:
        print(f"kms-host worker {args.index}: {exc.summary()}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log.format, config.log.level)
    try:
        loop.run(lambda: _work(config, channel), config.server.event_loop)
    except ConfigError as exc:
        log.error("config_error", key=exc.key, detail=str(exc))
        return EXIT_USAGE
    except (KmsHostError, OSError) as exc:
        log.error("start_failed", detail=str(exc), error=type(exc).__name__)
        return EXIT_FAILURE
    return EXIT_OK


async def _work(config: Config, channel: socket.socket) -> None:
    clock = Clock(timedelta(seconds=config.clock.offset_s))
    scenarios = ScenarioBook(config.scenario)
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGHUP, reload_scenarios, scenarios, config.source
    )
    signalled = signal_trigger()
    catalog = load_catalog()
    scope = check_catalog_settings(config, catalog)
    reader, writer = await asyncio.open_unix_connection(sock=channel)
    try:
        async with contextlib.AsyncExitStack() as stack:
            store = await open_store(
                config.storage.data_dir,
                synchronous=config.storage.synchronous,
                changes_interval_s=COUNTS_RELOAD_INTERVAL_S,
                commit_delay_s=config.storage.commit_delay_ms / 1000,
            )
            stack.push_async_callback(store.close)
            _, bound = await start_activation(
                stack,
                config,
                catalog=catalog,
                scope=scope,
                store=store,
                clock=clock,
                observer=worker_observer(config.metrics.listen, catalog),
                scenarios=scenarios,
                reuse_port=True,
            )
            addresses = [format_address(address) for address in bound]
            log.info("worker_listening", addresses=addresses, pid=os.getpid())
            writer.write(READY)
            await writer.drain()
            await _first(signalled(), _supervisor_gone(reader))
    finally:
        writer.close()
    log.info("worker_stopped")


async def _supervisor_gone(channel: asyncio.StreamReader) -> None:
    """Return once the supervisor's end of the channel is closed (it writes nothing)."""
    await channel.read()
    log.warning("supervisor_gone")


async def _first(*waits: Awaitable[object]) -> None:
    """Wait until one of ``waits`` is done, then cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    raise SystemExit(main())
