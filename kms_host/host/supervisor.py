"""``kms-host serve --workers N``: N processes answering on one port, and their supervisor.

Theory of operation:

* Why processes. One asyncio process spends a core on crypto and SQLite; more cores need
  more processes. Each worker (:mod:`kms_host.host.worker`) is a whole activation host with its
  own listener, service and SQLite connection on the shared data dir. Every activation still
  commits its row before it is answered, and its count is the tally of that same
  transaction, so counts stay exact across workers: SQLite serialises their write
  transactions, and a writer waits for the others (``BEGIN IMMEDIATE`` and the store's busy
  timeout) instead of failing.
* One port. The supervisor binds every listen address first, without listening
  (:func:`~kms_host.host.listener.reserve_addresses`). That turns port 0, host names and the
  default's IPv4 fallback into concrete addresses, which every worker then binds with
  SO_REUSEPORT; the kernel spreads connections over them. The reservations are closed once
  every worker listens.
* Once-only parts stay here: migrations and the host identity are done before any worker
  starts, so none races to create them; ``runtime.json`` names the supervisor's pid, the
  workers' pids and the shared addresses; DNS runs here; ``/metrics`` is served here from
  what the workers write (prometheus-client's multiprocess mode, in :data:`METRICS_DIR`
  under the data dir, emptied at every start); so is the dashboard (``[web]``), which reads
  the shared table for counts and clients; the recent-activations feed is a worker's own and
  is not served here.
* Signals. SIGTERM or SIGINT stops the host: ``runtime.json`` goes, DNS stops, and each
  worker gets SIGTERM and drains as a single host does; a second signal kills the workers.
  SIGHUP is passed on (the workers reload their scenario rules). Workers run in sessions of
  their own, so a terminal's Ctrl-C reaches the supervisor alone and each worker gets one
  signal per stop, never the "second signal" that would force its exit.
* A worker that exits on its own is a failure, not something to paper over: the supervisor
  logs ``worker_exited``, stops the others gracefully and exits 1 (:class:`WorkerError`),
  for systemd's or Docker's restart policy to act on. Restarting it here would hide a crash
  loop from them and would need a backoff policy of its own.
* If the supervisor itself dies (SIGKILL), each worker sees its channel close and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from kms_host.addresses import ListenAddress, format_address
from kms_host.clock import Clock
from kms_host.config import Config
from kms_host.errors import WorkerError
from kms_host.host.app import (
    BoundAddresses,
    check_catalog_settings,
    log_listening,
    run_dns,
    runtime_file,
)
from kms_host.host.identity import load_identity
from kms_host.host.listener import reserve_addresses
from kms_host.host.lock import hold_data_dir
from kms_host.host.metrics import WorkerMetrics, forget_worker, serve_metrics
from kms_host.policy.activation import AppTally, reported_count
from kms_host.policy.catalog import Catalog
from kms_host.policy.catalog_file import load_catalog
from kms_host.storage import ClientStore, open_store
from kms_host.web.feed import ActivationFeed
from kms_host.web.server import serve_web

__all__ = ["METRICS_DIR", "READY", "WORKER_START_TIMEOUT_S", "WORKER_STOP_MARGIN_S", "supervise"]

log = structlog.get_logger("kms_host.supervisor")

WORKER_START_TIMEOUT_S = 30.0
"""How long the workers get to listen, from their start; beyond it the start fails."""

WORKER_STOP_MARGIN_S = 10.0
"""How long a stopping worker gets beyond ``server.shutdown_grace_s`` (to close its store)
before it is killed."""

READY = b"listening\n"
"""What a worker writes on its channel once it listens (:mod:`kms_host.host.worker`)."""

METRICS_DIR = "metrics-workers"
"""The workers' prometheus-client files, under the data dir; emptied at every start."""


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    """The supervisor's end of the channel: read for :data:`READY`, open while it lives."""
    listening: bool = False
    """It said so: its signal handlers are installed (SIGHUP would kill it before)."""
    reported: bool = False


