"""What serve and check-config refuse about the catalog side of the config."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from kms_host.config import ConfigOverrides, load_config
from kms_host.errors import ConfigError
from kms_host.host.app import check_catalog_settings
from kms_host.logs import configure_logging
from kms_host.policy.catalog_file import load_catalog

CATALOG = load_catalog()


def config_from(tmp_path: Path, toml: str) -> object:
    path = tmp_path / "c.toml"
    path.write_text(toml, encoding="utf-8")
    return load_config(path, env={}, overrides=ConfigOverrides())


def refused(tmp_path: Path, toml: str) -> ConfigError:
    config = config_from(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        check_catalog_settings(config, CATALOG)  # type: ignore[arg-type]
    return caught.value


def test_default_scope_is_every_group(tmp_path: Path) -> None:
    scope = check_catalog_settings(config_from(tmp_path, ""), CATALOG)  # type: ignore[arg-type]
    assert scope == {group.key for group in CATALOG.host_key_groups}


def test_unknown_scope_name(tmp_path: Path) -> None:
    assert refused(tmp_path, '[host]\nscope = ["windows-server-2099"]\n').key == "host.scope"


def test_epid_for_an_unknown_group(tmp_path: Path) -> None:
    error = refused(
        tmp_path, '[host.epid]\nnope = "03612-00206-556-123727-03-1033-17763.0000-2972018"\n'
    )
    assert error.key == "host.epid.nope"


def test_host_keys_newer_than_the_host_build_are_refused(tmp_path: Path) -> None:
    # A Windows Server 2019 host key cannot sit on a Windows 7 / 2008 R2 host (spec 6.2).
    assert refused(tmp_path, "[host]\nbuild = 7601\n").key == "host.build"
    narrowed = config_from(tmp_path, '[host]\nbuild = 7601\nscope = ["windows-7"]\n')
    assert check_catalog_settings(narrowed, CATALOG) == {"windows-7"}  # type: ignore[arg-type]


def test_json_lines_lead_with_time_level_and_event() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    try:
        structlog.get_logger("t").info("activation", cmid="x", count=25)
    finally:
        configure_logging("console", "info", io.StringIO())
        structlog.reset_defaults()
    line = json.loads(stream.getvalue())
    assert list(line)[:3] == ["timestamp", "level", "event"]
    assert line["event"] == "activation"
    assert line["count"] == 25
