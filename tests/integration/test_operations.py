"""Operating a running host: status, clients, products, probe and metrics.

A real daemon on 127.0.0.1:0 answers real clients; the CLI runs in-process (``main``, in a
worker thread because it runs its own event loop) against the same data dir, and the metrics
endpoint is scraped over HTTP. Expected values come from what the test sent and what the
clients were answered, never from the daemon's own logs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from harness import PRODUCTS, RunningHost, make_request, run_host
from prometheus_client.parser import text_string_to_metric_families

from kms_host.cli.main import main
from kms_host.client.strict import ActivationResult
from kms_host.policy.activation import PROBE_CMID
from protocol.kms import ProtocolVersion, rijndael_build

METRICS = '[metrics]\nlisten = "127.0.0.1:0"\n'
V4, V5, V6 = ProtocolVersion.V4, ProtocolVersion.V5, ProtocolVersion.V6
LICENSE_KEYS = [
    "unlicensed",
    "licensed",
    "initial_grace",
    "out_of_tolerance_grace",
    "non_genuine_grace",
    "notification",
    "extended_grace",
]
LICENSE_LABELS = [  # slmgr /dlv's words (kms-host-behaviour 2.5)
    "Unlicensed",
    "Licensed",
    "Initial grace",
    "Out-of-tolerance grace",
    "Non-genuine grace",
    "Notification",
    "Extended grace",
]
SKEWED = 0xC004F06C
APP_OF = {"win10pro": "windows", "ws2019dc": "windows", "o2010pp": "office2010"}
APP_OF |= {"o2016pp": "office", "o2019pp": "office"}


@pytest.fixture(autouse=True)
def _no_host_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads KMS_HOST_* like serve does; the tests give flags only."""
    for name in [n for n in os.environ if n.startswith("KMS_HOST_")]:
        monkeypatch.delenv(name)


