"""What ``status``, ``clients`` and ``products`` share: they read the data dir, not the daemon.

So they work beside a running host, inside its container and after it stopped: SQLite in WAL
mode lets them read while the daemon writes, and the few writes (``clients forget/reset/seed``)
take the write lock up front (``BEGIN IMMEDIATE``) and wait for the daemon's commit. The daemon
notices such a write and reloads the counts it caches
(:meth:`~kms_host.storage.ClientStore.changed_elsewhere`).

Configuration is resolved like ``serve``'s (``--config``, ``$KMS_HOST_CONFIG``,
``KMS_HOST_*``), so in a container ``status`` finds ``/data`` without flags. Exit codes as
for ``serve``: 0 success, 1 a runtime failure (no client table, storage error, nothing
matched), 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from kms_host.config import Config, ConfigOverrides, CountingMode, Prefill, load_config
from kms_host.errors import EXIT_FAILURE, EXIT_USAGE, ConfigError, KmsHostError
from kms_host.host.app import RUNTIME_FILE
from kms_host.host.report import APPS, LICENSE_LABELS, host_now, iso
from kms_host.storage import DATABASE_FILE

__all__ = [
    "APPS",
    "LICENSE_LABELS",
    "Failure",
    "add_common",
    "command",
    "daemon_config",
    "format_table",
    "host_now",
    "iso",
    "read_runtime",
    "report",
    "require_table",
]


class Failure(KmsHostError):
    """A command cannot do what was asked; the message is the one line the operator sees."""


def add_common(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    # A sub-action's copies are SUPPRESSed so that ``clients --data-dir D reset`` keeps D.
    unset = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", type=Path, default=unset, help="TOML config file")
    parser.add_argument("--data-dir", type=Path, default=unset, help="the daemon's data dir")
    parser.add_argument(
        "--json", action="store_true", default=unset if suppress else False, help="JSON output"
    )


Run = Callable[[argparse.Namespace, Config], Coroutine[Any, Any, int]]


def command(run: Run) -> Callable[[argparse.Namespace], int]:
    """Resolve the config like ``serve``, run, and map failures to exit codes."""

    def handler(args: argparse.Namespace) -> int:
        try:
            config = load_config(
                args.config, env=os.environ, overrides=ConfigOverrides(data_dir=args.data_dir)
            )
            config = daemon_config(config, read_runtime(config.storage.data_dir))
            return asyncio.run(run(args, config))
        except ConfigError as exc:
            print(f"kms-host: config error at {exc.key}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except BrokenPipeError:
            # ``kms-host clients | head`` stopped reading: the Python docs' quiet exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILURE
        except (KmsHostError, OSError) as exc:
            print(f"kms-host {args.command}: {exc}", file=sys.stderr)
            return EXIT_FAILURE

    return handler


def require_table(config: Config) -> None:
    if not (config.storage.data_dir / DATABASE_FILE).exists():
        raise Failure(
            f"no client table in {config.storage.data_dir} (has the daemon run there? --data-dir)"
        )


def read_runtime(data_dir: Path) -> dict[str, Any] | None:
    """What a daemon wrote at start (``runtime.json``) and whether its pid runs; None if absent.

    A file that is there but unreadable is a Failure naming it: guessing "not running" would
    hide the daemon a user asks about.
    """
    path = data_dir / RUNTIME_FILE
    try:
        document = json.loads(path.read_text("utf-8"))
        pid = int(document["pid"])
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise Failure(f"{path} is not a kms-host runtime file ({exc!r})") from None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        running = False  # killed without a clean stop: the file is stale
    except PermissionError:
        running = True  # alive, under another user
    else:
        running = True
    return {**document, "running": running}


def daemon_config(config: Config, runtime: dict[str, Any] | None) -> Config:
    """``config`` with the running daemon's answer-shaping settings, when one runs.

    The views report what the daemon answers, not what their own file and environment
    would make a new daemon answer; with no daemon running, ``config`` stays as given.
    """
    if runtime is None or not runtime["running"] or not isinstance(runtime.get("settings"), dict):
        return config
    settings: dict[str, Any] = runtime["settings"]
    try:
        return dataclasses.replace(
            config,
            counting=dataclasses.replace(
                config.counting,
                mode=CountingMode(settings["counting_mode"]),
                prefill=Prefill(settings["prefill"]),
                fixed_count=int(settings["fixed_count"]),
                window_days=int(settings["window_days"]),
            ),
            clock=dataclasses.replace(config.clock, offset_s=float(settings["clock_offset_s"])),
            host=dataclasses.replace(
                config.host,
                scope=tuple(str(name) for name in settings["scope"]),
                activation_interval_min=int(settings["activation_interval_min"]),
                renewal_interval_min=int(settings["renewal_interval_min"]),
            ),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise Failure(
            f"{config.storage.data_dir / RUNTIME_FILE}: unreadable settings ({exc!r})"
        ) from None


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, decorated: bool) -> str:
    """Columns aligned with two spaces; on a terminal, a rule under the header and a total."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    out = [line(headers).rstrip()]
    if decorated:
        out.append("  ".join("-" * width for width in widths))
    out += [line(row).rstrip() for row in rows]
    if decorated:
        out.append(f"({len(rows)} {'row' if len(rows) == 1 else 'rows'})")
    return "\n".join(out)


def report(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    print(json.dumps(document, indent=2) if args.json else text)
