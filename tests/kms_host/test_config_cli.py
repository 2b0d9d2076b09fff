"""``check-config`` refuses what ``serve`` refuses, and config errors name every section."""

from __future__ import annotations

from pathlib import Path

import pytest

from kms_host.cli.main import main
from kms_host.config import ConfigOverrides, load_config
from kms_host.errors import ConfigError


def test_check_config_applies_the_environment_as_serve_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "f.toml"
    path.write_text("[counting]\nwindow_days = 7\n")
    assert main(["check-config", str(path)]) == 0
    monkeypatch.setenv("KMS_HOST_COUNTING_MODE", "bogus")
    capsys.readouterr()
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "counting.mode" in err
    assert "KMS_HOST_COUNTING_MODE" in err


def test_the_unknown_section_error_lists_every_section(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text("[bogus]\nx = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={}, overrides=ConfigOverrides())
    for section in ("server", "counting", "clock", "dns", "scenario"):
        assert section in str(caught.value)
