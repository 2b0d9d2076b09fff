"""``kms-host bench``'s engine: a bounded asyncio load of real, verified activations.

Theory of operation: a run is a list of *levels* (a mode and a concurrency). A level starts
``concurrency`` workers that share one ticket budget (``max_requests``) and one deadline
(``duration_s``); each worker loops ticket -> activation until either runs out, so every
level stops by itself. An activation is :meth:`KmsClient.activate_pending` on a request
taken from a pool built before the clock starts (building is client-side crypto the load
generator need not pay for in the timed part), and its reply is verified with every check
of spec 5.7; a reply that fails a check is an error, never a success.

* ``fresh``: connect, bind, one call, close; the latency covers all of it.
* ``keepalive``: one connection per worker for the whole level; the latency is one call.
  A worker whose connection fails reconnects for its next ticket.

Errors are counted by kind: the :class:`ClientError` stage (``connect``, ``bind``, ``call``,
``verify``, ``timeout``, ``closed``) or ``hresult_0x...`` for a host's refusal.

Against the null ceiling (:mod:`kms_host.bench.null_server`) the pool holds the null server's
canned requests, whose replies verify; the client's work per activation is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from kms_host.bench.null_server import canned_exchanges, make_request
from kms_host.client.strict import ClientError, KmsClient
from protocol.kms import PendingRequest, ProtocolVersion, build_request, datetime_to_filetime

__all__ = [
    "BenchSettings",
    "LevelResult",
    "Mode",
    "Progress",
    "build_pool",
    "cpu_seconds",
    "parse_mix",
    "peak_rss_kib",
    "percentile",
    "run_level",
]

Mode = Literal["fresh", "keepalive"]
Progress = Callable[[int, int, float], None]
"""Called about twice a second with (activations, errors, seconds elapsed) of the level."""


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """One level's bounds and shape."""

    mode: Mode
    concurrency: int
    duration_s: float
    max_requests: int
    timeout_s: float = 10.0


@dataclass(slots=True)
class LevelResult:
    """What one level measured; latencies are seconds, rates per second of wall time."""

    target: str
    mode: Mode
    concurrency: int
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    server_peak_rss_kib: int | None = None
    server_cpu_s: float | None = None

    @property
    def rate(self) -> float:
        """Verified activations per second."""
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def taken(self) -> int:
        """Requests taken from the pool: each one ended verified or as an error."""
        return self.ok + self.errors.total()

    def merged(self, other: LevelResult) -> LevelResult:
        """This slice and a later slice of the same level, as one result."""
        cpu = (
            None
            if self.server_cpu_s is None or other.server_cpu_s is None
            else self.server_cpu_s + other.server_cpu_s
        )
        rss = [r for r in (self.server_peak_rss_kib, other.server_peak_rss_kib) if r is not None]
        return LevelResult(
            target=self.target,
            mode=self.mode,
            concurrency=self.concurrency,
            ok=self.ok + other.ok,
            errors=self.errors + other.errors,
            elapsed_s=self.elapsed_s + other.elapsed_s,
            client_cpu_s=self.client_cpu_s + other.client_cpu_s,
            latencies=self.latencies + other.latencies,
            server_peak_rss_kib=max(rss) if rss else None,
            server_cpu_s=cpu,
        )

    def as_dict(self) -> dict[str, object]:
        """The JSON form: no raw latencies, their percentiles in milliseconds."""
        ordered = sorted(self.latencies)
        return {
            "target": self.target,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "activations": self.ok,
            "errors": dict(sorted(self.errors.items())),
            "elapsed_s": round(self.elapsed_s, 3),
            "activations_per_s": round(self.rate, 1),
            "latency_ms": {
                name: round(percentile(ordered, q) * 1000, 3)
                for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
            },
            # Load-generator CPU per wall second: near 1.0 means the client was the limit.
            "client_cpu_share": round(self.client_cpu_s / self.elapsed_s, 2)
            if self.elapsed_s
            else 0.0,
            "server_cpu_share": round(self.server_cpu_s / self.elapsed_s, 2)
            if self.server_cpu_s is not None and self.elapsed_s
            else None,
            "server_peak_rss_kib": self.server_peak_rss_kib,
        }


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (0 for none); q=100 is the maximum."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
    return ordered[min(len(ordered), int(rank)) - 1]


def parse_mix(text: str) -> tuple[tuple[ProtocolVersion, int], ...]:
    """``"6"`` or ``"4:1,5:1,6:8"`` -> ((version, weight), ...); ValueError if malformed."""
    mix = []
    for part in text.split(","):
        version_text, _, weight_text = part.strip().partition(":")
        version = ProtocolVersion(int(version_text))
        weight = int(weight_text) if weight_text else 1
        if weight < 1:
            raise ValueError(f"weight of {version_text} must be at least 1")
        mix.append((version, weight))
    if len({version for version, _ in mix}) != len(mix):
        raise ValueError("each protocol version may appear once")
    return tuple(mix)


