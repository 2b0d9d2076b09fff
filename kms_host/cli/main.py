"""The ``kms-host`` command line: one program, one subcommand per job.

Exit codes are part of the interface scripts rely on: 0 success, 1 a runtime failure
(for example a port already in use), 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

import structlog

from kms_host import loop
from kms_host.cli import activate, bench, clients, discovery, probe, products, status
from kms_host.config import Config, ConfigOverrides, load_config
from kms_host.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    KmsHostError,
    WorkerError,
)
from kms_host.host.app import check_catalog_settings, serve
from kms_host.host.supervisor import supervise
from kms_host.logs import configure_logging
from kms_host.policy.catalog_file import load_catalog

__all__ = ["main"]

# Each further subcommand lives in its own module with a ``register(commands)`` function.
_REGISTRARS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    discovery.register,
    activate.register,
    status.register,
    clients.register,
    products.register,
    probe.register,
    bench.register,
)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML config file (default: $KMS_HOST_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where the client table and host identity live (default ./data)",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        help="log renderer (auto: console on a terminal, JSON otherwise)",
    )
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one line like every other error.

    argparse's own form is the usage summary (several lines for most subcommands) and then
    the error; scripts and log collectors read the first line. Subcommands' parsers are of
    this class too (``add_subparsers`` makes its parsers of the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
        prog="kms-host",
        description="A simulated Microsoft KMS host for labs and CI (KMS V4/V5/V6 on TCP 1688).",
    )
    parser.add_argument(
        "--version", action="version", version=f"kms-host {metadata.version('kms-host')}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("serve", help="run the KMS host")
    _add_config_options(run)
    run.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="address to listen on, repeatable (default [::]:1688, dual-stack)",
    )
    run.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes sharing the port and the data dir (default 1: one process)",
    )
    run.set_defaults(handler=_serve)
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_check_config)
    for register in _REGISTRARS:
        register(commands)
    return parser


def _load(args: argparse.Namespace) -> Config:
    path: Path | None = args.config
    if path is None and os.environ.get("KMS_HOST_CONFIG"):
        path = Path(os.environ["KMS_HOST_CONFIG"])
    overrides = ConfigOverrides(
        listen=tuple(getattr(args, "listen", ())),
        workers=getattr(args, "workers", None),
        data_dir=args.data_dir,
        log_format=args.log_format,
        log_level=args.log_level,
    )
    return load_config(path, env=os.environ, overrides=overrides)


def _serve(args: argparse.Namespace) -> int:
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"kms-host: {exc.summary()}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log.format, config.log.level)
    log = structlog.get_logger("kms_host.cli")
    try:
        main = supervise if config.server.workers > 1 else serve
        loop.run(lambda: main(config), config.server.event_loop)
    # Each failure is logged (for log collectors) and said in one line on stderr, as a
    # config error before logging starts is, whichever the log format.
    except ConfigError as exc:
        log.error("config_error", key=exc.key, detail=str(exc))
        print(f"kms-host: {exc.summary()}", file=sys.stderr)
        return EXIT_USAGE
    except WorkerError as exc:  # the supervisor has logged which worker and how
        log.error("workers_failed", detail=str(exc))
        print(f"kms-host: workers failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (KmsHostError, OSError) as exc:
        log.error("start_failed", detail=str(exc), error=type(exc).__name__)
        print(f"kms-host: start failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _check_config(args: argparse.Namespace) -> int:
    try:
        # The environment applies as it does for ``serve``: what passes here must start.
        config = load_config(args.file, env=os.environ, overrides=ConfigOverrides())
        check_catalog_settings(config, load_catalog())
    except ConfigError as exc:
        print(f"{args.file}: {exc.key}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"{args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.file}: ok")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``kms-host`` subcommand and return its exit code."""
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
