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

Every activation is real, so the host records each CMID it is sent: a run leaves up to
``--pool`` Windows clients in the target's table, all with the machine name
``bench.lab.example``, and says so at the end. ``--cleanup`` with the target's
``--data-dir`` (or ``--config``), on the host's machine, deletes those rows after the run,
or alone without a TARGET; the table is a file, which the host's TCP port cannot reach.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from kms_host.addresses import parse_host_port
from kms_host.bench import load as bench
from kms_host.bench.null_server import BENCH_MACHINE_NAME, NullServer
from kms_host.cli.bench_report import (
    Leftover,
    level_line,
    plan_line,
    print_report,
    progress_bar,
    report,
)
from kms_host.cli.views import Failure, require_table
from kms_host.config import Config, ConfigOverrides, load_config
from kms_host.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError, StorageError
from kms_host.storage import open_store
from protocol.kms import ProtocolVersion

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
    cleanup = parser.add_argument_group(
        "cleanup", "remove the bench's clients from the target's table, on the host's machine"
    )
    cleanup.add_argument(
        "--cleanup",
        action="store_true",
        help=f"after the run (or alone, without TARGET), remove the clients named"
        f" {BENCH_MACHINE_NAME}",
    )
    cleanup.add_argument("--data-dir", type=Path, help="the target daemon's data dir")
    cleanup.add_argument("--config", type=Path, help="the target daemon's TOML config")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    problem = _usage_problem(args)
    if problem:
        return _usage(problem)
    if args.null_server:
        return asyncio.run(_serve_null(*args.listen))
    try:
        # Before the run: a table that is not there should not cost the whole sweep.
        table = _table(args) if args.cleanup else None
    except ConfigError as exc:
        return _usage(exc.summary())
    except Failure as exc:
        print(f"kms-host bench: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    document, leftover, code = asyncio.run(_bench_and_clean(args, table))
    if document is not None:
        if args.json:
            print(json.dumps(document, indent=2))
        else:
            print_report(document, sys.stdout)
    print(leftover.line(), file=sys.stderr)
    return code


def _usage_problem(args: argparse.Namespace) -> str | None:
    if args.null_server and args.cleanup:
        return "--cleanup is for a host's table, not for --null-server"
    if args.target is None and not (args.null_server or args.cleanup):
        return "a TARGET (HOST:PORT), --null-server or --cleanup is required"
    if (args.data_dir or args.config) and not args.cleanup:
        return "--data-dir and --config name the table --cleanup empties"
    if (
        not 0 < args.duration <= 600
        or not 0 < args.requests <= 10_000_000
        or args.pool < 1
        or not 1 <= args.rounds <= 100
    ):
        return "--duration, --requests, --pool and --rounds are bounded"
    return None


def _usage(message: str) -> int:
    print(f"kms-host bench: {message}", file=sys.stderr)
    return EXIT_USAGE


def _table(args: argparse.Namespace) -> Config:
    """The target's data dir, resolved like ``status``'s; Failure if it has no table."""
    config = load_config(
        args.config, env=os.environ, overrides=ConfigOverrides(data_dir=args.data_dir)
    )
    require_table(config)
    return config


async def _bench_and_clean(
    args: argparse.Namespace, table: Config | None
) -> tuple[dict[str, Any] | None, Leftover, int]:
    """The run's report (None with ``--cleanup`` alone), what it left, and the exit code.

    The cleanup deletes through the storage API, as ``clients forget`` does: safe beside the
    running daemon, which reloads its counts when the table changes under it.
    """
    results, mix, sent = await _bench(args) if args.target else ([], None, 0)
    exact = all(not r.errors for r in results if r.target == "kms-host")
    leftover = Leftover(sent, exact)
    code = EXIT_OK if args.target is None or any(r.ok for r in results) else EXIT_FAILURE
    if table is not None:
        try:
            store = await open_store(table.storage.data_dir, synchronous=table.storage.synchronous)
            try:
                removed = await store.forget_machine(BENCH_MACHINE_NAME)
            finally:
                await store.close()
        except StorageError as exc:
            print(f"kms-host bench: --cleanup: {exc}", file=sys.stderr)
            code = EXIT_FAILURE
        else:
            leftover = Leftover(sent, exact, removed, str(table.storage.data_dir))
    if mix is None:
        return None, leftover, code
    return report(args, mix, results, leftover), leftover, code


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


async def _bench(
    args: argparse.Namespace,
) -> tuple[list[bench.LevelResult], tuple[tuple[ProtocolVersion, int], ...], int]:
    """Every level's results, the mix, and how many distinct CMIDs the target was sent.

    Progress goes to stderr: the plan, then a line per finished level, and on a terminal a
    bar while a level runs.
    """
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
    modes = _MODES[args.mode]
    total = len(modes) * len(args.concurrency)
    terminal = sys.stderr.isatty()
    print(plan_line(args, modes), file=sys.stderr, flush=True)
    results: list[bench.LevelResult] = []
    for index, (mode, concurrency) in enumerate(
        itertools.product(modes, args.concurrency), start=1
    ):
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
                label = f"[{index}/{total}] {mode} x{concurrency} {name}"
                result = await bench.run_level(
                    host,
                    port,
                    settings,
                    pools[name],
                    target=name,
                    progress=progress_bar(sys.stderr, label, settings) if terminal else None,
                    server_pid=args.server_pid if name == "kms-host" else args.ceiling_pid,
                    offset=taken,
                )
                if terminal:
                    sys.stderr.write("\r\x1b[K")
                level[name] = done.merged(result) if done else result
        print(level_line(index, total, list(level.values())), file=sys.stderr, flush=True)
        results += level.values()
    # Every level starts at the pool's first request: the longest one reached the furthest.
    reached = max((r.taken for r in results if r.target == "kms-host"), default=0)
    sent = len({pending.request.client_machine_id for pending in pools["kms-host"][:reached]})
    return results, mix, sent
