"""Each refusal a genuine host makes, produced over the wire and seen in the log (spec 7.1,
7.4; kms-host-behaviour 2.7)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import PRODUCTS, make_request, run_host

from kms_host.storage import open_store

UNKNOWN_KMS_ID = uuid.UUID("00000000-1111-4222-8333-444444444444")


async def one(tmp_path: Path, toml: str, **request: object) -> tuple[int, dict[str, object]]:
    product = str(request.pop("product", "win10pro"))
    async with run_host(tmp_path, toml) as host, await host.client() as client:
        result = await client.activate(make_request(product, **request))  # type: ignore[arg-type]
    (event,) = host.events("activation")
    assert event["hresult"] == f"0x{result.hresult:08X}"
    return result.hresult, event


@pytest.mark.asyncio
async def test_product_outside_the_host_key_scope(tmp_path: Path) -> None:
    hresult, event = await one(tmp_path, '[host]\nscope = ["office-2019"]\n')
    assert hresult == 0xC004F042
    assert event["reason"] == "product_not_in_scope"
    assert event["log_level"] == "warning"


@pytest.mark.asyncio
async def test_product_inside_a_narrowed_scope_activates(tmp_path: Path) -> None:
    hresult, event = await one(tmp_path, '[host]\nscope = ["office-2019"]\n', product="o2019pp")
    assert hresult == 0
    assert event["host_key_group"] == "office-2019"


@pytest.mark.asyncio
async def test_a_server_2019_key_does_not_serve_server_2022(tmp_path: Path) -> None:
    hresult, _ = await one(
        tmp_path, '[host]\nscope = ["windows-server-2019"]\n', product="ws2022dc"
    )
    assert hresult == 0xC004F042


@pytest.mark.asyncio
async def test_unknown_kms_id_is_accepted_and_logged_by_default(tmp_path: Path) -> None:
    hresult, event = await one(tmp_path, "", kms_counted_id=UNKNOWN_KMS_ID)
    assert hresult == 0
    assert "unknown_kms_id" in event["notes"]  # type: ignore[operator]


@pytest.mark.asyncio
async def test_unknown_kms_id_is_refused_with_refuse_unknown(tmp_path: Path) -> None:
    hresult, event = await one(
        tmp_path, "[policy]\nrefuse_unknown = true\n", kms_counted_id=UNKNOWN_KMS_ID
    )
    assert hresult == 0xC004F042
    assert event["reason"] == "unknown_kms_id"


@pytest.mark.asyncio
async def test_sku_of_another_group_is_logged_and_refused_when_strict(tmp_path: Path) -> None:
    office_sku = PRODUCTS["o2016pp"].sku_id  # an Office SKU claiming the Windows 10 KMS ID
    hresult, event = await one(tmp_path, "", sku_id=office_sku)
    assert hresult == 0
    assert "sku_kms_mismatch" in event["notes"]  # type: ignore[operator]
    strict, event = await one(
        tmp_path / "strict", "[policy]\nstrict_sku = true\n", sku_id=office_sku
    )
    assert strict == 0xC004F042
    assert event["reason"] == "sku_kms_mismatch"


@pytest.mark.asyncio
async def test_required_client_count_above_1000(tmp_path: Path) -> None:
    hresult, event = await one(tmp_path, "", required=1001)
    assert hresult == 0x8007000D
    assert event["reason"] == "required_count_too_high"
    ok, _ = await one(tmp_path / "ok", "", required=1000)
    assert ok == 0


@pytest.mark.asyncio
async def test_client_clock_five_hours_off(tmp_path: Path) -> None:
    skewed = datetime.now(UTC) + timedelta(hours=5)
    hresult, event = await one(tmp_path, "", when=skewed)
    assert hresult == 0xC004F06C
    assert event["reason"] == "clock_skew"
    allowed, _ = await one(tmp_path / "off", "[policy]\ncheck_client_time = false\n", when=skewed)
    assert allowed == 0
    near, _ = await one(
        tmp_path / "near", "", when=datetime.now(UTC) + timedelta(hours=3, minutes=50)
    )
    assert near == 0


@pytest.mark.asyncio
async def test_refused_clients_are_recorded_but_not_counted(tmp_path: Path) -> None:
    toml = '[host]\nscope = ["office-2019"]\n[counting]\nprefill = "none"\n'
    async with run_host(tmp_path, toml) as host, await host.client() as client:
        refused = await client.activate(make_request("win10pro"))
        served = await client.activate(make_request("o2019pp"))
    assert refused.hresult == 0xC004F042
    assert served.response is not None
    assert served.response.current_client_count == 1
    store = await open_store(host.data_dir)
    try:
        records = {r.app: r for r in await store.clients()}
        stats = await store.stats()
    finally:
        await store.close()
    assert records["windows"].last_hresult == 0xC004F042
    assert records["windows"].last_activated is None
    assert stats.total == 2
    assert stats.failed == 1
