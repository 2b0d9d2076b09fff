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
from kms_host.safe_text import printable
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
    "settings_from",
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
            print(f"kms-host: {exc.summary()}", file=sys.stderr)
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
            f"no client table in {config.storage.data_dir}: no daemon has run there"
            " (pass --data-dir DIR, or --config FILE if it sets [storage] data_dir)"
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


_DAEMON_SETTINGS: dict[str, tuple[str, Callable[[Any], object]]] = {
    "counting.mode": ("counting_mode", CountingMode),
    "counting.prefill": ("prefill", Prefill),
    "counting.fixed_count": ("fixed_count", int),
    "counting.window_days": ("window_days", int),
    "clock.offset_s": ("clock_offset_s", float),
    "host.scope": ("scope", lambda names: tuple(str(name) for name in names)),
    "host.activation_interval_min": ("activation_interval_min", int),
    "host.renewal_interval_min": ("renewal_interval_min", int),
}
"""The answer-shaping settings a view takes from ``runtime.json``: dotted key -> its name
there and how to read it back."""


def daemon_config(config: Config, runtime: dict[str, Any] | None) -> Config:
    """``config`` with the running daemon's answer-shaping settings, when one runs.

    The views report what the daemon answers, not what their own defaults would make a new
    daemon answer; with no daemon running in the data dir chosen, ``config`` stays as given.
    A key set explicitly (``--config``'s file, ``KMS_HOST_*``) wins over the daemon's: the
    user asked for it (``products --config office.toml`` shows that file's scope).
    """
    settings = _running_settings(runtime)
    if settings is None:
        return config
    changes: dict[str, dict[str, object]] = {}
    try:
        for key, (name, read) in _DAEMON_SETTINGS.items():
            if key not in config.explicit:
                section, option = key.split(".")
                changes.setdefault(section, {})[option] = read(settings[name])
        return dataclasses.replace(
            config,
            **{
                section: dataclasses.replace(getattr(config, section), **options)
                for section, options in changes.items()
            },
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise Failure(
            f"{config.storage.data_dir / RUNTIME_FILE}: unreadable settings ({exc!r})"
        ) from None


def settings_from(config: Config, runtime: dict[str, Any] | None) -> str:
    """Where a view's settings came from, naming the explicit keys that differ from the daemon's.

    With no daemon, it says what the view cannot know: a daemon elsewhere (a config setting
    ``[storage] data_dir``, another ``--data-dir``) is invisible from this data dir.
    """
    settings = _running_settings(runtime)
    if settings is None or runtime is None:
        where = "config" if config.explicit - {"storage.data_dir"} else "built-in defaults"
        return (
            f"{where} (no running daemon's {RUNTIME_FILE} in {config.storage.data_dir};"
            " pass --config FILE or --data-dir DIR to read another)"
        )
    differing = [
        key
        for key, (name, read) in _DAEMON_SETTINGS.items()
        if key in config.explicit and _value(config, key) != read(settings[name])
    ]
    if not differing:
        return f"daemon pid {runtime['pid']}"
    return f"daemon pid {runtime['pid']}, except {', '.join(differing)} (given explicitly)"


def _running_settings(runtime: dict[str, Any] | None) -> dict[str, Any] | None:
    if runtime is None or not runtime["running"] or not isinstance(runtime.get("settings"), dict):
        return None
    settings: dict[str, Any] = runtime["settings"]
    return settings


def _value(config: Config, key: str) -> object:
    section, option = key.split(".")
    return getattr(getattr(config, section), option)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, decorated: bool) -> str:
    """Columns aligned with two spaces; on a terminal, a rule under the header and a total.

    Cells have their control characters escaped: machine names are the clients' to choose.
    """
    rows = [[printable(cell) for cell in row] for row in rows]
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
