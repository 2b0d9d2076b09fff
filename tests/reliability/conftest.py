"""What every reliability test starts from."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_host_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process commands (``status``, ``clients``) read KMS_HOST_* as serve does; the tests
    give flags only. KMS_HOST_RELIABILITY_* (a run's seed) is the suite's own and stays."""
    for name in [n for n in os.environ if n.startswith("KMS_HOST_") and "RELIABILITY" not in n]:
        monkeypatch.delenv(name)
