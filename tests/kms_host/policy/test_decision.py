"""The host's decision, one rule per row: refusals, scenario rules and the reported count.

:func:`kms_host.policy.activation.decide` and :func:`reported_count` are pure, so each row is
a request (or a tally) and the verdict a genuine host gives it (spec 7.2, 7.4; the rules'
order is that of the module's docstring). The last test takes its tallies from a real client
table (SQLite on a temporary file), to show the count read back is the one a row predicts.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sightings import windows_sighting

from kms_host.config import CountingConfig, CountingMode, PolicyConfig, Prefill
from kms_host.policy.activation import (
    HRESULT_INVALID_DATA,
    HRESULT_INVALID_TIMESTAMP,
    HRESULT_KMS_ID_MISMATCH,
    PROBE_CMID,
    AppTally,
    Decision,
    Refusal,
    decide,
    reported_count,
)
from kms_host.policy.catalog_file import load_catalog
from kms_host.policy.scenario import ScenarioBook, parse_scenarios
from kms_host.storage import open_store
from protocol.kms import KmsRequest, ProtocolVersion, datetime_to_filetime

CATALOG = load_catalog()
EVERYTHING = CATALOG.resolve_scope(["all"])
OFFICE_ONLY = CATALOG.resolve_scope(["office-2019"])
NOW = datetime(2024, 1, 1, 12, tzinfo=UTC)
NOW_FT = datetime_to_filetime(NOW)
HOUR_FT = 3600 * 10_000_000

# Windows 10/11 Pro (spec 8.4-8.6), and IDs the catalog files elsewhere or not at all.
WINDOWS = uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f")
OFFICE = uuid.UUID("0ff1ce15-a989-479d-af46-f275c6370663")
WIN10_PRO_SKU = uuid.UUID("2de67392-b7a7-462a-b1ca-108dd189f588")
WIN10_KMS = uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148")
WS2019_KMS = uuid.UUID("8449b1fb-f0ea-497a-99ab-66ca96e9a0f5")
MADE_UP = uuid.UUID("12345678-1234-5678-1234-567812345678")

REQUEST = KmsRequest(
    version=ProtocolVersion.V6,
    is_client_vm=0,
    license_status=2,
    grace_time_min=43200,
    application_id=WINDOWS,
    sku_id=WIN10_PRO_SKU,
    kms_counted_id=WIN10_KMS,
    client_machine_id=uuid.UUID(int=0x1234),
    required_client_count=25,
    request_time=NOW_FT,
    previous_client_machine_id=uuid.UUID(int=0),
    machine_name="pc01.lab.example",
)
PEER = "192.0.2.7:49152"


def judged(
    *,
    policy: PolicyConfig | None = None,
    scope: frozenset[str] = EVERYTHING,
    scenarios: ScenarioBook | None = None,
    **changes: Any,
) -> Decision:
    return decide(
        dataclasses.replace(REQUEST, **changes),
        peer=PEER,
        now_filetime=NOW_FT,
        catalog=CATALOG,
        scope=scope,
        policy=policy or PolicyConfig(),
        scenarios=scenarios or ScenarioBook(),
    )


MISMATCH = HRESULT_KMS_ID_MISMATCH


@pytest.mark.parametrize(
    ("policy", "scope", "changes", "refusal"),
    [
        pytest.param({}, EVERYTHING, {}, None, id="served"),
        pytest.param(
            {},
            EVERYTHING,
            {"required_client_count": 1001},
            Refusal(HRESULT_INVALID_DATA, "required_count_too_high"),
            id="1-required-count-above-the-limit",
        ),
        pytest.param(
            {"max_required_client_count": 5000},
            EVERYTHING,
            {"required_client_count": 1001},
            None,
            id="1-the-limit-is-a-setting",
        ),
        pytest.param(
            {},
            EVERYTHING,
            {"request_time": NOW_FT + 4 * HOUR_FT + 10_000_000},
            Refusal(HRESULT_INVALID_TIMESTAMP, "clock_skew"),
            id="2-client-clock-4h-and-1s-ahead",
        ),
        pytest.param(
            {},
            EVERYTHING,
            {"request_time": NOW_FT - 4 * HOUR_FT},
            None,
            id="2-exactly-4h-behind-is-accepted",
        ),
        pytest.param(
            {"check_client_time": False},
            EVERYTHING,
            {"request_time": NOW_FT - 48 * HOUR_FT},
            None,
            id="2-clock-check-off",
        ),
        pytest.param(
            {},
            EVERYTHING,
            {"kms_counted_id": MADE_UP},
            None,
            id="3-unknown-kms-id-accepted-by-default",
        ),
        pytest.param(
            {"refuse_unknown": True},
            EVERYTHING,
            {"kms_counted_id": MADE_UP},
            Refusal(MISMATCH, "unknown_kms_id"),
            id="3-unknown-kms-id-refused",
        ),
        pytest.param(
            {},
            OFFICE_ONLY,
            {},
            Refusal(MISMATCH, "product_not_in_scope"),
            id="4-no-held-group-covers-it",
        ),
        pytest.param(
            {},
            EVERYTHING,
            {"kms_counted_id": WS2019_KMS},
            None,
            id="5-sku-of-another-kms-id-noted-only",
        ),
        pytest.param(
            {"strict_sku": True},
            EVERYTHING,
            {"kms_counted_id": WS2019_KMS},
            Refusal(MISMATCH, "sku_kms_mismatch"),
            id="5-sku-of-another-kms-id-refused",
        ),
        pytest.param(
            {"strict_sku": True},
            EVERYTHING,
            {"application_id": OFFICE},
            Refusal(MISMATCH, "application_mismatch"),
            id="5-kms-id-of-another-application-refused",
        ),
        pytest.param(
            {},
            OFFICE_ONLY,
            {"required_client_count": 1001, "request_time": 0},
            Refusal(HRESULT_INVALID_DATA, "required_count_too_high"),
            id="order-rule-1-before-2-and-4",
        ),
    ],
)
def test_the_refusal_rules(
    policy: dict[str, Any],
    scope: frozenset[str],
    changes: dict[str, Any],
    refusal: Refusal | None,
) -> None:
    decision = judged(policy=PolicyConfig(**policy), scope=scope, **changes)
    assert decision.refusal == refusal
    assert decision.rule is None
    assert not decision.unanswered


def test_a_served_request_is_filed_under_its_application_and_group() -> None:
    decision = judged()
    assert decision.assessment.app == "windows"
    assert decision.assessment.group is not None
    assert decision.assessment.notes == ()
    assert not decision.probe


def book(*tables: dict[str, Any]) -> ScenarioBook:
    return ScenarioBook(parse_scenarios(list(tables)))


@pytest.mark.parametrize(
    ("tables", "changes", "index", "refusal", "unanswered"),
    [
        pytest.param(
            [{"machine_name": "lab-*", "hresult": "0xC004F042"}],
            {},
            None,
            None,
            False,
            id="no-match-no-rule",
        ),
        pytest.param(
            [{"machine_name": "PC*", "hresult": "0xC004F039"}],
            {},
            0,
            Refusal(0xC004F039, "scenario"),
            False,
            id="hresult-refuses",
        ),
        pytest.param(
            [{"sku": str(WIN10_PRO_SKU), "close": True}],
            {},
            0,
            None,
            True,
            id="close-is-unanswered",
        ),
        pytest.param(
            [{"protocol": 6, "rpc_fault": "0x1C010003"}],
            {},
            0,
            None,
            True,
            id="rpc-fault-is-unanswered",
        ),
        pytest.param(
            [{"app": "office", "close": True}, {"app": "windows", "count": 3}],
            {},
            1,
            None,
            False,
            id="first-matching-rule-wins",
        ),
        pytest.param(
            [{"hresult": "0xC004F042"}],
            {"required_client_count": 1001},
            0,
            Refusal(0xC004F042, "scenario"),
            False,
            id="rule-overrides-the-host",
        ),
        pytest.param(
            [{"hresult": "0xC004F042"}],
            {"client_machine_id": PROBE_CMID},
            None,
            None,
            False,
            id="probe-exempt-from-unnamed-rules",
        ),
        pytest.param(
            [{"cmid": str(PROBE_CMID), "hresult": "0xC004F039"}],
            {"client_machine_id": PROBE_CMID},
            0,
            Refusal(0xC004F039, "scenario"),
            False,
            id="probe-matched-by-its-cmid",
        ),
        pytest.param(
            [{"peer": "198.51.100.0/24", "close": True}],
            {},
            None,
            None,
            False,
            id="peer-outside-the-cidr",
        ),
    ],
)
def test_scenario_rules(
    tables: list[dict[str, Any]],
    changes: dict[str, Any],
    index: int | None,
    refusal: Refusal | None,
    unanswered: bool,
) -> None:
    decision = judged(scenarios=book(*tables), **changes)
    assert (decision.rule.index if decision.rule else None) == index
    assert decision.refusal == refusal
    assert decision.unanswered is unanswered


def test_every_k_acts_on_each_kth_claimed_request_only() -> None:
    rules = book({"machine_name": "pc*", "hresult": "0xC004F042", "every": 2})
    verdicts = [judged(scenarios=rules).refusal for _ in range(4)]
    acted = Refusal(HRESULT_KMS_ID_MISMATCH, "scenario")
    assert verdicts == [None, acted, None, acted]


FAITHFUL = CountingConfig()
NO_PREFILL = CountingConfig(prefill=Prefill.NONE)
SATURATED = CountingConfig(mode=CountingMode.SATURATED)
FIXED = CountingConfig(mode=CountingMode.FIXED, fixed_count=7)


@pytest.mark.parametrize(
    ("counting", "live", "largest", "required", "count"),
    [
        pytest.param(FAITHFUL, 1, 25, 25, 25, id="prefill-first-client-sees-threshold"),
        pytest.param(FAITHFUL, 30, 25, 25, 50, id="capped-at-twice-the-threshold"),
        pytest.param(FAITHFUL, 3, 25, 0, 27, id="status-query-still-prefilled"),
        pytest.param(FAITHFUL, 0, 0, 0, 0, id="empty-host-reports-zero"),
        pytest.param(FAITHFUL, 1, 5, 25, 25, id="the-requests-threshold-counts-too"),
        pytest.param(NO_PREFILL, 1, 25, 25, 1, id="no-prefill-counts-real-clients"),
        pytest.param(NO_PREFILL, 60, 25, 25, 50, id="no-prefill-capped"),
        pytest.param(NO_PREFILL, 1, 0, 0, 1, id="no-threshold-cap-is-one"),
        pytest.param(SATURATED, 1, 5, 5, 10, id="saturated-twice-the-threshold"),
        pytest.param(SATURATED, 0, 0, 0, 1, id="saturated-at-least-one"),
        pytest.param(FIXED, 40, 25, 25, 7, id="fixed"),
    ],
)
def test_reported_count(
    counting: CountingConfig, live: int, largest: int, required: int, count: int
) -> None:
    tally = AppTally(live_clients=live, max_required_count=largest)
    assert reported_count(tally, required=required, counting=counting) == count
    assert judged().count(tally, required=required, counting=counting) == count


def test_a_count_rule_replaces_the_reported_count() -> None:
    decision = judged(scenarios=book({"count": 3}))
    tally = AppTally(live_clients=40, max_required_count=25)
    assert decision.count(tally, required=25, counting=FAITHFUL) == 3


@pytest.mark.asyncio
async def test_the_count_read_back_from_a_real_client_table(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "data")
    try:
        since = NOW - timedelta(days=30)
        for n in range(3):
            tally = await store.record(windows_sighting(n, seen_at=NOW), since=since)
        refused = windows_sighting(9, seen_at=NOW, hresult=MISMATCH, counted=False)
        tally = await store.record(refused, since=since)
        expired = windows_sighting(8, seen_at=NOW - timedelta(days=31))
        await store.record(expired, since=since - timedelta(days=1))
        tally = await store.tally("windows", since=since)
    finally:
        await store.close()
    assert tally == AppTally(live_clients=3, max_required_count=25)
    assert judged().count(tally, required=25, counting=NO_PREFILL) == 3
    assert judged().count(tally, required=25, counting=FAITHFUL) == 27
