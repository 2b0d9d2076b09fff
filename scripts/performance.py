#!/usr/bin/env python3
"""Regenerate docs/performance.png and docs/performance.json: kms-host vs the null ceiling.

One run, one machine: starts ``kms-host serve`` (fresh data dir, JSON logs to a file, as in
production) and the null ceiling server (``kms-host bench --null-server``), both pinned to
CPU 0, then ``kms-host bench`` pinned to CPU 1 sweeps fresh and keep-alive at each
concurrency against both, level by level, so every pair of numbers is taken side by side.
Everything is on 127.0.0.1, and every level is bounded by ``--duration`` and ``--requests``.

Usage (matplotlib is needed for the chart only: ``pip install matplotlib``)::

    python scripts/performance.py [--duration 5] [--concurrency 1,8,64,256] [--mix 6]

It prints the Markdown table that docs/performance.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SERVER_CPU, BENCH_CPU = "0", "1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pinned(cpu: str, command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", cpu, *command]
    print("warning: not pinned (taskset missing or one CPU)", file=sys.stderr)
    return command


def _wait_for(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.2)
        else:
            return
    raise SystemExit(f"{what} did not listen on port {port} within 30 s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    kms = [sys.executable, "-m", "kms_host"]
    with tempfile.TemporaryDirectory(prefix="kms-host-perf-") as tmp:
        host_port, null_port = _free_port(), _free_port()
        log = Path(tmp, "serve.log").open("wb")  # noqa: SIM115 - closed below
        serve_cmd = [*kms, "serve", "--listen", f"127.0.0.1:{host_port}"]
        serve_cmd += ["--data-dir", str(Path(tmp, "data")), "--log-format", "json"]
        null_cmd = [*kms, "bench", "--null-server", "--listen", f"127.0.0.1:{null_port}"]
        server = subprocess.Popen(_pinned(SERVER_CPU, serve_cmd), stdout=log, stderr=log)  # noqa: S603
        null = subprocess.Popen(_pinned(SERVER_CPU, null_cmd), stdout=subprocess.DEVNULL)  # noqa: S603
        try:
            _wait_for(host_port, server, "kms-host serve")
            _wait_for(null_port, null, "the null server")
            bench_cmd = [*kms, "bench", f"127.0.0.1:{host_port}"]
            bench_cmd += ["--ceiling", f"127.0.0.1:{null_port}", "--server-pid", str(server.pid)]
            bench_cmd += ["--ceiling-pid", str(null.pid)]
            bench_cmd += ["--concurrency", args.concurrency, "--duration", str(args.duration)]
            bench_cmd += ["--mix", args.mix, "--json"]
            out = subprocess.run(  # noqa: S603
                _pinned(BENCH_CPU, bench_cmd), check=True, capture_output=True, text=True
            ).stdout
        finally:
            for process in (server, null):
                process.terminate()
                process.wait(timeout=30)
            log.close()
    report: dict[str, Any] = json.loads(out)
    report["command"] = "python scripts/performance.py " + " ".join(sys.argv[1:])
    return report


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - optional: only the chart needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(11, 4.8), dpi=110)
    styles = {"kms-host": "-", "null": "--"}
    colors = {"fresh": "tab:blue", "keepalive": "tab:orange"}
    for target in ("kms-host", "null"):
        for mode in ("fresh", "keepalive"):
            points = [
                (level["concurrency"], level["activations_per_s"])
                for level in report["levels"]
                if level["target"] == target and level["mode"] == mode
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                label = f"{'null ceiling (measured)' if target == 'null' else 'kms-host'}, {mode}"
                axes.plot(xs, ys, styles[target], color=colors[mode], marker="o", label=label)
    for mode in ("fresh", "keepalive"):
        projected = [
            (ratio["concurrency"], ratio["null_projected_per_s"])
            for ratio in report["ratios"]
            if ratio["mode"] == mode and ratio.get("null_projected_per_s")
        ]
        if projected:
            xs, ys = zip(*projected, strict=True)
            label = f"null server projected to a full core, {mode}"
            axes.plot(xs, ys, ":", color=colors[mode], marker="x", label=label)
    axes.set_yscale("log")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("concurrent clients")
    axes.set_ylabel("verified activations / s")
    machine = report["machine"]
    axes.set_title(
        f"kms-host vs null ceiling (Python {machine['python']}, server CPU "
        f"{machine['server_cpus']}, load CPU {machine['bench_cpus']})",
        fontsize=10,
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    figure.savefig(path)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(report: dict[str, Any]) -> str:
    rows = [
        "| mode | clients | kms-host act/s | null act/s | fraction | null projected act/s "
        "| fraction of projected | kms-host p50 / p99 ms | CPU: host, gen / null, gen "
        "| CPU µs/act: host / gen vs null | fraction by CPU |"
    ]
    rows.append("|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|")
    levels = {(lv["target"], lv["mode"], lv["concurrency"]): lv for lv in report["levels"]}
    for ratio in report["ratios"]:
        key = (ratio["mode"], ratio["concurrency"])
        host, null = levels[("kms-host", *key)], levels[("null", *key)]
        projected = ratio["null_projected_per_s"]
        rows.append(
            f"| {key[0]} | {key[1]} | {host['activations_per_s']:,.0f} | "
            f"{null['activations_per_s']:,.0f} | {_percent(ratio['fraction_of_null'])} | "
            f"{'-' if projected is None else f'{projected:,.0f}'} | "
            f"{_percent(ratio['fraction_of_null_projected'])} | "
            f"{host['latency_ms']['p50']:.1f} / {host['latency_ms']['p99']:.1f} | "
            f"{_share(host['server_cpu_share'])}, {_share(host['client_cpu_share'])} / "
            f"{_share(null['server_cpu_share'])}, {_share(null['client_cpu_share'])} | "
            f"{_micros(ratio.get('host_cpu_us_per_activation'))} / "
            f"{_micros(ratio.get('generator_cpu_us_per_activation'))} | "
            f"{_percent(ratio.get('fraction_by_cpu'))} |"
        )
    return "\n".join(rows)


def _micros(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per level")
    parser.add_argument("--concurrency", default="1,8,64,256")
    parser.add_argument("--mix", default="6", help="protocol mix, e.g. 6 or 4:1,5:1,6:8")
    parser.add_argument("--output", type=Path, default=DOCS, help="where the files go")
    parser.add_argument("--from-json", type=Path, help="redraw from a saved report, no run")
    args = parser.parse_args()
    report = json.loads(args.from_json.read_text()) if args.from_json else run(args)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "performance.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(report, args.output / "performance.png")
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
