"""Scenario rules without a daemon: parsing, matching, ``every`` counters, ``corrupt``."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from kms_host.config import ConfigOverrides, load_config
from kms_host.errors import ConfigError
from kms_host.policy.scenario import ScenarioBook, Subject, corrupt, parse_scenarios
from protocol.errors import ResponseVerificationError
from protocol.kms import (
    KmsRequest,
    KmsResponse,
    ProtocolVersion,
    build_request,
    open_request,
    open_response,
    seal_response,
)

PROBE = uuid.UUID("00000000-0000-4000-8000-000000001688")
WIN_PRO = uuid.UUID("2de67392-b7a7-462a-b1ca-108dd189f588")
WINDOWS = uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f")
KMS_WIN10 = uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148")


def subject(**changes: object) -> Subject:
    fields: dict[str, object] = {
        "cmid": uuid.UUID(int=1),
        "machine_name": "Lab-PC-07.lab.example",
        "app": "windows",
        "application_id": WINDOWS,
        "kms_id": KMS_WIN10,
        "sku": WIN_PRO,
        "peer": "10.1.2.3:50000",
        "protocol": 6,
        "probe": False,
    }
    fields.update(changes)
    return Subject(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"hresult": "0xZZ"}, "scenario[1].hresult"),
        ({"hresult": 0}, "scenario[1].hresult"),
        ({"sku": "not-a-guid", "close": True}, "scenario[1].sku"),
        ({"peer": "10.0.0.0/33", "close": True}, "scenario[1].peer"),
        ({"protocol": 7, "close": True}, "scenario[1].protocol"),
        ({"protocol": True, "close": True}, "scenario[1].protocol"),
        ({"app": "linux", "close": True}, "scenario[1].app"),
        ({"every": 0, "close": True}, "scenario[1].every"),
        ({"delay_ms": -1}, "scenario[1].delay_ms"),
        ({"colour": "red", "close": True}, "scenario[1].colour"),
        ({"close": True, "hresult": "0xC004F042"}, "scenario[1]"),
        ({"rpc_fault": 1, "count": 3}, "scenario[1]"),
        ({"sku": str(WIN_PRO), "every": 2}, "scenario[1]"),  # no action
        ({"close": False}, "scenario[1]"),
    ],
)
def test_invalid_rules_name_their_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenarios([{"close": True}, table])
    assert caught.value.key == key


def test_the_config_file_carries_its_rules_and_rejects_a_table_form(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_text(f'[[scenario]]\nsku = "{WIN_PRO}"\nhresult = "0xC004F042"\n')
    config = load_config(path, env={}, overrides=ConfigOverrides())
    (rule,) = config.scenario
    assert (rule.sku, rule.hresult, rule.actions) == (
        WIN_PRO,
        0xC004F042,
        {"hresult": "0xC004F042"},
    )
    assert config.source == path
    path.write_text("[scenario]\nclose = true\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={}, overrides=ConfigOverrides())
    assert caught.value.key == "scenario"
    with pytest.raises(ConfigError):
        load_config(None, env={"KMS_HOST_SCENARIO_CLOSE": "true"}, overrides=ConfigOverrides())


@pytest.mark.parametrize(
    ("table", "matches"),
    [
        ({"cmid": str(uuid.UUID(int=1))}, True),
        ({"cmid": str(uuid.UUID(int=2))}, False),
        ({"machine_name": "lab-pc-*"}, True),  # case-insensitive, like Windows names
        ({"machine_name": "lab-pc-?"}, False),
        ({"app": "windows"}, True),
        ({"app": str(WINDOWS)}, True),
        ({"app": "office"}, False),
        ({"kms_id": str(KMS_WIN10)}, True),
        ({"sku": str(uuid.UUID(int=9))}, False),
        ({"peer": "10.0.0.0/8"}, True),
        ({"peer": "192.168.0.0/16"}, False),
        ({"peer": "::/0"}, False),
        ({"protocol": 6}, True),
        ({"protocol": 4}, False),
        ({"protocol": 6, "machine_name": "other*"}, False),  # every key must hold
    ],
)
def test_match_keys(table: dict[str, object], matches: bool) -> None:
    book = ScenarioBook(parse_scenarios([{**table, "count": 3}]))
    assert (book.select(subject()) is not None) is matches


def test_first_match_wins_and_every_counts_its_own_matches() -> None:
    book = ScenarioBook(
        parse_scenarios(
            [
                {"machine_name": "flaky*", "close": True, "every": 3},
                {"count": 7},
            ]
        )
    )
    flaky = [book.select(subject(machine_name="flaky-1")) for _ in range(6)]
    assert [rule.index if rule else None for rule in flaky] == [None, None, 0, None, None, 0]
    other = book.select(subject())
    assert other is not None
    assert other.index == 1
    book.install(book.rules)  # reinstalling restarts the counters
    assert book.select(subject(machine_name="flaky-1")) is None


def test_the_probe_is_matched_only_by_its_own_cmid() -> None:
    rules = parse_scenarios([{"close": True}, {"cmid": str(PROBE), "count": 1}])
    book = ScenarioBook(rules)
    probe = book.select(subject(cmid=PROBE, probe=True))
    assert probe is not None
    assert probe.index == 1
    assert ScenarioBook(rules[:1]).select(subject(cmid=PROBE, probe=True)) is None


def request(version: ProtocolVersion) -> KmsRequest:
    return KmsRequest(
        version=version,
        is_client_vm=0,
        license_status=2,
        grace_time_min=43200,
        application_id=WINDOWS,
        sku_id=WIN_PRO,
        kms_counted_id=KMS_WIN10,
        client_machine_id=uuid.uuid4(),
        required_client_count=25,
        request_time=133_000_000_000_000_000,
        previous_client_machine_id=uuid.UUID(int=0),
        machine_name="pc",
    )


@pytest.mark.parametrize(
    ("version", "check"),
    [(ProtocolVersion.V4, "mac"), (ProtocolVersion.V5, "hash"), (ProtocolVersion.V6, "hmac")],
)
@pytest.mark.parametrize("epid_length", [20, 49, 50, 57, 63])
def test_corrupt_fails_exactly_the_integrity_check(
    version: ProtocolVersion, check: str, epid_length: int
) -> None:
    pending = build_request(request(version), rng=os.urandom)
    opened = open_request(pending.wire)
    epid = "06401-00206-" + "1" * (epid_length - 12)
    response = KmsResponse(
        version, epid, opened.request.client_machine_id, opened.request.request_time, 25, 120, 10080
    )
    sealed = seal_response(opened, response, hwid=bytes(8), rng=os.urandom)
    assert open_response(sealed, pending).response == response
    broken = corrupt(sealed, version, epid)
    assert len(broken) == len(sealed)
    assert sum(a != b for a, b in zip(broken, sealed, strict=True)) == 1
    with pytest.raises(ResponseVerificationError) as caught:
        open_response(broken, pending)
    assert caught.value.check == check
