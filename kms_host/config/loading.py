"""Resolve the configuration from its layers, once, at start.

Precedence, lowest first (architecture 4.6): the dataclass defaults, the TOML file
(``--config``, else ``$KMS_HOST_CONFIG``), ``KMS_HOST_<SECTION>_<KEY>`` environment
variables, then the CLI flags. Everything is resolved into a frozen :class:`Config` that is
passed down; nothing reads the environment later. Unknown sections, keys and ``KMS_HOST_*``
variables are errors, as are bad values: a typo must stop the start with the dotted key name
instead of silently running with a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kms_host.config.sections import (
    ClockConfig,
    Config,
    CountingConfig,
    HostConfig,
    LogConfig,
    MetricsConfig,
    PolicyConfig,
    ServerConfig,
    StorageConfig,
    WebConfig,
)
from kms_host.discovery.settings import parse_dns_section
from kms_host.errors import ConfigError
from kms_host.policy.scenario import parse_scenarios

__all__ = ["ENV_CONFIG_FILE", "ENV_PREFIX", "ConfigOverrides", "load_config"]

ENV_PREFIX = "KMS_HOST_"
ENV_CONFIG_FILE = "KMS_HOST_CONFIG"
"""Names the config file when ``--config`` is absent; not a setting."""
_ENV_BUILD_SWITCH = "KMS_HOST_MYPYC"
"""Asks pip's build for the compiled Rijndael (``_build/kms_host_backend.py``); not a setting
either, and ignored here, so that a variable exported for an install cannot stop a start."""

_SECTIONS: Mapping[str, type[Any]] = {
    "server": ServerConfig,
    "host": HostConfig,
    "policy": PolicyConfig,
    "counting": CountingConfig,
    "storage": StorageConfig,
    "log": LogConfig,
    "metrics": MetricsConfig,
    "clock": ClockConfig,
    "web": WebConfig,
}
_STRUCTURED: Mapping[str, Callable[[Any], Any]] = {
    "dns": parse_dns_section,
    "scenario": parse_scenarios,
}
"""Sections with nested tables, each validated by its own parser; set in the file only."""
_ARRAYS = frozenset({"scenario"})
"""Structured sections written as arrays of tables (``[[scenario]]``); their parser checks."""


@dataclass(frozen=True, slots=True)
class ConfigOverrides:
    """The CLI flags that override configuration; empty/None means "not given"."""

    listen: tuple[str, ...] = ()
    workers: int | None = None
    data_dir: Path | None = None
    log_format: str | None = None
    log_level: str | None = None


_Layer = dict[tuple[str, str], tuple[object, str]]
"""(section, key) -> (raw value, where it came from, for error messages)."""


def load_config(path: Path | None, *, env: Mapping[str, str], overrides: ConfigOverrides) -> Config:
    """Resolve defaults < TOML file < ``KMS_HOST_*`` env < CLI flags; ConfigError if invalid."""
    if path is None and env.get(ENV_CONFIG_FILE):
        path = Path(env[ENV_CONFIG_FILE])
    raw: _Layer = {}
    structured: dict[str, object] = {}
    if path is not None:
        raw.update(_file_layer(path, structured))
    raw.update(_env_layer(env))
    raw.update(_cli_layer(overrides))
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        changes: dict[str, object] = {}
        for option in dataclasses.fields(cls):
            if (name, option.name) in raw:
                value, origin = raw[name, option.name]
                try:
                    changes[option.name] = option.metadata["convert"](value)
                except ValueError as exc:
                    raise ConfigError(f"{exc} (from {origin})", f"{name}.{option.name}") from None
        sections[name] = cls(**changes)
    for name, parse in _STRUCTURED.items():
        sections[name] = parse(structured.get(name, [] if name in _ARRAYS else {}))
    _check_web(sections["web"])
    explicit = frozenset(f"{section}.{key}" for section, key in raw)
    return Config(**sections, source=path, explicit=explicit)


def _check_web(web: WebConfig) -> None:
    """Refuse a dashboard beyond loopback without a token, unless ``allow_public`` says so."""
    if web.listen is None or web.token or web.allow_public or _loopback(web.listen.host):
        return
    raise ConfigError(
        f"web.listen {web.listen} is not a loopback address: set web.token, or"
        " web.allow_public = true to serve the client table to anyone who can reach it",
        "web.allow_public",
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _check_section(section: str, origin: str, key: str) -> None:
    if section not in _SECTIONS:
        known = ", ".join([*_SECTIONS, *_STRUCTURED])
        raise ConfigError(f"unknown section (from {origin}; known: {known})", key)


def _option_field(section: str, key: str, origin: str) -> dataclasses.Field[Any]:
    """The field behind ``section.key``, or ConfigError naming what is unknown."""
    _check_section(section, origin, f"{section}.{key}" if key else section)
    options = {option.name: option for option in dataclasses.fields(_SECTIONS[section])}
    if key not in options:
        known = ", ".join(options)
        raise ConfigError(f"unknown key (from {origin}; known: {known})", f"{section}.{key}")
    return options[key]


def _file_layer(path: Path, structured: dict[str, object]) -> _Layer:
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}", "") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", "") from exc
    layer: _Layer = {}
    for section, table in document.items():
        if section in _ARRAYS or (section in _STRUCTURED and isinstance(table, dict)):
            structured[section] = table
            continue
        if not isinstance(table, dict):
            if section in _SECTIONS:
                raise ConfigError(f"expected a [{section}] table (in {path})", section)
            raise ConfigError(f"unknown key (in {path}); settings go in a [section]", section)
        _check_section(section, str(path), section)
        for key, value in table.items():
            _option_field(section, key, str(path))
            layer[section, key] = (value, str(path))
    return layer


def _env_layer(env: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name in (ENV_CONFIG_FILE, _ENV_BUILD_SWITCH):
            continue
        section, _, key = name.removeprefix(ENV_PREFIX).lower().partition("_")
        if section in _STRUCTURED:
            raise ConfigError(f"[{section}] is set in the config file only (from {name})", section)
        option = _option_field(section, key, name)
        layer[section, key] = (_env_value(text, option.default), name)
    return layer


def _env_value(text: str, default: object) -> object:
    """Read an env value as TOML when it parses, else as text; the field's type decides.

    Text-typed fields keep the text whenever TOML reads it as something else (an all-digit
    ``hwid`` stays a string); list-typed fields also take comma-separated text, the natural
    form in a shell or a compose file (``windows-server-2019,office-2019``).
    """
    try:
        document = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        value: object = text
    else:
        value = document["value"] if document.keys() == {"value"} else text
    if isinstance(default, str | Path) and not isinstance(value, str):
        return text
    if isinstance(default, tuple) and not isinstance(value, list):
        return [part.strip() for part in text.split(",")] if text.strip() else []
    return value


def _cli_layer(overrides: ConfigOverrides) -> _Layer:
    given: dict[tuple[str, str], tuple[object, str]] = {
        ("server", "listen"): (list(overrides.listen) or None, "--listen"),
        ("server", "workers"): (overrides.workers, "--workers"),
        ("storage", "data_dir"): (overrides.data_dir, "--data-dir"),
        ("log", "format"): (overrides.log_format, "--log-format"),
        ("log", "level"): (overrides.log_level, "--log-level"),
    }
    return {target: entry for target, entry in given.items() if entry[0] is not None}
