r"""``kms-host bench``: measure a host with real, verified activations.

``kms-host bench HOST:PORT`` sweeps modes and concurrencies against a running host, each
level bounded by ``--duration`` and ``--requests``. ``--ceiling HOST:PORT`` names a null
ceiling server (``kms-host bench --null-server``) measured at every level beside the host,
in ``--rounds`` alternating slices (3 by default), so the report gives the host's rate as a
fraction of it and a drift in the machine's speed affects both. On a 2-core machine, pin
the servers to one core and the load generator to the other (docs/performance.md)::

    taskset -c 0 kms-host serve --listen 127.0.0.1:1688 &  SERVE_PID=$!
    taskset -c 0 kms-host bench --null-server --listen 127.0.0.1:1689 &  NULL_PID=$!
    taskset -c 1 kms-host bench 127.0.0.1:1688 --ceiling 127.0.0.1:1689 \
        --server-pid $SERVE_PID --ceiling-pid $NULL_PID
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
from typing import Any, TextIO

from kms_host.addresses import parse_host_port
from kms_host.bench import load as bench
from kms_host.bench.null_server import NullServer
from protocol.kms import ProtocolVersion, rijndael_build

__all__ = ["register"]

_MODES: dict[str, tuple[bench.Mode, ...]] = {
    "fresh": ("fresh",),
    "keepalive": ("keepalive",),
    "both": ("fresh", "keepalive"),
}


def _address(text: str, *, lowest_port: int = 1) -> tuple[str, int]:
    try:
        return parse_host_port(text, min_port=lowest_port)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _listen_address(text: str) -> tuple[str, int]:
    return _address(text, lowest_port=0)  # port 0: any free port (tests)


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers") from exc
    if not levels or any(not 1 <= level <= 1024 for level in levels):
        raise argparse.ArgumentTypeError("each concurrency must be from 1 to 1024")
    return levels


def _mix(text: str) -> tuple[tuple[ProtocolVersion, int], ...]:
    try:
        return bench.parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bench`` subcommand."""
    parser = commands.add_parser("bench", help="load-test a KMS host with verified activations")
    parser.add_argument("target", nargs="?", type=_address, help="the host, HOST:PORT")
    parser.add_argument("--ceiling", type=_address, help="a null server to compare with")
    parser.add_argument("--null-server", action="store_true", help="run the null ceiling server")
    parser.add_argument(
        "--listen", type=_listen_address, default=("127.0.0.1", 1689), help="--null-server address"
    )
    parser.add_argument("--mode", choices=tuple(_MODES), default="both")
    parser.add_argument("--concurrency", type=_levels, default=(1, 8, 64, 256))
    protocol = parser.add_mutually_exclusive_group()
    protocol.add_argument("--protocol", type=_mix, dest="mix", help="one version: 4, 5 or 6")
    protocol.add_argument("--mix", type=_mix, help="weighted versions, e.g. 4:1,5:1,6:8")
    parser.add_argument("--cmids", choices=("distinct", "repeated"), default="distinct")
    parser.add_argument("--pool", type=int, default=4096, help="distinct requests built ahead")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per level")
    parser.add_argument("--requests", type=int, default=100_000, help="activations per level")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per exchange")
    parser.add_argument(
        "--rounds", type=int, default=3, help="with --ceiling: alternating slices per level"
    )
    parser.add_argument("--server-pid", type=int, help="report the host's peak RSS and CPU")
    parser.add_argument("--ceiling-pid", type=int, help="report the null server's CPU")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.null_server:
        return asyncio.run(_serve_null(*args.listen))
    if args.target is None:
        print("kms-host bench: a TARGET (HOST:PORT) or --null-server is required", file=sys.stderr)
        return 2
    if (
        not 0 < args.duration <= 600
        or not 0 < args.requests <= 10_000_000
        or args.pool < 1
        or not 1 <= args.rounds <= 100
    ):
        print(
            "kms-host bench: --duration, --requests, --pool and --rounds are bounded",
            file=sys.stderr,
        )
        return 2
    report = asyncio.run(_bench(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report, sys.stdout)
    return 0 if any(level["activations"] for level in report["levels"]) else 1


async def _serve_null(host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with NullServer(host, port) as server:
        bound_host, bound_port = server.address
        print(f"null ceiling server listening on {bound_host}:{bound_port}", flush=True)
        await stop.wait()
    return 0


def _progress(stream: TextIO, label: str) -> bench.Progress | None:
    if not stream.isatty():
        return None

    def show(done: int, errors: int, elapsed: float) -> None:
        rate = done / elapsed if elapsed else 0.0
        stream.write(f"\r\x1b[K{label}: {done} ok, {errors} errors, {rate:,.0f}/s, {elapsed:.1f} s")
        stream.flush()

    return show


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    mix = args.mix or bench.parse_mix("6")
    distinct = args.cmids == "distinct"
    size = min(args.pool, args.requests)
    pools = {"kms-host": bench.build_pool(mix, size=size, distinct=distinct, null=False)}
    targets = {"kms-host": args.target}
    if args.ceiling:
        pools["null"] = bench.build_pool(mix, size=size, distinct=distinct, null=True)
        targets["null"] = args.ceiling
    # With a ceiling, each level is taken in alternating slices (host, null, host, null, ...)
    # so that this machine's drift in speed, up to 2x within minutes, falls on both alike.
    rounds = args.rounds if args.ceiling else 1
    results: list[bench.LevelResult] = []
    for mode in _MODES[args.mode]:
        for concurrency in args.concurrency:
            level: dict[str, bench.LevelResult] = {}
            for slices_left in range(rounds, 0, -1):
                for name, (host, port) in targets.items():
                    done = level.get(name)
                    taken = done.taken if done else 0
                    settings = bench.BenchSettings(
                        mode,
                        concurrency,
                        args.duration / rounds,
                        -(-(args.requests - taken) // slices_left),  # --requests in all
                        args.timeout,
                    )
                    result = await bench.run_level(
                        host,
                        port,
                        settings,
                        pools[name],
                        target=name,
                        progress=_progress(sys.stderr, f"{name} {mode} x{concurrency}"),
                        server_pid=args.server_pid if name == "kms-host" else args.ceiling_pid,
                        offset=taken,
                    )
                    if sys.stderr.isatty():
                        sys.stderr.write("\r\x1b[K")
                    level[name] = done.merged(result) if done else result
            results += level.values()
    return _report(args, mix, results)


def _affinity(pid: int | None) -> list[int] | None:
    with contextlib.suppress(OSError):
        return sorted(os.sched_getaffinity(pid or 0))
    return None


def _report(
    args: argparse.Namespace,
    mix: tuple[tuple[ProtocolVersion, int], ...],
    results: list[bench.LevelResult],
) -> dict[str, Any]:
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


def _print_report(report: dict[str, Any], out: TextIO) -> None:
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