def _versions(mix: Sequence[tuple[ProtocolVersion, int]]) -> list[ProtocolVersion]:
    """One cycle of the mix, spread out (smooth weighted round robin): 4:1,6:3 -> 6,4,6,6."""
    total = sum(weight for _, weight in mix)
    credit = dict.fromkeys((version for version, _ in mix), 0)
    cycle = []
    for _ in range(total):
        for version, weight in mix:
            credit[version] += weight
        chosen = max(credit, key=lambda version: credit[version])
        credit[chosen] -= total
        cycle.append(chosen)
    return cycle


def build_pool(
    mix: Sequence[tuple[ProtocolVersion, int]],
    *,
    size: int,
    distinct: bool,
    null: bool,
    rng: Callable[[int], bytes] = os.urandom,
) -> list[PendingRequest]:
    """The requests a level cycles through, in mix order.

    ``distinct``: every request of the pool has its own CMID (a new client each, until the
    pool wraps); otherwise all share one. ``null``: the null server's canned requests.
    """
    order = _versions(mix)
    if null:
        canned = canned_exchanges()
        return [canned[version].pending for version in order]
    now = datetime_to_filetime(datetime.now(UTC))
    shared = uuid.UUID(bytes=rng(16), version=4)
    count = max(size, len(order)) if distinct else len(order)
    return [
        build_request(
            make_request(
                order[i % len(order)],
                uuid.UUID(bytes=rng(16), version=4) if distinct else shared,
                now,
            ),
            rng=rng,
        )
        for i in range(count)
    ]


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process and all its threads, or None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid: int) -> int | None:
    """The process's peak resident set (VmHWM), or None if it cannot be read."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


class _Level:
    """The shared state of one running level."""

    def __init__(
        self, settings: BenchSettings, pool: Sequence[PendingRequest], offset: int
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.tickets = itertools.count()
        self.next_request = itertools.islice(itertools.cycle(range(len(pool))), offset, None)
        self.deadline = time.monotonic() + settings.duration_s
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []

    def take(self) -> PendingRequest | None:
        """The next request, or None when the budget or the time is spent."""
        if next(self.tickets) >= self.settings.max_requests or time.monotonic() >= self.deadline:
            return None
        return self.pool[next(self.next_request)]

    def record(self, started: float, hresult: int) -> None:
        if hresult:
            self.errors[f"hresult_0x{hresult:08X}"] += 1
        else:
            self.ok += 1
            self.latencies.append(time.perf_counter() - started)


async def _fresh_worker(level: _Level, host: str, port: int) -> None:
    timeout = level.settings.timeout_s
    while (pending := level.take()) is not None:
        started = time.perf_counter()
        try:
            async with await KmsClient.connect(host, port, timeout_s=timeout) as client:
                result = await client.activate_pending(pending)
        except ClientError as exc:
            level.errors[exc.stage] += 1
            continue
        level.record(started, result.hresult)


async def _keepalive_worker(level: _Level, host: str, port: int) -> None:
    timeout = level.settings.timeout_s
    client: KmsClient | None = None
    try:
        while (pending := level.take()) is not None:
            started = time.perf_counter()
            try:
                if client is None:
                    client = await KmsClient.connect(host, port, timeout_s=timeout)
                result = await client.activate_pending(pending)
            except ClientError as exc:
                level.errors[exc.stage] += 1
                if client is not None:
                    await client.close()
                client = None
                continue
            level.record(started, result.hresult)
    finally:
        if client is not None:
            await client.close()


async def run_level(
    host: str,
    port: int,
    settings: BenchSettings,
    pool: Sequence[PendingRequest],
    *,
    target: str,
    progress: Progress | None = None,
    server_pid: int | None = None,
    offset: int = 0,
) -> LevelResult:
    """Run one level to its bounds and return what it measured.

    ``offset`` is where in ``pool`` to start: a level measured in slices continues where
    its previous slice stopped, so distinct CMIDs stay distinct across slices.
    """
    level = _Level(settings, pool, offset % len(pool))
    worker = _fresh_worker if settings.mode == "fresh" else _keepalive_worker
    server_cpu0 = cpu_seconds(server_pid) if server_pid else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.create_task(worker(level, host, port)) for _ in range(settings.concurrency)]
    ticker = asyncio.create_task(_tick(level, wall0, progress)) if progress else None
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    return LevelResult(
        target=target,
        mode=settings.mode,
        concurrency=settings.concurrency,
        ok=level.ok,
        errors=level.errors,
        elapsed_s=time.perf_counter() - wall0,
        client_cpu_s=time.process_time() - cpu0,
        latencies=level.latencies,
        server_peak_rss_kib=peak_rss_kib(server_pid) if server_pid else None,
        server_cpu_s=_delta(server_cpu0, cpu_seconds(server_pid) if server_pid else None),
    )


def _delta(before: float | None, after: float | None) -> float | None:
    return after - before if before is not None and after is not None else None


async def _tick(level: _Level, wall0: float, progress: Progress) -> None:
    while True:
        await asyncio.sleep(0.5)
        progress(level.ok, level.errors.total(), time.perf_counter() - wall0)