class Cli:
    """``kms-host`` in-process, against one host's data dir and config."""

    def __init__(self, capsys: pytest.CaptureFixture[str], host: RunningHost, config: Path):
        self._capsys = capsys
        self._common = ["--data-dir", str(host.data_dir), "--config", str(config)]

    async def run(self, *args: str, common: bool = True) -> tuple[int, str, str]:
        self._capsys.readouterr()
        argv = [*args, *self._common] if common else list(args)
        code = await asyncio.to_thread(main, argv)
        out, err = self._capsys.readouterr()
        return code, out, err

    async def json(self, *args: str) -> Any:
        code, out, err = await self.run(*args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest_asyncio.fixture
async def operated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[tuple[RunningHost, Cli]]:
    toml = METRICS + '[counting]\nprefill = "none"\n'
    async with run_host(tmp_path, toml) as host:
        yield host, Cli(capsys, host, tmp_path / "kms-host.toml")


def runtime(host: RunningHost) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((host.data_dir / "runtime.json").read_text())
    return document


async def scrape(address: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    def get() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            return str(response.read().decode())

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(await asyncio.to_thread(get)):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(v for ls, v in samples if all(ls.get(k) == want for k, want in labels.items()))


async def activate(host: RunningHost, product: str, **request: Any) -> ActivationResult:
    async with await host.client() as client:
        return await client.activate(make_request(product, **request))


# --- status, clients and metrics against what was sent ----------------------------------------

SENT = [  # product, version, license status; the last one is refused (client clock 5 h off)
    ("win10pro", V6, 0),
    ("win10pro", V5, 1),
    ("ws2019dc", V6, 2),
    ("o2010pp", V4, 3),
    ("o2016pp", V5, 4),
    ("o2019pp", V6, 5),
    ("win10pro", V6, 6),
]


@pytest.mark.asyncio
async def test_status_clients_and_metrics_match_what_was_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with run_host(tmp_path, METRICS) as host:  # default prefill: status must apply it
        cli = Cli(capsys, host, tmp_path / "kms-host.toml")
        sent: list[tuple[str, ProtocolVersion, int, uuid.UUID, ActivationResult]] = []
        for n, (product, version, status) in enumerate(SENT):
            cmid = uuid.uuid4()
            skew = timedelta(hours=5) if n == len(SENT) - 1 else timedelta(0)
            result = await activate(
                host,
                product,
                version=version,
                cmid=cmid,
                machine_name=f"client{n}.lab.example",
                license_status=status,
                when=datetime.now(UTC) + skew,
            )
            sent.append((product, version, status, cmid, result))
        status = await cli.json("status")
        listed = await cli.json("clients")
        metrics = await scrape(runtime(host)["metrics"][0])

    assert [r.hresult for *_, r in sent] == [0] * 6 + [SKEWED]
    last_count = {APP_OF[p]: r.response.current_client_count for p, *_, r in sent if r.response}
    assert last_count == {"windows": 27, "office2010": 5, "office": 6}  # 24 and 4 prefilled
    apps = status["applications"]
    assert {app: apps[app]["current_count"] for app in last_count} == last_count
    assert {app: apps[app]["live_clients"] for app in apps} == {
        "windows": 3,
        "office2010": 1,
        "office": 2,
    }
    assert status["requests"] == {
        "total": 7,
        "failed": 1,
        "by_license_status": dict.fromkeys(LICENSE_KEYS, 1),
    }
    assert status["rijndael"] == rijndael_build()
    assert status["daemon"]["running"] is True
    assert status["daemon"]["tcp"] == [f"127.0.0.1:{host.port}"]
    group_of_epid = {epid: group for group, epid in status["epids"].items()}
    answered = [r for *_, r in sent if r.response]
    assert all(r.response and r.response.epid in group_of_epid for r in answered)
    assert {r.hwid.hex().upper() for r in answered if r.hwid} == {status["hwid"]}
    assert (status["activation_interval_min"], status["renewal_interval_min"]) == (120, 10080)

    assert [row["cmid"] for row in listed] == [str(cmid) for *_, cmid, _ in reversed(sent)]
    for row, (product, version, license_status, _, result) in zip(
        listed, reversed(sent), strict=True
    ):
        assert row["app"] == APP_OF[product]
        assert row["sku_id"] == str(PRODUCTS[product].sku_id)
        assert row["protocol_version"] == f"{version.value}.0"
        assert row["license_status"] == LICENSE_LABELS[license_status]
        assert row["last_hresult"] == f"0x{result.hresult:08X}"
        assert (row["last_activated"] is None) == (result.hresult != 0)
        assert row["synthetic"] is False

    activations = metrics["kms_host_activations_total"]
    for product, version, _, _, result in sent:
        labels = {"protocol": f"{version.value}.0", "app": APP_OF[product]}
        labels["hresult"] = f"0x{result.hresult:08X}"
        labels["result"] = "refused" if result.hresult else "activated"
        if result.response:
            labels["host_key_group"] = group_of_epid[result.response.epid]
        assert total(activations, **labels) >= 1, labels
    assert total(activations) == len(SENT)
    assert total(metrics["kms_host_refused_requests_total"], hresult=f"0x{SKEWED:08X}") == 1
    assert total(metrics["kms_host_request_duration_seconds_count"]) == len(SENT)
    for app, count in last_count.items():
        assert total(metrics["kms_host_current_count"], app=app) == count
    rows = {app: sum(1 for row in listed if row["app"] == app) for app in last_count}
    assert rows == {"windows": 4, "office2010": 1, "office": 2}
    for app, count in rows.items():
        assert total(metrics["kms_host_clients"], app=app) == count
        assert apps[app]["table_rows"] == count
    assert total(metrics["kms_host_open_connections"]) == 0


@pytest.mark.asyncio
async def test_status_text_and_the_runtime_file_after_a_clean_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with run_host(tmp_path) as host:
        cli = Cli(capsys, host, tmp_path / "none.toml")
        await activate(host, "win10pro")
        code, running, _ = await cli.run("status", "--data-dir", str(host.data_dir), common=False)
    assert code == 0
    assert running.splitlines()[0].endswith(f", {rijndael_build()} Rijndael)")
    assert [e["rijndael"] for e in host.events("listening")] == [rijndael_build()]
    assert f"Listening on:          127.0.0.1:{host.port}" in running
    assert "Requests with License Status Initial grace: 1" in running
    assert not (host.data_dir / "runtime.json").exists()
    stopped = await cli.run("status", "--data-dir", str(host.data_dir), "--json", common=False)
    assert json.loads(stopped[1])["daemon"] is None


@pytest.mark.asyncio
async def test_clients_text_is_aligned_and_filters(
    operated: tuple[RunningHost, Cli],
) -> None:
    host, cli = operated
    await activate(host, "win10pro", machine_name="w.lab")
    await activate(host, "o2019pp", machine_name="o.lab")
    code, out, _ = await cli.run("clients")
    header, *rows = out.splitlines()
    assert code == 0
    assert header.split()[:5] == ["LAST", "SEEN", "(UTC)", "APP", "MACHINE"]
    assert len(rows) == 2
    column = header.index("MACHINE")
    assert [row[column:].split()[0] for row in rows] == ["o.lab", "w.lab"]
    office = await cli.json("clients", "--app", "office")
    assert [row["machine_name"] for row in office] == ["o.lab"]
    code, out, _ = await cli.run("clients", "--since", "0.0000001", "--json")
    assert (code, json.loads(out)) == (1, [])  # the README's exit 1: nothing matched


# --- forget, reset and seed beside the running daemon -----------------------------------------


@pytest.mark.asyncio
async def test_forget_reset_and_seed_reach_the_daemons_next_count(
    operated: tuple[RunningHost, Cli],
) -> None:
    host, cli = operated
    windows = [uuid.uuid4() for _ in range(3)]
    counts = [await count_of(host, "win10pro", cmid) for cmid in windows]
    assert counts == [1, 2, 3]
    assert [await count_of(host, "o2019pp", uuid.uuid4()) for _ in range(2)] == [1, 2]

    seeded = await cli.json("clients", "seed", "--app", "windows", "--count", "10")
    assert len(seeded["cmids"]) == 10
    status = await cli.json("status")
    assert status["applications"]["windows"]["current_count"] == 13
    assert await count_of(host, "win10pro", uuid.uuid4()) == 14
    synthetic = [row for row in await cli.json("clients", "--app", "windows") if row["synthetic"]]
    assert sorted(row["machine_name"] for row in synthetic) == [
        f"seed-{n:04}" for n in range(1, 11)
    ]
    assert {row["cmid"] for row in synthetic} == set(seeded["cmids"])

    assert await cli.json("clients", "forget", str(windows[0])) == {
        "forgotten": str(windows[0]),
        "rows": 1,
    }
    code, _, err = await cli.run("clients", "forget", str(uuid.uuid4()))
    assert code == 1
    assert "no client with CMID" in err
    assert await count_of(host, "win10pro", windows[1]) == 13  # 14 - the forgotten one

    assert (await cli.json("clients", "reset", "--app", "office"))["rows"] == 2
    assert await count_of(host, "win10pro", windows[1]) == 13
    assert host.events("counts")[-1]["counts"] == {"windows": 13, "office": 0, "office2010": 0}
    metrics = await scrape(runtime(host)["metrics"][0])
    assert total(metrics["kms_host_current_count"], app="office") == 0
    assert total(metrics["kms_host_clients"], app="office") == 0

    assert (await cli.json("clients", "reset"))["rows"] == 13
    assert await count_of(host, "win10pro", uuid.uuid4()) == 1
    stats = (await cli.json("status"))["requests"]
    assert stats["total"] == 9  # the cumulative counters survive resets; seeds are no requests


async def count_of(host: RunningHost, product: str, cmid: uuid.UUID) -> int:
    result = await activate(host, product, cmid=cmid)
    assert result.response is not None
    return result.response.current_client_count


# --- probe -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_probe_passes_against_a_healthy_host_and_leaves_no_trace(
    operated: tuple[RunningHost, Cli],
) -> None:
    host, cli = operated
    code, out, err = await cli.run("probe", f"127.0.0.1:{host.port}", common=False)
    assert (code, err) == (0, "")
    assert out.startswith(f"ok: 127.0.0.1:{host.port} activated Windows 10/11 Pro (KMS V6)")
    code, out, _ = await cli.run("probe", "--json", f"127.0.0.1:{host.port}", common=False)
    report = json.loads(out)
    assert (code, report["ok"], report["count"]) == (0, True, 0)
    assert report["epid"] in (await cli.json("status"))["epids"].values()

    code, out, _ = await cli.run("clients", "--json")
    assert (code, json.loads(out)) == (1, [])  # nothing matched: the probe left no row
    status = await cli.json("status")
    assert status["requests"]["total"] == 0
    assert status["applications"]["windows"]["current_count"] == 0
    assert str(PROBE_CMID) not in out
    metrics = await scrape(runtime(host)["metrics"][0])
    assert total(metrics["kms_host_activations_total"], result="probe") == 2
    assert total(metrics["kms_host_activations_total"], result="activated") == 0


async def probe(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["probe", "--timeout", "2", *args])
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    return code, err


@pytest.mark.asyncio
async def test_probe_names_a_closed_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, err = await probe(capsys, f"127.0.0.1:{port}")
    assert code == 1
    assert f"127.0.0.1:{port}: refused:" in err


@pytest.mark.asyncio
async def test_probe_names_a_server_that_answers_garbage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    async with server:
        code, err = await probe(capsys, f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    assert code == 1
    assert ": bind failed: " in err


@pytest.mark.asyncio
async def test_probe_names_a_server_that_never_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the probe gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        code, err = await probe(capsys, "--timeout", "0.5", f"127.0.0.1:{port}")
    assert code == 1
    assert ": timed out: " in err


@pytest.mark.asyncio
async def test_probe_names_the_hresult_of_a_refusing_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with run_host(tmp_path, '[host]\nscope = ["office-2019"]\n') as host:
        code, err = await probe(capsys, f"127.0.0.1:{host.port}")
        cli = Cli(capsys, host, tmp_path / "kms-host.toml")
        listed = await cli.run("clients", "--json")
        assert (listed[0], json.loads(listed[1])) == (1, [])  # nothing matched: exit 1
    assert code == 1
    assert ": HRESULT 0xC004F042: the host does not serve this product" in err


def test_probe_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["bad port:1688"], ["127.0.0.1:0"], ["--timeout", "0", "h:1"]):
        with pytest.raises(SystemExit) as info:
            main(["probe", *argv])
        assert info.value.code == 2


# --- products and failures ---------------------------------------------------------------------


def test_products_finds_windows_pro_by_gvlk_and_marks_the_scope(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # products reads the daemon's settings from ./data when one runs there: not this cwd's.
    monkeypatch.chdir(tmp_path)
    gvlk = "W269N-WFGWX-YVC9B-4J6C9-T83GX"
    assert main(["products", gvlk, "--json"]) == 0
    [found] = json.loads(capsys.readouterr().out)
    assert (found["name"], found["gvlk"], found["served"]) == ("Windows 10/11 Pro", gvlk, True)
    assert found["kms_id"] == str(PRODUCTS["win10pro"].kms_id)
    assert (found["threshold"], found["default_protocol"]) == (25, "6.0")
    office_only = tmp_path / "office.toml"
    office_only.write_text('[host]\nscope = ["office-2019"]\n')
    assert main(["products", gvlk, "--config", str(office_only)]) == 0
    _, row = capsys.readouterr().out.splitlines()
    assert row.startswith("Windows 10/11 Pro ")
    assert row.endswith("not served")
    assert main(["products", "no such product at all"]) == 1
    assert "no product matches" in capsys.readouterr().err


def test_views_exit_1_without_a_client_table_and_2_on_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--data-dir", str(tmp_path / "nowhere")]) == 1
    assert "no client table" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("[counting]\nwindow_days = 0\n")
    assert main(["clients", "--config", str(bad), "--data-dir", str(tmp_path)]) == 2
    assert "counting.window_days" in capsys.readouterr().err
