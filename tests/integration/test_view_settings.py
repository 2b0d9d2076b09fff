"""Whose settings ``status``, ``clients`` and ``products`` use: explicit ones, else the daemon's.

A daemon runs in a subprocess whose cwd is a temporary directory, so its data dir is that
directory's ``./data``, the default every view looks in; the views run as a user runs them,
from the same cwd (the helpers of ``test_data_dir``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from test_data_dir import Daemon, _run, daemons

__all__ = ["daemons"]  # the fixture, imported

WINDOWS_PRO_GVLK = "W269N-WFGWX-YVC9B-4J6C9-T83GX"


def _json(cwd: Path, *args: str) -> Any:
    done = _run(cwd, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_explicit_config_wins_over_the_daemon_in_the_default_data_dir(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    office = '[host]\nscope = ["office-2019"]\n[counting]\nprefill = "none"\n'
    (tmp_path / "office.toml").write_text(office)
    (tmp_path / "all.toml").write_text('[host]\nscope = ["all"]\n')
    daemon = Daemon(tmp_path, "--config", "office.toml", "--listen", "127.0.0.1:0")
    daemons.append(daemon)
    daemon.runtime(tmp_path / "data")
    # No options: the daemon's scope, which serves no Windows.
    [plain] = _json(tmp_path, "products", WINDOWS_PRO_GVLK)
    assert plain["served"] is False
    # An explicit file's scope wins, though the data dir (./data) is the daemon's.
    [explicit] = _json(tmp_path, "products", WINDOWS_PRO_GVLK, "--config", "all.toml")
    assert explicit["served"] is True
    status = _json(tmp_path, "status", "--config", "all.toml")
    assert len(status["scope"]) > 1
    assert status["counting"]["prefill"] == "none"  # not in all.toml: still the daemon's
    pid = daemon.process.pid
    assert status["settings_from"] == f"daemon pid {pid}, except host.scope (given explicitly)"
    assert _json(tmp_path, "status")["settings_from"] == f"daemon pid {pid}"
    text = _run(tmp_path, "status", "--config", "all.toml").stdout
    assert f"Settings from:         daemon pid {pid}, except host.scope" in text


def test_plain_status_says_when_no_daemon_runs_in_the_default_data_dir(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    (tmp_path / "elsewhere.toml").write_text(
        '[storage]\ndata_dir = "elsewhere"\n[counting]\nprefill = "none"\n'
    )
    daemon = Daemon(tmp_path, "--config", "elsewhere.toml", "--listen", "127.0.0.1:0")
    daemons.append(daemon)
    address = daemon.runtime(tmp_path / "elsewhere")["tcp"][0]
    assert _run(tmp_path, "activate", address).returncode == 0
    # Plain status looks in ./data, where no daemon has run: it says where else to look.
    missing = _run(tmp_path, "status")
    assert missing.returncode == 1
    [line] = missing.stderr.strip().splitlines()
    assert "no client table in data" in line
    assert "--data-dir" in line
    assert "--config" in line
    # A table left in ./data by an earlier host: shown, but not as the running daemon's.
    assert _run(tmp_path, "clients", "seed", "--app", "windows", "--count", "2").returncode == 0
    stale = _json(tmp_path, "status")
    assert stale["daemon"] is None
    assert stale["settings_from"].startswith(
        "built-in defaults (no running daemon's runtime.json in data;"
    )
    assert "--config FILE or --data-dir DIR" in stale["settings_from"]
    # Given the daemon's config, status finds it, its settings and its one client.
    found = _json(tmp_path, "status", "--config", "elsewhere.toml")
    assert found["settings_from"] == f"daemon pid {daemon.process.pid}"
    assert found["applications"]["windows"]["current_count"] == 1


def test_status_with_data_dir_reports_a_daemon_set_by_the_environment(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    served, elsewhere = tmp_path / "served", tmp_path / "elsewhere"
    served.mkdir()
    elsewhere.mkdir()
    environment = {
        "KMS_HOST_COUNTING_MODE": "fixed",
        "KMS_HOST_COUNTING_FIXED_COUNT": "7",
        "KMS_HOST_HOST_SCOPE": "office-2019",
        "KMS_HOST_HOST_ACTIVATION_INTERVAL_MIN": "60",
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KMS_HOST_")}
    daemon = Daemon(served, "--listen", "127.0.0.1:0", env={**clean, **environment})
    daemons.append(daemon)
    daemon.runtime(served / "data")
    # Another shell, without those variables, another cwd: status --data-dir DIR.
    done = _run(elsewhere, "status", "--data-dir", str(served / "data"), "--json", env=clean)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["applications"]["windows"]["current_count"] == 7
    assert status["applications"]["office"]["current_count"] == 7
    assert status["scope"] == ["office-2019"]
    assert status["counting"]["mode"] == "fixed"
    assert status["activation_interval_min"] == 60
    assert status["settings_from"] == f"daemon pid {daemon.process.pid}"
