"""The real image, built and run by a real Docker daemon, held to the README's Docker commands.

``.ci/container.sh`` builds the image (against a Debian base it makes, ``--build-arg BASE``)
and names it in ``KMS_HOST_TEST_IMAGE``; without that variable the tests that need a daemon
skip, so the ordinary suite stays fast. The commands below are the README's, with the names
and host ports changed so that a run never meets a user's container: the README check, which
runs everywhere, fails when the two part.

The container joins a user-defined bridge network of its own, not Docker's default bridge
that every other container shares. Not an ``--internal`` one: Docker publishes no port of a
container on an internal network, and the activation must come from the host's side.

The last test runs the image under the restrictions of the Kubernetes manifest
(``deploy/kms-host.yaml``), each of its pod's settings turned into the ``docker run`` flag that
does the same: a read-only root, a tmpfs for its ``emptyDir``, a volume for its claim.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MANIFEST = ROOT / "deploy" / "kms-host.yaml"
IMAGE = os.environ.get("KMS_HOST_TEST_IMAGE", "")
UID = "10001"  # the Dockerfile's USER
START_PERIOD_S = 10  # the Dockerfile's HEALTHCHECK --start-period
# Docker before 25 runs the first health check one --interval (30 s) after the start.
HEALTHY_WITHIN_S = 30 + START_PERIOD_S + 10
LISTEN_WITHIN_S = 20
DOCKER_TIMEOUT_S = 60

# The README's "Docker" commands, with {placeholders} for what a test run changes.
NETWORK = "docker network create {network}"
RUN = (
    "docker run -d --name {name} --network {network}"
    " -p {kms}:1688/tcp -p 127.0.0.1:{metrics}:9688/tcp"
    " -v {volume}:/data"
    " -e KMS_HOST_HOST_SCOPE=windows-server-2022,office-ltsc-2021"
    " -e KMS_HOST_METRICS_LISTEN=0.0.0.0:9688"
    " {image}"
)
ACTIVATE = "kms-host activate {target}"
HEALTH = "docker inspect --format '{{{{.State.Health.Status}}}}' {name}"
STATUS = "docker exec {name} kms-host status"
STOP = "docker stop {name}"
COMMANDS = (NETWORK, RUN, ACTIVATE, HEALTH, STATUS, STOP)
README_NAMES = {
    "network": "kms-host-net",
    "name": "kms-host",
    "kms": "1688",
    "metrics": "9688",
    "volume": "kms-host-data",
    "image": "kms-host",
    "target": "127.0.0.1",
}


def readme_docker_commands() -> list[list[str]]:
    """The ``sh`` block of the README's "Docker" section, one argv per command."""
    section = README.split("### Docker\n", 1)[1].split("\n### ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]


def command(template: str, names: dict[str, str]) -> list[str]:
    return shlex.split(template.format(**names))


def test_the_readme_shows_the_commands_run_here() -> None:
    shown = [argv for argv in readme_docker_commands() if argv]
    build = ["docker", "build", "-t", "kms-host", "."]  # .ci/container.sh adds --build-arg BASE
    assert shown == [build, *(command(t, README_NAMES) for t in COMMANDS)]
    script = (ROOT / ".ci" / "container.sh").read_text(encoding="utf-8")
    assert 'docker build -q --build-arg BASE="$BASE_IMAGE" -t "$IMAGE" .' in script


# --- the running image -------------------------------------------------------------------------


def docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"docker {shlex.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Setup:
    names: dict[str, str]

    def run(self, template: str) -> str:
        return docker(*command(template, self.names)[1:])

    def activate(self, *extra: str) -> dict[str, object]:
        """One activation from the host side of the port mapping, by the strict client."""
        [_, _, target] = command(ACTIVATE, self.names)
        argv = [sys.executable, "-m", "kms_host", "activate", target, "--json", *extra]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout.splitlines()[-1])
        assert isinstance(result, dict)
        return result

    def status(self) -> dict[str, object]:
        result = json.loads(docker(*command(STATUS, self.names)[1:], "--json"))
        assert isinstance(result, dict)
        return result

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTHY_WITHIN_S
        while (health := self.run(HEALTH)) != "healthy":
            assert health == "starting", docker("inspect", self.names["name"])
            assert time.monotonic() < deadline, docker("inspect", self.names["name"])
            time.sleep(1)

    def wait_listening(self) -> None:
        deadline = time.monotonic() + LISTEN_WITHIN_S
        while '"event": "listening"' not in docker("logs", self.names["name"]):
            assert time.monotonic() < deadline, docker("logs", self.names["name"])
            time.sleep(0.2)

    def stop(self) -> None:
        self.run(STOP)
        exit_code = docker("inspect", "--format", "{{.State.ExitCode}}", self.names["name"])
        logs = docker("logs", self.names["name"])
        assert exit_code == "0", logs
        assert json.loads(logs.splitlines()[-1])["event"] == "stopped", logs
        docker("rm", self.names["name"])


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    yield from running(RUN)


def running(template: str) -> Iterator[Setup]:
    """A container of ``template`` (a ``docker run``) on a network and volume of its own."""
    if not IMAGE:
        pytest.skip("KMS_HOST_TEST_IMAGE names no image (.ci/container.sh builds and sets it)")
    tag = uuid.uuid4().hex[:8]
    kms = str(free_port())
    names = {
        "network": f"kms-host-test-{tag}",
        "name": f"kms-host-test-{tag}",
        "kms": f"127.0.0.1:{kms}",  # loopback only, a free port
        "metrics": str(free_port()),
        "volume": f"kms-host-test-{tag}",
        "image": IMAGE,
        "target": f"127.0.0.1:{kms}",
    }
    ready = Setup(names)
    ready.run(NETWORK)
    try:
        ready.run(template)
        yield ready
    finally:
        docker("rm", "-f", names["name"], check=False)
        docker("volume", "rm", names["volume"], check=False)
        docker("network", "rm", names["network"], check=False)


