"""The README's promises, held to what the code does: the log example against a real daemon's
JSON events, ``--version``, and the pytest fixture's examples run as a user's suite."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

import pytest

from kms_host.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SERVE = [sys.executable, "-m", "kms_host", "serve", "--listen", "127.0.0.1:0"]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_log_example() -> list[dict[str, object]]:
    """The JSON lines of the "Reading the logs" example, without their trailing ``...``."""
    section = README.split("## Reading the logs", 1)[1].split("\n## ", 1)[0]
    block = section.split("```json\n", 1)[1].split("```", 1)[0]
    return [json.loads(re.sub(r",\s*\.\.\.\}$", "}", line)) for line in block.splitlines()]


def test_the_log_example_matches_a_real_activation(tmp_path: Path) -> None:
    daemon = subprocess.Popen(
        [*SERVE, "--data-dir", str(tmp_path), "--log-format", "json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert daemon.stdout is not None
    watchdog = threading.Timer(30, daemon.kill)  # a daemon that never logs ends the read
    watchdog.start()
    try:
        events: dict[str, dict[str, object]] = {}
        for line in daemon.stdout:
            event = json.loads(line)
            events.setdefault(str(event["event"]), event)
            if event["event"] == "listening":
                [address] = event["addresses"]
                activated = subprocess.run(
                    [sys.executable, "-m", "kms_host", "activate", str(address)],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
                assert activated.returncode == 0, activated.stderr
            if "counts" in events:
                break
    finally:
        watchdog.cancel()
        daemon.terminate()
        daemon.wait(timeout=15)
        daemon.stdout.close()
    for example in readme_log_example():
        real = events[str(example["event"])]
        assert {key: real.get(key) for key in example} == example


def test_version_names_the_installed_package(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"kms-host {metadata.version('kms-host')}\n"


def test_the_fixture_examples_pass_as_written(tmp_path: Path) -> None:
    """The fixture section's Python blocks, as one test file, with no async plugin loaded."""
    section = README.split("### The `kms_host` pytest fixture", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    (tmp_path / "test_readme.py").write_text("\n\n".join(blocks), encoding="utf-8")
    scripts = str(Path(sys.executable).parent)  # where pip put the kms-host command
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio"],
        cwd=tmp_path,
        env={**os.environ, "PATH": scripts + os.pathsep + os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tests = re.findall(r"^(?:async )?def (test_\w+)", "".join(blocks), re.M)
    assert len(tests) == 6, tests
    assert f"{len(tests)} passed" in result.stdout, result.stdout
