"""The project's Dockerfile, read as Docker reads it, for the tests that hold other files to it.

``tests/test_container.py`` repeats the image's steps from it and ``tests/test_deploy.py``
checks the Kubernetes manifest against it (user, data dir, health check), so that neither can
drift from the image.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str

    def json_args(self) -> list[str]:
        words = json.loads(self.args)
        assert isinstance(words, list), f"{self.keyword} must use the exec (JSON) form"
        return [str(word) for word in words]


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions with line continuations joined; stage 0 is the first.

    An ``ARG`` before the first ``FROM`` (the base image) is in stage -1.
    """
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    logical = "\n".join(lines).replace("\\\n", " ")
    stage, result = -1, []
    for line in filter(str.strip, logical.splitlines()):
        keyword, _, args = line.strip().partition(" ")
        stage += keyword.upper() == "FROM"
        result.append(Instruction(stage, keyword.upper(), args.strip()))
    return result


STEPS = instructions(DOCKERFILE.read_text(encoding="utf-8"))


def last(keyword: str) -> Instruction:
    return [step for step in STEPS if step.keyword == keyword][-1]


def health_command() -> list[str]:
    """The HEALTHCHECK's command: what follows its options' ``CMD``, in exec form."""
    options, _, command = last("HEALTHCHECK").args.partition("CMD ")
    assert options.strip().startswith("--")
    return Instruction(0, "CMD", command.strip()).json_args()


def health_options() -> dict[str, str]:
    """The HEALTHCHECK's options by name: ``{"interval": "30s", "retries": "3", ...}``."""
    options, _, _ = last("HEALTHCHECK").args.partition("CMD ")
    pairs = (option.removeprefix("--").partition("=") for option in options.split())
    return {name: value for name, _, value in pairs}


def image_env(base: dict[str, str]) -> dict[str, str]:
    """``base`` plus every ENV of the runtime stage, ``$VAR`` expanded from what came before."""
    env = dict(base)
    runtime = max(step.stage for step in STEPS)
    for step in STEPS:
        if step.keyword == "ENV" and step.stage == runtime:
            for pair in shlex.split(step.args):
                name, _, value = pair.partition("=")
                env[name] = os.path.expandvars(value) if name != "PATH" else _path(value, env)
    return env


def _path(value: str, env: dict[str, str]) -> str:
    return value.replace("$PATH", env.get("PATH", ""))
