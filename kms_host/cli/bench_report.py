"""``kms-host bench``'s words: the report (JSON and text), a line per level, what it left.

The report is one object (``--json``) or a table on stdout; the lines that follow a run as
it goes (the plan, a line per level, a progress bar on a terminal, what the run left in the
target's client table) go to stderr, so that stdout stays the report alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from kms_host.bench import load as bench
from kms_host.bench.null_server import BENCH_MACHINE_NAME
from protocol.kms import ProtocolVersion, rijndael_build

__all__ = ["Leftover", "level_line", "plan_line", "print_report", "progress_bar", "report"]


@dataclass(frozen=True, slots=True)
class Leftover:
    """The rows a run added to the target's client table, and what ``--cleanup`` removed.

    Every request ``bench`` sends is a real activation of Windows 10/11 Pro, so the host
    records (and counts) each CMID it was sent, with the machine name
    :data:`~kms_host.bench.null_server.BENCH_MACHINE_NAME`.
    """

    clients: int
    """Distinct CMIDs the target was sent: the rows it holds, or at most that many if some
    requests failed before the host recorded them."""
    exact: bool
    removed: int | None = None
    data_dir: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "clients": self.clients,
            "exact": self.exact,
            "app": "windows",
            "machine_name": BENCH_MACHINE_NAME,
            "removed": self.removed,
            "data_dir": self.data_dir,
        }

    def line(self) -> str:
        if self.removed is not None:
            return (
                f"kms-host bench: removed {self.removed} clients named {BENCH_MACHINE_NAME}"
                f" from the client table in {self.data_dir}"
                + (f" ({self.clients} sent by this run)" if self.clients else "")
            )
        if not self.clients:
            return "kms-host bench: no client reached the target's table"
        return (
            f"kms-host bench: left {'' if self.exact else 'up to '}{self.clients} Windows"
            f" client{'s' if self.clients > 1 else ''} in the target's client table, counted"
            f" like real ones, named"
            f" {BENCH_MACHINE_NAME}; on the host's machine, `kms-host bench --cleanup"
            " --data-dir DIR` removes them"
        )


def plan_line(args: argparse.Namespace, modes: Sequence[str]) -> str:
    """What the run is about to do and its bound in time, before the first level."""
    levels = len(modes) * len(args.concurrency)
    shape = f"{', '.join(modes)} x {', '.join(map(str, args.concurrency))}"
    target = f"{args.target[0]}:{args.target[1]}"
    ceiling = (
        f", each beside the null ceiling at {args.ceiling[0]}:{args.ceiling[1]}"
        f" in {args.rounds} slices"
        if args.ceiling
        else ""
    )
    per_level = args.duration * (2 if args.ceiling else 1)
    return (
        f"kms-host bench: {levels} level{'s' if levels > 1 else ''} ({shape}) against"
        f" {target}{ceiling}; each stops after {args.duration:g} s or {args.requests:,} activations"
        f" (at most {levels * per_level:g} s in all)"
    )


def level_line(index: int, total: int, results: Sequence[bench.LevelResult]) -> str:
    """One finished level, each target's figures, as a line of its own."""
    first = results[0]
    parts = [
        f"{result.target} {result.rate:,.1f}/s ({result.ok:,} verified,"
        f" {result.errors.total():,} errors, {result.elapsed_s:.1f} s)"
        for result in results
    ]
    return f"[{index}/{total}] {first.mode} x{first.concurrency}: {'; '.join(parts)}"


def progress_bar(
    stream: TextIO, label: str, settings: bench.BenchSettings, *, width: int = 24
) -> bench.Progress:
    """A bar redrawn in place: the fraction of the level's time or budget spent, if more."""

    def show(done: int, errors: int, elapsed: float) -> None:
        spent = max(elapsed / settings.duration_s, (done + errors) / settings.max_requests)
        filled = round(min(1.0, spent) * width)
        rate = done / elapsed if elapsed else 0.0
        stream.write(
            f"\r\x1b[K{label} [{'#' * filled}{'.' * (width - filled)}] {done:,} ok,"
            f" {errors:,} errors, {rate:,.0f}/s"
        )
        stream.flush()

    return show


def _affinity(pid: int | None) -> list[int] | None:
    with contextlib.suppress(OSError):
        return sorted(os.sched_getaffinity(pid or 0))
    return None


