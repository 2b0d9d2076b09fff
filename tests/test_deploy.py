"""The Kubernetes manifest, ``deploy/kms-host.yaml``, checked where no cluster runs.

* Every document validates against the Kubernetes API's own schemas in strict mode (unknown
  fields are errors), as kubernetes-validate ships them: the oldest version named here and
  the newest the installed package knows.
* What the README promises of it: one daemon on its claim, TCP 1688 behind the Service, the
  image's health check as every probe, the image's unprivileged user, a read-only root
  filesystem with an ``emptyDir`` at ``/tmp``. The image's side is read from the Dockerfile
  (``tests/dockerfile_steps.py``), so that the two cannot drift apart.
* The README's ``kubectl`` commands name this file and its resources.

``tests/container/test_image.py`` runs the real image with the manifest's restrictions.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_steps import ROOT, health_command, health_options, image_env, last

MANIFEST = ROOT / "deploy" / "kms-host.yaml"
README = (ROOT / "README.md").read_text(encoding="utf-8")
OLDEST_K8S = "1.30.0"
KMS_PORT = 1688  # KMS over TCP (kms-protocol.md, transport)

DOCUMENTS: list[dict[str, Any]] = [
    document for document in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if document
]


def one(kind: str) -> dict[str, Any]:
    [document] = [d for d in DOCUMENTS if d["kind"] == kind]
    return document


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = one("Deployment")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    [only] = pod()["containers"]
    assert isinstance(only, dict)
    return only


def mounts() -> dict[str, dict[str, Any]]:
    """Each mount path of the container with the pod volume mounted there."""
    volumes = {volume["name"]: volume for volume in pod()["volumes"]}
    return {mount["mountPath"]: volumes[mount["name"]] for mount in container()["volumeMounts"]}


def seconds(duration: str) -> int:
    """A Dockerfile duration of whole seconds (``30s``)."""
    assert re.fullmatch(r"\d+s", duration), duration
    return int(duration[:-1])


def image_user() -> tuple[int, int]:
    uid, _, gid = last("USER").args.partition(":")
    return int(uid), int(gid)  # numeric in the Dockerfile, for runAsNonRoot


def data_dir() -> str:
    return image_env({})["KMS_HOST_STORAGE_DATA_DIR"]


@pytest.mark.parametrize("version", [OLDEST_K8S, kubernetes_validate.utils.latest_version()])
def test_every_document_validates_strictly(version: str) -> None:
    assert sorted(d["kind"] for d in DOCUMENTS) == [
        "Deployment",
        "PersistentVolumeClaim",
        "Service",
    ]
    for document in DOCUMENTS:
        # Raises on an invalid document, and on a kind or apiVersion with no schema there.
        used = kubernetes_validate.validate(document, version, strict=True)
        assert used == kubernetes_validate.utils.major_minor(version)  # no older schema's


def test_one_daemon_holds_the_claim_at_the_image_data_dir() -> None:
    deployment = one("Deployment")["spec"]
    assert deployment["replicas"] == 1
    # The data dir's lock admits one daemon: a rolling update would start a second one first.
    assert deployment["strategy"] == {"type": "Recreate"}
    claim = one("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert last("VOLUME").json_args() == [data_dir()]
    volume = mounts()[data_dir()]
    assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}
    env = {variable["name"]: variable["value"] for variable in container().get("env", [])}
    assert env.get("KMS_HOST_STORAGE_DATA_DIR", data_dir()) == data_dir()


def test_the_service_sends_1688_to_the_container() -> None:
    assert f"{KMS_PORT}/tcp" in last("EXPOSE").args.split()
    service = one("Service")["spec"]
    assert service["type"] == "ClusterIP"
    assert (
        service["selector"].items()
        <= one("Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["selector"] == one("Deployment")["spec"]["selector"]["matchLabels"]
    [port] = service["ports"]
    assert (port["port"], port["protocol"]) == (KMS_PORT, "TCP")
    targets = [
        p for p in container()["ports"] if port["targetPort"] in (p["containerPort"], p.get("name"))
    ]
    assert [(p["containerPort"], p["protocol"]) for p in targets] == [(KMS_PORT, "TCP")]


def test_every_probe_is_the_image_health_check() -> None:
    probes = {
        kind: container()[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    for probe in probes.values():
        assert probe["exec"]["command"] == health_command()
        assert probe["timeoutSeconds"] == seconds(health_options()["timeout"])
    # Liveness restarts the pod when Docker would call the container unhealthy.
    liveness = probes["livenessProbe"]
    assert liveness["periodSeconds"] == seconds(health_options()["interval"])
    assert liveness["failureThreshold"] == int(health_options()["retries"])
    startup = probes["startupProbe"]
    budget_s = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget_s >= seconds(health_options()["start-period"])


def test_runs_as_the_image_user_on_a_read_only_root() -> None:
    uid, gid = image_user()
    assert uid != 0
    context = pod()["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (uid, gid, gid)
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    restricted = container()["securityContext"]
    assert restricted["readOnlyRootFilesystem"] is True
    assert restricted["allowPrivilegeEscalation"] is False
    assert restricted["capabilities"] == {"drop": ["ALL"]}
    assert "emptyDir" in mounts()["/tmp"]
    assert pod()["automountServiceAccountToken"] is False
    assert container()["args"] == last("CMD").json_args()
    env = image_env({}) | {v["name"]: v["value"] for v in container().get("env", [])}
    assert env["KMS_HOST_LOG_FORMAT"] == "json"


def service_link_variables() -> dict[str, str]:
    """What the kubelet would set in the pod for the Service (Kubernetes' docker-link style)."""
    service = one("Service")
    name = service["metadata"]["name"].upper().replace("-", "_")
    address = "127.0.0.1"  # its ClusterIP; never contacted
    [port] = service["spec"]["ports"]
    number, protocol = port["port"], port["protocol"].lower()
    url = f"{protocol}://{address}:{number}"
    prefix = f"{name}_PORT_{number}_{protocol.upper()}"
    return {
        f"{name}_SERVICE_HOST": address,
        f"{name}_SERVICE_PORT": str(number),
        f"{name}_SERVICE_PORT_{port['name'].upper()}": str(number),
        f"{name}_PORT": url,
        prefix: url,
        f"{prefix}_PROTO": protocol,
        f"{prefix}_PORT": str(number),
        f"{prefix}_ADDR": address,
    }


def test_service_links_are_off_because_kms_host_refuses_their_variables() -> None:
    assert pod()["enableServiceLinks"] is False
    # Why: the Service is named kms-host, so its variables look like KMS_HOST_* settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_HOST_")}
    [program, *args] = health_command()
    assert program == "kms-host"
    probed = subprocess.run(
        [sys.executable, "-m", "kms_host", *args],
        env=env | service_link_variables(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert probed.returncode == 2, probed.stdout + probed.stderr  # a configuration error
    assert "config error" in probed.stderr


def readme_kubectl_commands() -> list[list[str]]:
    """The ``kubectl`` lines of the README's "Kubernetes" section's ``sh`` blocks."""
    section = README.split("### Kubernetes\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    argvs = [shlex.split(line, comments=True) for line in lines]
    return [argv for argv in argvs if argv[:1] == ["kubectl"]]


def test_the_readme_commands_name_this_manifest_and_its_resources() -> None:
    commands = readme_kubectl_commands()
    assert ["kubectl", "apply", "-f", str(MANIFEST.relative_to(ROOT))] in commands
    names = {
        "deploy": one("Deployment")["metadata"]["name"],
        "svc": one("Service")["metadata"]["name"],
        "pvc": one("PersistentVolumeClaim")["metadata"]["name"],
    }
    named = [word for argv in commands for word in argv if re.fullmatch(r"[a-z]+/[a-z-]+", word)]
    assert {word.split("/")[0] for word in named} >= {"deploy", "svc"}
    for word in named:
        kind, _, name = word.partition("/")
        assert names[kind] == name, word
    for argv in commands:
        if argv[1:3] == ["set", "image"]:
            container_name, _, _ = argv[4].partition("=")
            assert container_name == container()["name"], argv
        if argv[1] == "port-forward":
            _, _, remote = argv[3].partition(":")
            assert int(remote) in [p["port"] for p in one("Service")["spec"]["ports"]], argv
        if argv[1] == "exec":
            assert argv[3:5] == ["--", "kms-host"], argv
    assert any(argv[1] == "exec" and argv[5] == "status" for argv in commands)


def test_the_readme_section_follows_docker() -> None:
    headings = re.findall(r"^### (\w+)", README, re.M)
    assert headings.index("Kubernetes") == headings.index("Docker") + 1
