"""The host's identity is generated once, realistically, and kept (spec 6)."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from kms_host.config import HostConfig
from kms_host.errors import ConfigError, DataDirError
from kms_host.host.identity import IDENTITY_FILE, load_identity
from kms_host.policy.catalog_file import load_catalog
from protocol.kms.epid import parse_epid

CATALOG = load_catalog()
TODAY = date(2026, 11, 28)
FIXED = "06401-00206-271-298329-03-1033-9600.0000-0452014"  # from vlmcsd-custom vectors


def test_every_group_gets_a_realistic_epid(tmp_path: Path) -> None:
    identity = load_identity(
        tmp_path, catalog=CATALOG, host=HostConfig(), today=TODAY, rng=os.urandom
    )
    assert set(identity.epids) == {group.key for group in CATALOG.host_key_groups}
    for group in CATALOG.host_key_groups:
        epid = parse_epid(identity.epids[group.key])
        assert epid.group_id == group.epid_group_id
        assert group.min_key_id <= epid.key_id <= group.max_key_id
        assert (epid.platform_id, epid.build, epid.lcid) == (3612, 17763, 1033)
        assert min(group.release_date, TODAY) <= epid.activation_date <= TODAY
    assert len(identity.hwid) == 8


def test_the_identity_survives_a_restart(tmp_path: Path) -> None:
    first = load_identity(tmp_path, catalog=CATALOG, host=HostConfig(), today=TODAY, rng=os.urandom)
    second = load_identity(
        tmp_path, catalog=CATALOG, host=HostConfig(), today=TODAY, rng=os.urandom
    )
    assert (tmp_path / IDENTITY_FILE).exists()
    assert first == second


def test_configured_epid_and_hwid_win_but_are_not_stored(tmp_path: Path) -> None:
    host = replace(HostConfig(), epid={"windows-server-2019": FIXED}, hwid="0123456789ABCDEF")
    generated = load_identity(
        tmp_path, catalog=CATALOG, host=HostConfig(), today=TODAY, rng=os.urandom
    )
    fixed = load_identity(tmp_path, catalog=CATALOG, host=host, today=TODAY, rng=os.urandom)
    assert fixed.epids["windows-server-2019"] == FIXED
    assert fixed.hwid == bytes.fromhex("0123456789ABCDEF")
    assert fixed.epids["office-2019"] == generated.epids["office-2019"]
    again = load_identity(tmp_path, catalog=CATALOG, host=HostConfig(), today=TODAY, rng=os.urandom)
    assert again == generated  # removing the override brings the kept identity back


def test_a_malformed_configured_epid_is_a_config_error(tmp_path: Path) -> None:
    host = replace(HostConfig(), epid={"windows-server-2019": "not-an-epid"})
    with pytest.raises(ConfigError) as caught:
        load_identity(tmp_path, catalog=CATALOG, host=host, today=TODAY, rng=os.urandom)
    assert caught.value.key == "host.epid.windows-server-2019"


def test_a_foreign_identity_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).write_text('{"something": "else"}', encoding="utf-8")
    with pytest.raises(DataDirError, match="not a kms-host identity file; remove it"):
        load_identity(tmp_path, catalog=CATALOG, host=HostConfig(), today=TODAY, rng=os.urandom)
