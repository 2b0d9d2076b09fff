"""``kms-host probe`` asks for a product the host serves: ``--product``, else the first one of
the scope its config (file or ``KMS_HOST_*``, as the container gives it) holds, on port 1688
unless told otherwise."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from harness import run_host

from kms_host.cli.main import main
from kms_host.cli.probe import probe_product
from kms_host.policy.activation import PROBE_CMID
from kms_host.policy.catalog_file import load_catalog

OFFICE_2019 = '[host]\nscope = ["office-2019"]\n'


@pytest.fixture(autouse=True)
def _no_host_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("KMS_HOST_")]:
        monkeypatch.delenv(name)


async def probe(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["probe", "--timeout", "5", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.asyncio
async def test_an_office_only_host_is_healthy_by_its_config_file_or_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with run_host(tmp_path, OFFICE_2019) as host:
        target = f"127.0.0.1:{host.port}"
        code, out, err = await probe(capsys, "--config", str(tmp_path / "kms-host.toml"), target)
        assert (code, err) == (0, "")
        assert out.startswith(f"ok: {target} activated Office Access 2019 (KMS V6)")
        monkeypatch.setenv("KMS_HOST_HOST_SCOPE", "office-2019")  # as `docker run -e` gives it
        code, out, err = await probe(capsys, "--json", target)
        assert (code, err) == (0, "")
        assert json.loads(out)["product"] == "Office Access 2019"
        monkeypatch.delenv("KMS_HOST_HOST_SCOPE")
        code, _, err = await probe(capsys, target)  # told nothing: it asks for Windows
        assert code == 1
        assert "HRESULT 0xC004F042" in err
        results = [(e["result"], e["cmid"]) for e in host.events("activation")]
        assert results == [("probe", str(PROBE_CMID))] * 2 + [("refused", str(PROBE_CMID))]


@pytest.mark.asyncio
async def test_product_names_a_catalog_product(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with run_host(tmp_path, OFFICE_2019) as host:
        target = f"127.0.0.1:{host.port}"
        code, out, _ = await probe(capsys, "--product", "Office Professional Plus 2019", target)
        assert code == 0
        assert "activated Office Professional Plus 2019 (KMS V6)" in out
        code, _, err = await probe(capsys, "--product", "W269N-WFGWX-YVC9B-4J6C9-T83GX", target)
        assert code == 1
        assert f"{target}: HRESULT 0xC004F042: the host does not serve this product" in err
        code, out, err = await probe(capsys, "--product", "Office", target)
        assert (code, out) == (2, "")
        assert "--product: " in err
        assert "products match 'Office'" in err
        code, _, err = await probe(capsys, "--product", "no such product", target)
        assert code == 2
        assert "no product matches" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[host]\nscope = ["office-2099"]\n')
    code, _, err = await probe(capsys, "--config", str(bad), "127.0.0.1:9")
    assert code == 2
    assert "config error at host.scope: unknown host-key group 'office-2099'" in err


def test_the_default_product_of_each_scope() -> None:
    catalog = load_catalog()
    assert probe_product(catalog, ["all"]).name == "Windows 10/11 Pro"
    assert probe_product(catalog, ["windows-server-2019"]).name == "Windows 10/11 Pro"
    assert probe_product(catalog, ["office-2019", "windows-7"]).name == "Office Access 2019"
    assert probe_product(catalog, ["Office-2010"]).name == "Office Access 2010"
    ltsc = probe_product(catalog, ["office-ltsc-2024"])  # its only product is marked uncertain
    assert ltsc.name.endswith("LTSC 2024")
    for group in catalog.host_key_groups:  # every group's product is one that group serves
        chosen = probe_product(catalog, [group.key])
        assert catalog.group_for(chosen.kms_id, chosen.application_id, {group.key}) is not None


@pytest.mark.asyncio
async def test_the_port_defaults_to_1688(capsys: pytest.CaptureFixture[str]) -> None:
    for target, shown in (("127.0.0.1", "127.0.0.1:1688"), ("[::1]", "[::1]:1688")):
        code, out, _ = await probe(capsys, "--json", "--timeout", "0.5", target)
        assert code in (0, 1)  # whatever listens there: not a usage error
        assert json.loads(out)["address"] == shown
    for argv in (["127.0.0.1:http"], ["127.0.0.1:0"], ["--timeout", "0", "h:1"]):
        with pytest.raises(SystemExit) as info:
            main(["probe", *argv])
        assert info.value.code == 2
