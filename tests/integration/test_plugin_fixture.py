"""The ``kms_host`` pytest fixture: time moved with ``advance()``, rules
installed at run time, config by fixture and by marker, and the plugin used from an empty
directory exactly as a lab's test suite would use it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kms_host.errors import ConfigError
from kms_host.pytest_plugin import KmsHost

HRESULT_INVALID_TIMESTAMP = 0xC004F06C


@pytest.fixture
def kms_host_config() -> str:
    """This module's hosts start empty, so counts are the real number of clients."""
    return '[counting]\nprefill = "none"\n'


@pytest.mark.asyncio
async def test_a_cmid_expires_30_days_after_its_last_activation(kms_host: KmsHost) -> None:
    first = await kms_host.activate()
    assert (first.hresult, first.count) == (0, 1)
    kms_host.advance(days=29, hours=23)
    assert (await kms_host.counts())["windows"] == 1
    kms_host.advance(hours=2)
    assert (await kms_host.counts())["windows"] == 0
    newcomer = await kms_host.activate()
    assert newcomer.count == 1  # the first client no longer counts


@pytest.mark.asyncio
async def test_a_renewal_inside_the_window_keeps_a_client_counted(kms_host: KmsHost) -> None:
    renewing, lapsing = uuid.uuid4(), uuid.uuid4()
    await kms_host.activate(cmid=lapsing)
    assert (await kms_host.activate(cmid=renewing)).count == 2
    kms_host.advance(days=20)
    assert (await kms_host.activate(cmid=renewing)).count == 2  # renewal: still two
    kms_host.advance(days=20)  # day 40: the renewal was 20 days ago, the other 40
    assert await kms_host.counts() == {"windows": 1, "office": 0, "office2010": 0}
    assert (await kms_host.activate(cmid=renewing)).count == 1
    by_cmid = {record.cmid: record for record in await kms_host.clients()}
    assert by_cmid[renewing].request_count == 3
    assert by_cmid[lapsing].request_count == 1


@pytest.mark.asyncio
async def test_a_client_clock_5_hours_off_is_refused(kms_host: KmsHost) -> None:
    kms_host.advance(hours=5)
    skewed = await kms_host.activate(time=datetime.now(UTC))  # the machine's clock, not the host's
    assert skewed.hresult == HRESULT_INVALID_TIMESTAMP
    assert skewed.stage == "host"
    assert (await kms_host.activate()).hresult == 0  # by default requests follow the host clock
    refused, served = kms_host.events("activation")
    assert (refused["reason"], served["result"]) == ("clock_skew", "activated")


@pytest.mark.asyncio
async def test_rules_change_at_run_time(kms_host: KmsHost) -> None:
    kms_host.rules({"machine_name": "flaky-*", "close": True, "every": 2})
    answers = [await kms_host.activate(machine_name="flaky-7") for _ in range(4)]
    assert [a.hresult for a in answers] == [0, 0xC004F074, 0, 0xC004F074]
    assert answers[1].stage == "closed"
    with pytest.raises(ConfigError) as caught:
        kms_host.rules({"close": True}, {"hresult": "0xC004F042", "count": 1})
    assert caught.value.key == "scenario[1]"
    kms_host.rules()
    assert (await kms_host.activate(machine_name="flaky-7")).hresult == 0


@pytest.mark.asyncio
@pytest.mark.kms_host_config('[host]\nscope = ["office-2019"]\n')
async def test_the_marker_configures_one_test(kms_host: KmsHost) -> None:
    outside = await kms_host.activate()
    office = await kms_host.activate(product="Office Professional Plus 2019")
    assert outside.hresult == 0xC004F042
    assert (office.hresult, office.count) == (0, 5)  # the marker replaced prefill = "none"


EMPTY_DIR_TESTS = """
import uuid

import pytest


@pytest.mark.asyncio
async def test_default_windows_client(kms_host):
    result = await kms_host.activate()
    assert result.hresult == 0
    assert result.count == 25
    assert result.epid
    assert len(result.hwid) == 8
    assert kms_host.address == f"127.0.0.1:{kms_host.port}"
    assert (await kms_host.counts())["windows"] == 25
    assert [c.app for c in await kms_host.clients()] == ["windows"]


@pytest.mark.asyncio
@pytest.mark.kms_host_config('[counting]\\nprefill = "none"\\n')
async def test_below_threshold_and_expiry(kms_host):
    low = await kms_host.activate(require_activation=True)
    assert (low.hresult, low.count) == (0xC004F038, 1)
    kms_host.advance(days=31)
    assert (await kms_host.counts())["windows"] == 0


@pytest.mark.asyncio
async def test_rules(kms_host):
    kms_host.rules({"sku": "2de67392-b7a7-462a-b1ca-108dd189f588", "hresult": "0xC004F042"})
    assert (await kms_host.activate()).hresult == 0xC004F042
"""


def test_the_public_fixture_works_from_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "test_lab_client.py").write_text(textwrap.dedent(EMPTY_DIR_TESTS))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
