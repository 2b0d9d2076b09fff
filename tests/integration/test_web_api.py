"""The dashboard's JSON API (``[web]``) against a real daemon on 127.0.0.1:0.

Clients are activated by the strict client over TCP; what the API says is compared with what
the CLI (``status --json``, ``clients``) reads from the same data dir, and with what was sent.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import RunningHost, make_request, run_host

from kms_host.cli.main import main
from kms_host.config import ConfigOverrides, load_config
from kms_host.errors import ConfigError

WEB = '[web]\nlisten = "127.0.0.1:0"\n[counting]\nprefill = "none"\n'
TOKEN = "correct-horse-battery-staple"
PAYLOAD = "<img src=x onerror=alert(1)>"


def base(host: RunningHost) -> str:
    address, port = host.web[0]
    return f"http://{address}:{port}"


async def get(host: RunningHost, path: str, **headers: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(base(host) + path, headers=headers) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def get_json(host: RunningHost, path: str) -> Any:
    status, kind, text = await get(host, path)
    assert (status, kind.split(";")[0]) == (200, "application/json"), text
    return json.loads(text)


async def activate(host: RunningHost, product: str, machine_name: str) -> None:
    async with await host.client() as client:
        await client.activate(make_request(product, machine_name=machine_name))


async def cli(capsys: pytest.CaptureFixture[str], host: RunningHost, *args: str) -> str:
    capsys.readouterr()
    config = str(host.data_dir.parent / "kms-host.toml")
    argv = [*args, "--data-dir", str(host.data_dir), "--config", config]
    code = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.asyncio
async def test_status_is_status_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with run_host(tmp_path, WEB) as host:
        await activate(host, "win10pro", "pc-1")
        api = await get_json(host, "/api/status")
        document = json.loads(await cli(capsys, host, "status", "--json"))
    assert api.keys() == document.keys()
    assert api["applications"]["windows"]["live_clients"] == 1
    assert api["applications"] == document["applications"]
    assert (api["hwid"], api["epids"]) == (document["hwid"], document["epids"])
    assert api["daemon"]["web"] == [f"127.0.0.1:{host.web[0][1]}"]
    assert api["requests"]["total"] == 1


@pytest.mark.asyncio
async def test_clients_filter_page_and_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with run_host(tmp_path, WEB) as host:
        for index in range(3):
            await activate(host, "win10pro", f"win-{index}.lab")
        await activate(host, "o2021pp", "office-1.lab")
        await activate(host, "ws2022dc", PAYLOAD)
        windows = await get_json(host, "/api/clients?app=windows")
        page = await get_json(host, "/api/clients?app=windows&limit=2&offset=2")
        machine = await get_json(host, "/api/clients?machine=WIN-1")
        product = await get_json(host, "/api/clients?product=server%202022")
        recent = await get_json(host, "/api/clients?since_days=1")
        status, kind, text = await get(host, "/api/clients?app=windows&format=csv")
        listed = json.loads(await cli(capsys, host, "clients", "--app", "windows", "--json"))
        bad = await get(host, "/api/clients?limit=0")
        unknown = await get(host, "/api/clients?colour=red")
    assert windows["total"] == 4
    assert windows["clients"] == listed  # the same rows, newest first, the same fields
    assert page["total"] == 4
    assert [row["cmid"] for row in page["clients"]] == [row["cmid"] for row in listed[2:4]]
    assert [row["machine_name"] for row in machine["clients"]] == ["win-1.lab"]
    assert [row["machine_name"] for row in product["clients"]] == [PAYLOAD]
    assert recent["total"] == 5
    assert (status, kind.split(";")[0]) == (200, "text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["cmid"] for row in rows] == [row["cmid"] for row in listed]
    assert PAYLOAD in [row["machine_name"] for row in rows]
    assert bad[0] == 400
    assert "limit" in json.loads(bad[2])["error"]
    assert unknown[0] == 400
    assert "colour" in json.loads(unknown[2])["error"]


@pytest.mark.asyncio
async def test_activations_carry_the_log_events_fields(tmp_path: Path) -> None:
    toml = WEB + "[policy]\nrefuse_unknown = true\n"
    async with run_host(tmp_path, toml) as host:
        await activate(host, "win10pro", PAYLOAD)
        async with await host.client() as client:  # a KMS ID no catalog holds: refused
            refused = await client.activate(
                make_request(kms_counted_id=uuid.UUID(int=7), machine_name="odd")
            )
        feed = await get_json(host, "/api/activations")
        newer = await get_json(host, f"/api/activations?after={feed['activations'][1]['id']}")
        events = host.events("activation")
    assert refused.hresult == 0xC004F042
    assert feed["available"] is True
    first, second = reversed(feed["activations"])
    assert first["id"] < second["id"]
    for entry, event in zip((first, second), events, strict=True):
        for name in ("peer", "machine_name", "cmid", "product", "result", "hresult", "count"):
            assert entry[name] == event.get(name), name
    assert (first["machine_name"], first["result"], first["count"]) == (PAYLOAD, "activated", 1)
    assert (first["hresult"], first["hresult_name"]) == ("0x00000000", "S_OK")
    assert (second["result"], second["hresult"]) == ("refused", "0xC004F042")
    assert second["hresult_name"] == "SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH"
    assert [entry["id"] for entry in newer["activations"]] == [second["id"]]


@pytest.mark.asyncio
async def test_token_is_required_when_set(tmp_path: Path) -> None:
    toml = f'[web]\nlisten = "127.0.0.1:0"\ntoken = "{TOKEN}"\n'
    async with run_host(tmp_path, toml) as host:
        none = await get(host, "/api/status")
        wrong = await get(host, "/api/status", Authorization="Bearer " + "x" * len(TOKEN))
        page = await get(host, "/")
        right = await get(host, "/api/status", Authorization=f"Bearer {TOKEN}")
        query = await get(host, f"/?token={TOKEN}")
    assert [none[0], wrong[0], page[0]] == [401, 401, 401]
    assert right[0] == 200
    assert json.loads(right[2])["scope"]
    assert query[0] == 200
    assert "<title>kms-host</title>" in query[2]
    assert TOKEN not in json.dumps(host.events("config"))  # redacted from the config line


@pytest.mark.parametrize(
    ("web", "refused"),
    [
        ('listen = "0.0.0.0:8688"', True),
        ('listen = "[::]:8688"', True),
        ('listen = "lab-host:8688"', True),
        ('listen = "0.0.0.0:8688"\nallow_public = true', False),
        (f'listen = "0.0.0.0:8688"\ntoken = "{TOKEN}"', False),
        ('listen = "[::1]:8688"', False),
        ('listen = "localhost:8688"', False),
    ],
)
def test_public_listen_needs_a_token_or_allow_public(
    tmp_path: Path, web: str, refused: bool
) -> None:
    path = tmp_path / "kms-host.toml"
    path.write_text(f"[web]\n{web}\n", encoding="utf-8")
    if not refused:
        load_config(path, env={}, overrides=ConfigOverrides())
        return
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={}, overrides=ConfigOverrides())
    assert caught.value.key == "web.allow_public"
    assert "web.token" in str(caught.value)


def test_serve_refuses_a_public_dashboard_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "kms-host.toml"
    path.write_text('[web]\nlisten = "0.0.0.0:0"\n', encoding="utf-8")
    code = main(["serve", "--config", str(path), "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "web.allow_public" in err
    assert not (tmp_path / "data" / "runtime.json").exists()
