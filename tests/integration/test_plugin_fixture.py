"""The ``kms_host`` pytest fixture: blocking clients (a subprocess, plain sockets in threads)
answered in sync and async tests, time moved with ``advance()``, rules installed at run time,
config by fixture and by marker, in the blocking form and in the coroutine twins.

The async tests here come in both kinds a user writes: marked ``@pytest.mark.asyncio``
(pytest-asyncio's loop runs them) and unmarked (the plugin's own runner, as without
pytest-asyncio; this suite's strict mode leaves them to it).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import blocking_client
import pytest

from kms_host.errors import ConfigError
from kms_host.pytest_plugin import KmsHost, running_host

HRESULT_INVALID_TIMESTAMP = 0xC004F06C
CLIENT_TIMEOUT_S = 60  # bounds a hang; an answer takes milliseconds


@pytest.fixture
def kms_host_config() -> str:
    """This module's hosts start empty, so counts are the real number of clients."""
    return '[counting]\nprefill = "none"\n'


def kms_host_activate(address: str, cmid: uuid.UUID) -> subprocess.CompletedProcess[str]:
    """``kms-host activate`` in a child process: a blocking client, as ``vlmcs`` would be."""
    return subprocess.run(
        [sys.executable, "-m", "kms_host", "activate", address, "--cmid", str(cmid)],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )


def test_a_client_process_activates_from_a_sync_test(kms_host: KmsHost) -> None:
    cmid = uuid.uuid4()
    done = kms_host_activate(kms_host.address, cmid)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{kms_host.address} v6 activated: count 1 " in done.stdout
    assert [record.cmid for record in kms_host.clients()] == [cmid]
    assert kms_host.counts()["windows"] == 1


@pytest.mark.asyncio
async def test_a_client_process_activates_from_an_asyncio_test(kms_host: KmsHost) -> None:
    done = kms_host_activate(kms_host.address, uuid.uuid4())  # blocks pytest-asyncio's loop
    assert done.returncode == 0, done.stdout + done.stderr
    assert (await kms_host.acounts())["windows"] == 1


async def test_a_client_process_activates_from_an_unmarked_async_test(kms_host: KmsHost) -> None:
    done = kms_host_activate(kms_host.address, uuid.uuid4())
    assert done.returncode == 0, done.stdout + done.stderr
    assert [event["result"] for event in kms_host.events("activation")] == ["activated"]


def test_blocking_socket_clients_in_threads_are_answered_together(kms_host: KmsHost) -> None:
    cmids = [uuid.uuid4() for _ in range(4)]
    all_connected = threading.Barrier(len(cmids), timeout=CLIENT_TIMEOUT_S)

    def client(cmid: uuid.UUID) -> int:
        all_connected.wait()  # four blocking clients at once, as a lab's machines would be
        request = blocking_client.windows_request(cmid, when=kms_host.now())
        response = blocking_client.activate(kms_host.host, kms_host.port, request)
        assert response.client_machine_id == cmid
        return response.current_client_count

    writing = threading.Event()
    writing.set()

    def reader() -> list[int]:
        """Reads the table through the store's API, on its own connection, as the host writes."""
        seen = []
        while writing.is_set():
            seen.append(kms_host.counts()["windows"])
        return seen

    with ThreadPoolExecutor(max_workers=len(cmids) + 1) as pool:
        reads = pool.submit(reader)
        counts = list(pool.map(client, cmids))
        writing.clear()
        seen = reads.result()
    assert sorted(counts) == [1, 2, 3, 4]
    assert seen == sorted(seen)  # never a count that went back
    assert set(seen) <= {0, 1, 2, 3, 4}
    assert {record.cmid for record in kms_host.clients("windows")} == set(cmids)


async def test_the_blocking_calls_work_inside_a_running_loop(kms_host: KmsHost) -> None:
    assert kms_host.activate().count == 1  # blocks this test's loop, not the host's
    assert (await kms_host.aactivate()).count == 2
    assert kms_host.counts() == await kms_host.acounts()
    assert kms_host.clients() == await kms_host.aclients()