def report(
    args: argparse.Namespace,
    mix: tuple[tuple[ProtocolVersion, int], ...],
    results: list[bench.LevelResult],
    leftover: Leftover,
) -> dict[str, Any]:
    """The whole run as one JSON-safe object (``--json``)."""
    levels = [result.as_dict() for result in results]
    by_key = {(r.target, r.mode, r.concurrency): r for r in results}
    ratios = [
        _ratio(host, by_key[("null", host.mode, host.concurrency)])
        for host in results
        if host.target == "kms-host" and ("null", host.mode, host.concurrency) in by_key
    ]
    return {
        "machine": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "bench_cpus": _affinity(None),
            "server_cpus": _affinity(args.server_pid) if args.server_pid else None,
            "bench_rijndael": rijndael_build(),
        },
        "settings": {
            "target": f"{args.target[0]}:{args.target[1]}",
            "ceiling": f"{args.ceiling[0]}:{args.ceiling[1]}" if args.ceiling else None,
            "mix": {f"{version.value}": weight for version, weight in mix},
            "cmids": args.cmids,
            "pool": min(args.pool, args.requests),
            "duration_s": args.duration,
            "requests": args.requests,
        },
        "levels": levels,
        "ratios": ratios,
        "left_in_table": leftover.as_dict(),
    }


def _ratio(host: bench.LevelResult, null: bench.LevelResult) -> dict[str, Any]:
    """kms-host's rate over the null server's, measured, projected and read from CPU time.

    The projection divides the null rate by the null server's CPU share: when the load
    generator, not the null server, was the limit, it estimates what the null server could
    take (assuming its cost per activation stays flat). ``fraction_by_cpu`` is the load
    generator's CPU per activation against the null server over kms-host's CPU per
    activation: when each was the limit on its own core, the measured fraction tends to it,
    and CPU time per activation moves less than rates when the machine's speed drifts
    (docs/performance.md). It needs ``--server-pid``.
    """
    null_cpu = null.server_cpu_s
    projected = null.rate / (null_cpu / null.elapsed_s) if null_cpu and null.elapsed_s else None
    host_cpu = _cpu_us_per_activation(host.server_cpu_s, host.ok)
    generator_cpu = _cpu_us_per_activation(null.client_cpu_s, null.ok)
    return {
        "mode": host.mode,
        "concurrency": host.concurrency,
        "fraction_of_null": round(host.rate / null.rate, 3) if null.rate else None,
        "null_projected_per_s": round(projected, 1) if projected else None,
        "fraction_of_null_projected": round(host.rate / projected, 3) if projected else None,
        "host_cpu_us_per_activation": host_cpu,
        "generator_cpu_us_per_activation": generator_cpu,
        "fraction_by_cpu": (
            round(generator_cpu / host_cpu, 3) if host_cpu and generator_cpu else None
        ),
    }


def _cpu_us_per_activation(cpu_s: float | None, activations: int) -> float | None:
    return round(cpu_s / activations * 1e6, 1) if cpu_s and activations else None


def print_report(report: dict[str, Any], out: TextIO) -> None:
    """The run as a table of levels, then the ratios to the null ceiling."""
    machine = report["machine"]
    out.write(
        f"kms-host bench: Python {machine['python']} on {machine['cpus']} CPUs "
        f"(bench on {machine['bench_cpus']}, server on {machine['server_cpus']})\n"
    )
    out.write(
        f"{'target':9} {'mode':9} {'conc':>5} {'act/s':>9} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8} {'gen':>5} {'srv':>5}  errors\n"
    )
    for level in report["levels"]:
        latency = level["latency_ms"]
        errors = ", ".join(f"{kind} {count}" for kind, count in level["errors"].items()) or "-"
        rss = level["server_peak_rss_kib"]
        server_cpu = level["server_cpu_share"]
        out.write(
            f"{level['target']:9} {level['mode']:9} {level['concurrency']:>5} "
            f"{level['activations_per_s']:>9,.1f} {latency['p50']:>8.2f} {latency['p90']:>8.2f} "
            f"{latency['p99']:>8.2f} {latency['max']:>8.2f} {level['client_cpu_share']:>5.2f} "
            f"{'-' if server_cpu is None else f'{server_cpu:.2f}':>5}  "
            f"{errors}{f'  (server peak RSS {rss / 1024:.1f} MiB)' if rss else ''}\n"
        )
    for ratio in report["ratios"]:
        fraction, projected = ratio["fraction_of_null"], ratio["fraction_of_null_projected"]
        shown = f"{fraction:.1%}" if fraction is not None else "n/a"
        if ratio["fraction_by_cpu"] is not None:
            generator, host = (
                ratio["generator_cpu_us_per_activation"],
                ratio["host_cpu_us_per_activation"],
            )
            shown += (
                f" (by CPU per activation: generator {generator:,.0f} us / host {host:,.0f} us"
                f" = {ratio['fraction_by_cpu']:.1%})"
            )
        if projected is not None:
            shown += f" (of the null server's projected {ratio['null_projected_per_s']:,.0f}/s: "
            shown += f"{projected:.1%})"
        out.write(f"kms-host / null ceiling, {ratio['mode']} x{ratio['concurrency']}: {shown}\n")
