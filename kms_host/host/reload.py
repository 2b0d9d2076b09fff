"""SIGHUP: re-read the config file's ``[[scenario]]`` tables and swap them in, or keep the old.

The whole file must validate (as ``serve`` would resolve it) before anything is applied;
only the rules are re-applied, every other setting needs a restart. The parsing is the
policy's (:func:`~kms_host.policy.scenario.parse_scenarios`); reading the file and logging
the outcome are the host's.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from kms_host.config import ConfigOverrides, load_config
from kms_host.errors import ConfigError
from kms_host.policy.scenario import ScenarioBook, ScenarioRule

__all__ = ["load_scenarios", "reload_scenarios"]

log = structlog.get_logger("kms_host.scenario")


def reload_scenarios(book: ScenarioBook, path: Path | None) -> None:
    """Re-read ``path``'s ``[[scenario]]`` tables into ``book``; keep the old rules on error."""
    if path is None:
        log.error("scenario_reload_failed", key="", detail="the host was started without a file")
        return
    try:
        rules = load_scenarios(path)
    except ConfigError as exc:
        log.error("scenario_reload_failed", key=exc.key, detail=str(exc), kept=len(book.rules))
        return
    book.install(rules)
    log.info("scenario_reloaded", count=len(rules), path=str(path))


def load_scenarios(path: Path) -> tuple[ScenarioRule, ...]:
    """The ``[[scenario]]`` tables of a config file, once the whole file validates.

    The file is resolved as ``serve`` resolves it (with the environment), so that an edit
    that breaks another section is reported now, naming its key, rather than installing the
    rules and failing at the next restart. Only the rules are re-applied.
    """
    return load_config(path, env=os.environ, overrides=ConfigOverrides()).scenario
