"""Scenario rules on a real daemon: each action seen on the wire and in the ``activation``
event, first match wins, ``every = k``, the probe's exemption, and SIGHUP reload in a real
process."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import PRODUCTS, RunningHost, make_request, run_host
from test_lifecycle import json_lines, start_daemon, stop

from kms_host.client.strict import ClientError, KmsClient
from kms_host.policy.activation import PROBE_CMID
from kms_host.storage import open_store
from protocol.kms import ProtocolVersion

WIN_PRO_SKU = PRODUCTS["win10pro"].sku_id
NCA_S_SERVER_TOO_BUSY = 0x1C010014


async def activate(host: RunningHost, product: str = "win10pro", **request: Any) -> Any:
    """One request on its own connection; returns the result or the ClientError."""
    async with await host.client() as client:
        try:
            return await client.activate(make_request(product, **request))
        except ClientError as exc:
            return exc


def scenario_event(host: RunningHost, index: int = -1) -> dict[str, Any]:
    event = host.events("activation")[index]
    return {key: event.get(key) for key in ("scenario_rule", "scenario_actions", "result")}


@pytest.mark.asyncio
async def test_hresult_answers_it_and_records_an_uncounted_client(tmp_path: Path) -> None:
    toml = f'[[scenario]]\nsku = "{WIN_PRO_SKU}"\nhresult = "0xC004F042"\n'
    cmid = uuid.uuid4()
    async with run_host(tmp_path, toml) as host:
        refused = await activate(host, cmid=cmid)
        server = await activate(host, "ws2019dc")  # another SKU: no rule applies
    assert refused.hresult == 0xC004F042
    assert refused.response is None
    assert server.hresult == 0
    assert scenario_event(host, 0) == {
        "scenario_rule": 0,
        "scenario_actions": {"hresult": "0xC004F042"},
        "result": "refused",
    }
    assert host.events("activation")[0]["reason"] == "scenario"
    assert "scenario_rule" not in host.events("activation")[1]
    store = await open_store(host.data_dir)
    try:
        (record,) = [r for r in await store.clients() if r.cmid == cmid]
    finally:
        await store.close()
    assert (record.last_hresult, record.last_activated) == (0xC004F042, None)


@pytest.mark.asyncio
async def test_count_reports_that_count(tmp_path: Path) -> None:
    async with run_host(tmp_path, "[[scenario]]\ncount = 3\n") as host:
        result = await activate(host)
    assert result.response.current_client_count == 3
    event = host.events("activation")[0]
    assert event["count"] == 3
    assert scenario_event(host) == {
        "scenario_rule": 0,
        "scenario_actions": {"count": 3},
        "result": "activated",
    }


@pytest.mark.asyncio
async def test_delay_ms_answers_later(tmp_path: Path) -> None:
    async with run_host(tmp_path, "[[scenario]]\ndelay_ms = 400\n") as host:
        started = time.monotonic()
        result = await activate(host)
        elapsed = time.monotonic() - started
    assert result.hresult == 0
    assert elapsed >= 0.4
    assert host.events("activation")[0]["latency_ms"] >= 400
    assert scenario_event(host)["scenario_actions"] == {"delay_ms": 400}


@pytest.mark.asyncio
async def test_close_drops_the_connection_unanswered_and_records_nothing(
    tmp_path: Path,
) -> None:
    async with run_host(tmp_path, "[[scenario]]\nclose = true\n") as host:
        dropped = await activate(host)
    assert isinstance(dropped, ClientError)
    assert dropped.stage == "closed"
    assert scenario_event(host) == {
        "scenario_rule": 0,
        "scenario_actions": {"close": True},
        "result": "dropped",
    }
    assert host.events("connection_dropped_by_service")
    store = await open_store(host.data_dir)
    try:
        assert await store.clients() == []
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_rpc_fault_answers_a_fault_and_keeps_the_connection(tmp_path: Path) -> None:
    fault_cmid = uuid.uuid4()
    toml = f'[[scenario]]\ncmid = "{fault_cmid}"\nrpc_fault = "0x1C010014"\n'
    async with run_host(tmp_path, toml) as host, await host.client() as client:
        with pytest.raises(ClientError) as caught:
            await client.activate(make_request(cmid=fault_cmid))
        after = await client.activate(make_request())  # same association, no rule
    assert (caught.value.stage, caught.value.status) == ("call", NCA_S_SERVER_TOO_BUSY)
    assert after.hresult == 0
    event = host.events("activation")[0]
    assert event["fault_status"] == "0x1C010014"
    assert scenario_event(host, 0) == {
        "scenario_rule": 0,
        "scenario_actions": {"rpc_fault": "0x1C010014"},
        "result": "faulted",
    }


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("version", "check"),
    [(ProtocolVersion.V4, "mac"), (ProtocolVersion.V5, "hash"), (ProtocolVersion.V6, "hmac")],
)
async def test_corrupt_breaks_the_integrity_check(
    tmp_path: Path, version: ProtocolVersion, check: str
) -> None:
    async with run_host(tmp_path, "[[scenario]]\ncorrupt = true\n") as host:
        rejected = await activate(host, version=version)
    assert isinstance(rejected, ClientError)
    assert rejected.stage == "verify"
    assert str(rejected).endswith(f"({check})")
    assert scenario_event(host) == {
        "scenario_rule": 0,
        "scenario_actions": {"corrupt": True},
        "result": "activated",
    }


@pytest.mark.asyncio
async def test_every_third_request_is_dropped(tmp_path: Path) -> None:
    async with run_host(tmp_path, "[[scenario]]\nclose = true\nevery = 3\n") as host:
        results = [await activate(host) for _ in range(7)]
    dropped = [isinstance(result, ClientError) for result in results]
    assert dropped == [False, False, True, False, False, True, False]
    applied = [event.get("scenario_rule") for event in host.events("activation")]
    assert applied == [None, None, 0, None, None, 0, None]
    assert host.events("activation")[2]["scenario_actions"] == {"close": True, "every": 3}


@pytest.mark.asyncio
async def test_first_match_wins_and_match_keys_combine(tmp_path: Path) -> None:
    toml = (
        '[[scenario]]\nmachine_name = "lab-*"\npeer = "10.0.0.0/8"\nhresult = "0xC004F041"\n'
        '[[scenario]]\nmachine_name = "LAB-*"\nprotocol = 5\ncount = 5\n'
        '[[scenario]]\npeer = "127.0.0.0/8"\napp = "windows"\ncount = 7\n'
    )
    async with run_host(tmp_path, toml) as host:
        v5 = await activate(host, machine_name="lab-01", version=ProtocolVersion.V5)
        v6 = await activate(host, machine_name="lab-01")
        office = await activate(host, "o2019pp", machine_name="lab-01")
    # Rule 0 never matches (the peer is 127.0.0.1); rules 1 and 2 both match the V5 call.
    assert v5.response.current_client_count == 5
    assert v6.response.current_client_count == 7
    assert office.response.current_client_count == 5  # no rule: the real (prefilled) count
    assert [e.get("scenario_rule") for e in host.events("activation")] == [1, 2, None]


@pytest.mark.asyncio
async def test_the_probe_is_exempt_unless_named_by_cmid(tmp_path: Path) -> None:
    async with run_host(tmp_path, "[[scenario]]\nclose = true\n") as host:
        probe = await activate(host, cmid=PROBE_CMID)
        client = await activate(host)
    assert probe.hresult == 0
    assert isinstance(client, ClientError)
    toml = f'[[scenario]]\ncmid = "{PROBE_CMID}"\nhresult = "0xC004F039"\n'
    async with run_host(tmp_path / "named", toml) as host:
        named = await activate(host, cmid=PROBE_CMID)
    assert named.hresult == 0xC004F039


# --- SIGHUP in a real process ----------------------------------------------------------------


def next_event(events: Iterator[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(event for event in events if event["event"] == name)


async def wait_event(events: Iterator[dict[str, Any]], name: str) -> dict[str, Any]:
    return await asyncio.wait_for(asyncio.to_thread(next_event, events, name), 15)


async def count_of(port: int) -> int:
    async with await KmsClient.connect("127.0.0.1", port) as client:
        result = await client.activate(make_request())
    assert result.response is not None
    return result.response.current_client_count


@pytest.mark.asyncio
async def test_sighup_reloads_the_rules_or_keeps_them(tmp_path: Path) -> None:
    config = tmp_path / "kms-host.toml"
    config.write_text("[[scenario]]\ncount = 11\n", encoding="utf-8")
    process, port = start_daemon(tmp_path / "data", "--config", str(config))
    assert process.stdout is not None
    events = json_lines(process.stdout)
    try:
        assert await count_of(port) == 11
        config.write_text("[[scenario]]\ncount = 22\n[[scenario]]\nclose = true\n")
        process.send_signal(signal.SIGHUP)
        reloaded = await wait_event(events, "scenario_reloaded")
        assert await count_of(port) == 22
        config.write_text('[[scenario]]\ncount = 33\n[[scenario]]\nrpc_fault = "soon"\n')
        process.send_signal(signal.SIGHUP)
        failed = await wait_event(events, "scenario_reload_failed")
        assert await count_of(port) == 22  # the old rules stay
    finally:
        stop(process)
    assert process.returncode == 0
    assert (reloaded["count"], reloaded["level"]) == (2, "info")
    assert (failed["key"], failed["level"]) == ("scenario[1].rpc_fault", "error")