def test_a_cmid_expires_30_days_after_its_last_activation(kms_host: KmsHost) -> None:
    first = kms_host.activate()
    assert (first.hresult, first.count) == (0, 1)
    kms_host.advance(days=29, hours=23)
    assert kms_host.counts()["windows"] == 1
    kms_host.advance(hours=2)
    assert kms_host.counts()["windows"] == 0
    newcomer = kms_host.activate()
    assert newcomer.count == 1  # the first client no longer counts


@pytest.mark.asyncio
async def test_a_renewal_inside_the_window_keeps_a_client_counted(kms_host: KmsHost) -> None:
    renewing, lapsing = uuid.uuid4(), uuid.uuid4()
    await kms_host.aactivate(cmid=lapsing)
    assert (await kms_host.aactivate(cmid=renewing)).count == 2
    kms_host.advance(days=20)
    assert (await kms_host.aactivate(cmid=renewing)).count == 2  # renewal: still two
    kms_host.advance(days=20)  # day 40: the renewal was 20 days ago, the other 40
    assert await kms_host.acounts() == {"windows": 1, "office": 0, "office2010": 0}
    assert (await kms_host.aactivate(cmid=renewing)).count == 1
    by_cmid = {record.cmid: record for record in await kms_host.aclients()}
    assert by_cmid[renewing].request_count == 3
    assert by_cmid[lapsing].request_count == 1


def test_a_client_clock_5_hours_off_is_refused(kms_host: KmsHost) -> None:
    kms_host.advance(hours=5)
    skewed = kms_host.activate(time=datetime.now(UTC))  # the machine's clock, not the host's
    assert skewed.hresult == HRESULT_INVALID_TIMESTAMP
    assert skewed.stage == "host"
    assert kms_host.activate().hresult == 0  # by default requests follow the host clock
    refused, served = kms_host.events("activation")
    assert (refused["reason"], served["result"]) == ("clock_skew", "activated")


def test_rules_change_at_run_time(kms_host: KmsHost) -> None:
    kms_host.rules({"machine_name": "flaky-*", "close": True, "every": 2})
    answers = [kms_host.activate(machine_name="flaky-7") for _ in range(4)]
    assert [a.hresult for a in answers] == [0, 0xC004F074, 0, 0xC004F074]
    assert answers[1].stage == "closed"
    with pytest.raises(ConfigError) as caught:
        kms_host.rules({"close": True}, {"hresult": "0xC004F042", "count": 1})
    assert caught.value.key == "scenario[1]"
    kms_host.rules()
    assert kms_host.activate(machine_name="flaky-7").hresult == 0


@pytest.mark.kms_host_config('[host]\nscope = ["office-2019"]\n')
async def test_the_marker_configures_one_test(kms_host: KmsHost) -> None:
    outside = await kms_host.aactivate()
    office = await kms_host.aactivate(product="Office Professional Plus 2019")
    assert outside.hresult == 0xC004F042
    assert (office.hresult, office.count) == (0, 5)  # the marker replaced prefill = "none"


def test_running_host_serves_a_wider_scope_and_stops_on_exit(tmp_path: Path) -> None:
    with running_host(tmp_path, '[counting]\nprefill = "none"\n') as host:
        assert host.activate().count == 1
        runtime = host.config.storage.data_dir / "runtime.json"
        assert runtime.exists()
    assert not runtime.exists()  # removed by the daemon's graceful stop
    assert host.activate(timeout_s=1).hresult == 0xC004F074  # nobody listens any more


@pytest.mark.asyncio
async def test_running_host_is_an_async_context_manager_too(tmp_path: Path) -> None:
    async with running_host(tmp_path, '[counting]\nprefill = "none"\n') as host:
        assert (await host.aactivate()).count == 1
        assert (await host.acounts())["windows"] == 1