def test_healthy_within_the_start_period_and_interval(setup: Setup) -> None:
    setup.wait_healthy()
    health_log = json.loads(
        docker("inspect", "--format", "{{json .State.Health.Log}}", setup.names["name"])
    )
    assert [entry["ExitCode"] for entry in health_log] == [0]  # the very first probe passed


def test_runs_as_uid_10001_on_its_own_network_only(setup: Setup) -> None:
    pid1 = docker("exec", setup.names["name"], "cat", "/proc/1/status")
    uids = next(line.split()[1:] for line in pid1.splitlines() if line.startswith("Uid:"))
    assert uids == [UID] * 4  # real, effective, saved, filesystem: kms-host itself, PID 1
    networks = json.loads(
        docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", setup.names["name"])
    )
    assert list(networks) == [setup.names["network"]]
    members = docker(
        "network", "inspect", "--format", "{{json .Containers}}", setup.names["network"]
    )
    assert len(json.loads(members)) == 1  # no other container shares it


def test_activates_from_the_host_and_keeps_table_and_identity(setup: Setup) -> None:
    setup.wait_listening()
    cmid = str(uuid.uuid4())
    first = setup.activate("--cmid", cmid, "--machine-name", "image-test")
    before = setup.status()
    assert first["ok"] is True, first
    logs = [json.loads(line) for line in docker("logs", setup.names["name"]).splitlines()]
    [listening] = [event for event in logs if event["event"] == "listening"]
    assert listening["rijndael"] == "compiled"  # the image ships the compiled engine
    assert listening["event_loop"] == "uvloop"
    metrics_url = f"http://127.0.0.1:{setup.names['metrics']}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=10) as scraped:  # loopback, our port
        assert b"kms_host_" in scraped.read()

    setup.stop()
    setup.run(RUN)  # a new container on the same volume
    setup.wait_listening()
    after = setup.status()
    assert after["hwid"] == before["hwid"]
    assert after["epids"] == before["epids"]
    clients = json.loads(docker("exec", setup.names["name"], "kms-host", "clients", "--json"))
    assert [(row["cmid"], row["machine_name"]) for row in clients] == [(cmid, "image-test")]
    again = setup.activate("--cmid", cmid, "--machine-name", "image-test")
    assert again["ok"] is True, again
    assert again["epid"] == first["epid"]


def test_stops_with_exit_0(setup: Setup) -> None:
    setup.wait_listening()
    setup.stop()  # exit code 0 and the "stopped" event: SIGTERM reached kms-host, PID 1
    left = docker("ps", "-a", "--filter", f"name=^{setup.names['name']}$", "--format", "{{.ID}}")
    assert left == ""


# --- as the Kubernetes manifest runs it ---------------------------------------------------------


def manifest_run() -> str:
    """The ``docker run`` that restricts the image as ``deploy/kms-host.yaml``'s pod does.

    Docker applies its default seccomp profile, as ``RuntimeDefault`` asks; ``fsGroup``, which
    Kubernetes uses to make the claim writable, is the added group here.
    """
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if d]
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [box] = pod["containers"]
    assert box["image"] == README_NAMES["image"]  # the README's build, here KMS_HOST_TEST_IMAGE
    context = pod["securityContext"] | box["securityContext"]  # the container's wins
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    [port] = box["ports"]
    flags = [
        f"-p {{kms}}:{port['containerPort']}/{port['protocol'].lower()}",
        f"--user {context['runAsUser']}:{context['runAsGroup']}",
        f"--group-add {context['fsGroup']}",
        *["--read-only"] * context["readOnlyRootFilesystem"],
        *["--security-opt no-new-privileges"] * (not context["allowPrivilegeEscalation"]),
        *[f"--cap-drop {capability}" for capability in context["capabilities"]["drop"]],
    ]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for mount in box["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            flags.append(f"--tmpfs {mount['mountPath']}")
        else:
            assert "persistentVolumeClaim" in volume, volume
            flags.append(f"-v {{volume}}:{mount['mountPath']}")
    flags += ["-e " + shlex.quote(f"{v['name']}={v['value']}") for v in box["env"]]
    return " ".join(
        ["docker run -d --name {name} --network {network}", *flags, "{image}", *box["args"]]
    )


@pytest.fixture
def restricted() -> Iterator[Setup]:
    yield from running(manifest_run())


def test_healthy_and_activates_read_only_as_the_manifest_runs_it(restricted: Setup) -> None:
    assert "--read-only" in manifest_run().split()
    assert "--tmpfs /tmp" in manifest_run()
    restricted.wait_healthy()
    cmid = str(uuid.uuid4())
    answer = restricted.activate("--cmid", cmid, "--machine-name", "read-only-test")
    assert answer["ok"] is True, answer
    clients = json.loads(docker("exec", restricted.names["name"], "kms-host", "clients", "--json"))
    assert [(row["cmid"], row["machine_name"]) for row in clients] == [(cmid, "read-only-test")]
    written = subprocess.run(
        ["docker", "exec", restricted.names["name"], "touch", "/opt/kms-host/written"],
        capture_output=True,
        text=True,
        timeout=DOCKER_TIMEOUT_S,
        check=False,
    )
    assert written.returncode != 0
    assert "Read-only file system" in written.stderr  # the root really is read-only
    restricted.stop()