class _Workers:
    """The worker processes: started, watched, signalled and stopped together."""

    def __init__(self, config: Config, metrics_dir: Path | None) -> None:
        self._config = config
        self._metrics_dir = metrics_dir
        self._workers: list[_Worker] = []
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        """Every worker's pid, by index."""
        return [worker.process.pid for worker in self._workers]

    @property
    def all_exited_zero(self) -> bool:
        """Whether every worker has exited, each with status 0."""
        return all(worker.process.returncode == 0 for worker in self._workers)

    async def start(self, addresses: list[ListenAddress]) -> None:
        """Start every worker and wait until each listens."""
        for index in range(self._config.server.workers):
            self._workers.append(await self._spawn(index, addresses))
        try:
            async with asyncio.timeout(WORKER_START_TIMEOUT_S):
                for worker in self._workers:
                    await self._ready(worker)
        except TimeoutError:
            message = f"not every worker listened within {WORKER_START_TIMEOUT_S:g} s"
            raise WorkerError(message) from None

    async def _spawn(self, index: int, addresses: list[ListenAddress]) -> _Worker:
        config = self._config
        ours, theirs = socket.socketpair()
        command = [
            *(sys.executable, "-m", "kms_host.host.worker", "--index", str(index)),
            *("--channel-fd", str(theirs.fileno())),
            *("--data-dir", str(config.storage.data_dir)),
            *("--log-format", config.log.format, "--log-level", config.log.level),
            *(("--config", str(config.source)) if config.source else ()),
            *(option for address in addresses for option in ("--listen", str(address))),
        ]
        env = None
        if self._metrics_dir is not None:  # read by prometheus-client when a worker imports it
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self._metrics_dir)}
        try:
            process = await asyncio.create_subprocess_exec(
                *command, pass_fds=(theirs.fileno(),), start_new_session=True, env=env
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker's copy only: its exit must close the channel
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return _Worker(index, process, reader, writer)

    async def _ready(self, worker: _Worker) -> None:
        if await worker.reader.readline() != READY:  # EOF: the worker exited
            await worker.process.wait()
            self._report(worker)
            raise WorkerError(f"worker {worker.index} exited before it listened")
        worker.listening = True

    async def watch(self, stop: asyncio.Event) -> _Worker | None:
        """Wait for ``stop`` or a worker's exit; return the worker that exited, if one did."""
        stopping = asyncio.ensure_future(stop.wait())
        exits = {asyncio.ensure_future(w.process.wait()): w for w in self._workers}
        try:
            done, _ = await asyncio.wait({stopping, *exits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopping, *exits):
                task.cancel()
        if stopping in done:
            return None
        worker = exits[done.pop()]
        self._report(worker)
        return worker

    def signal(self, signum: int, *, listening_only: bool = False) -> None:
        """Send ``signum`` to every worker still running (that listens, if ``listening_only``)."""
        for worker in self._workers:
            if worker.process.returncode is None and (worker.listening or not listening_only):
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)

    def reload(self) -> None:
        """Pass SIGHUP on: each listening worker re-reads its scenario rules."""
        self.signal(signal.SIGHUP, listening_only=True)

    async def stop(self) -> None:
        """SIGTERM the running workers and wait for them; kill any still there after the grace."""
        self._stopping = True
        self.signal(signal.SIGTERM)
        waits = {asyncio.ensure_future(w.process.wait()): w for w in self._workers}
        if waits:
            grace = self._config.server.shutdown_grace_s + WORKER_STOP_MARGIN_S
            _, late = await asyncio.wait(waits, timeout=grace)
            if late:
                log.warning("workers_killed", pids=[waits[task].process.pid for task in late])
                self.signal(signal.SIGKILL)
                await asyncio.wait(late)
        for worker in self._workers:
            self._report(worker)
            worker.writer.close()

    def _report(self, worker: _Worker) -> None:
        """Log an exited worker's ``worker_exited`` once; drop its live metrics."""
        if worker.reported:
            return
        worker.reported = True
        code = worker.process.returncode
        assert code is not None
        clean = self._stopping and code == 0
        (log.info if clean else log.error)(
            "worker_exited",
            worker=worker.index,
            pid=worker.process.pid,
            exit_code=code if code >= 0 else None,
            signal=signal.Signals(-code).name if code < 0 else None,
        )
        if self._metrics_dir is not None:
            forget_worker(self._metrics_dir, worker.process.pid)


def _metrics_dir(config: Config) -> Path | None:
    """The workers' metrics directory, emptied (this run's files only); None without metrics."""
    if config.metrics.listen is None:
        return None
    path = config.storage.data_dir / METRICS_DIR
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _counts(
    config: Config, catalog: Catalog, store: ClientStore, clock: Clock
) -> Callable[[], Coroutine[Any, Any, dict[str, int]]]:
    """A reader of the current counts, computed from the table as a worker would answer them.

    For ``listening`` and the metrics endpoint: the workers' cached counts trail each other's
    activations, the table does not.
    """
    window = timedelta(days=config.counting.window_days)
    none = AppTally(live_clients=0, max_required_count=0)

    async def read() -> dict[str, int]:
        tallies = await store.tallies(since=clock.now() - window)
        every = dict.fromkeys((app.key for app in catalog.applications.values()), none) | tallies
        return {
            app: reported_count(tally, required=0, counting=config.counting)
            for app, tally in sorted(every.items())
        }

    return read


def _handle_signals(stop: asyncio.Event, workers: _Workers) -> None:
    loop = asyncio.get_running_loop()

    def on_stop(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("forced_exit", signal=name)
            workers.signal(signal.SIGKILL)
            return
        log.info("signal_received", signal=name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop, signum)
    loop.add_signal_handler(signal.SIGHUP, workers.reload)


async def supervise(config: Config) -> None:
    """Run ``server.workers`` workers until SIGTERM/SIGINT; WorkerError if one fails."""
    log.info("config", **config.as_dict())
    catalog = load_catalog()
    scope = check_catalog_settings(config, catalog)
    clock = Clock(timedelta(seconds=config.clock.offset_s))
    data_dir = config.storage.data_dir
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        # Held for the workers too: they are this host, so they never take it themselves.
        stack.enter_context(hold_data_dir(data_dir))
        metrics_dir = _metrics_dir(config)
        workers = _Workers(config, metrics_dir)
        _handle_signals(stop, workers)
        if metrics_dir is not None:
            stack.callback(shutil.rmtree, metrics_dir, ignore_errors=True)
        # The data dir is made ready here, once, before any worker opens it.
        store = await open_store(data_dir, synchronous=config.storage.synchronous)
        stack.push_async_callback(store.close)
        load_identity(
            data_dir, catalog=catalog, host=config.host, today=clock.now().date(), rng=os.urandom
        )
        counts = _counts(config, catalog, store, clock)
        metrics = await stack.enter_async_context(
            serve_metrics(
                config.metrics.listen,
                catalog=catalog,
                store=store,
                workers=None if metrics_dir is None else WorkerMetrics(metrics_dir, counts),
            )
        )
        reserved = reserve_addresses(config.server.listen)
        stack.push_async_callback(workers.stop)
        try:
            bound = [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in reserved]
            await workers.start([ListenAddress(host, port) for host, port in bound])
        finally:
            for sock in reserved:
                sock.close()
        addresses = [format_address(address) for address in bound]
        log.info("workers_started", pids=workers.pids, addresses=addresses)
        # The dashboard reads the shared table; the workers' activations are theirs alone.
        web_bound = await stack.enter_async_context(
            serve_web(
                config,
                catalog=catalog,
                scope=scope,
                store=store,
                feed=ActivationFeed(available=False),
            )
        )
        dns_bound = await stack.enter_async_context(run_dns(config, bound))
        everything = BoundAddresses(
            tcp=tuple(bound), dns=tuple(dns_bound), metrics=metrics.bound, web=web_bound
        )
        stack.enter_context(runtime_file(config, everything, workers=tuple(workers.pids)))
        log_listening(config, scope, everything, counts=await counts(), workers=len(workers.pids))
        exited = await workers.watch(stop)
        if exited is not None:
            raise WorkerError(f"worker {exited.index} (pid {exited.process.pid}) exited")
    if not workers.all_exited_zero:
        raise WorkerError("not every worker stopped cleanly")
    log.info("stopped")
