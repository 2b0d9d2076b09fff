"""ePID and HwId (spec 6.1, 6.4, 6.7) against independent oracles.

Expected values come from the captured vlmcsd/py-kms conversations in ``tests/vectors`` (ePIDs
and HwIds that those servers sent), from the specification's text, and from hand-computed days
of the year; never from this module's own output.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import EpidError
from protocol.kms.epid import (
    LCIDS,
    MAX_EPID_LENGTH,
    Epid,
    format_hwid,
    generate_epid,
    generate_hwid,
    parse_epid,
    parse_hwid,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _values(node: object, key: str) -> Iterator[str]:
    """Every string stored under ``key`` anywhere in a decoded JSON document."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key and isinstance(value, str):
                yield value
            else:
                yield from _values(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from _values(item, key)


def _captured(key: str) -> list[str]:
    found: set[str] = set()
    for path in sorted(VECTORS.glob("*-conversations.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                found.update(_values(json.loads(line), key))
    return sorted(found)


CAPTURED_EPIDS = _captured("epid")
CAPTURED_HWIDS = _captured("hwid")


def _fixed(value: int) -> Callable[[int], bytes]:
    """An rng that always returns ``value`` as big-endian bytes."""
    return lambda n: value.to_bytes(n, "big")


def test_vectors_hold_epids_and_hwids() -> None:
    assert len(CAPTURED_EPIDS) >= 5
    assert "3A1C049600B60076" in CAPTURED_HWIDS


@pytest.mark.parametrize("text", CAPTURED_EPIDS)
def test_captured_epids_parse_and_render_identically(text: str) -> None:
    assert str(parse_epid(text)) == text


def test_fields_of_a_vlmcsd_epid() -> None:
    epid = parse_epid("03612-00206-556-123727-03-1033-17763.0000-2972018")
    # Day 297 of 2018 (not a leap year): 273 days to the end of September, then 24 October.
    assert epid == Epid(
        platform_id=3612,
        group_id=206,
        key_id=556_123_727,
        lcid=1033,
        build=17763,
        activation_date=date(2018, 10, 24),
    )


def test_fields_of_a_windows_81_host_epid() -> None:
    epid = parse_epid("06401-00206-271-298329-03-1033-9600.0000-0452014")
    assert (epid.platform_id, epid.build, epid.key_id) == (6401, 9600, 271_298_329)
    assert epid.activation_date == date(2014, 2, 14)  # day 45 = 31 + 14


@pytest.mark.parametrize(
    "text",
    [
        # Spec 6.1's example (49 characters, PIDSize 100) and 6.3's vlmcsd defaults.
        "03612-00206-556-123456-03-1033-17763.0000-2772019",
        "06401-00206-560-594696-03-1033-9600.0000-2962018",
        # Fixed ePIDs in KmsDataBase.xml: a 9200 host, and the China Government group.
        "05426-00206-586-025264-03-1033-9200.0000-2602021",
        "06401-03858-320-801028-03-1033-9600.0000-2802018",
        # Day 366 exists in leap years only.
        "03612-00206-556-123727-03-1033-17763.0000-3662024",
    ],
)
def test_documented_epids_round_trip(text: str) -> None:
    assert str(parse_epid(text)) == text


def test_spec_example_length_matches_pid_size() -> None:
    text = "03612-00206-556-123456-03-1033-17763.0000-2772019"
    assert 2 * (len(str(parse_epid(text))) + 1) == 100  # spec 6.1: PIDSize 100


@pytest.mark.parametrize(
    "text",
    [
        "",
        "03612-00206-556-123727-02-1033-17763.0000-2972018",  # channel 02, not volume
        "03612-00206-556-123727-03-1033-17763.0000-0002018",  # day 000
        "03612-00206-556-123727-03-1033-17763.0000-3662018",  # day 366 in a non-leap year
        "03612-00206-556-123727-03-1033-17763.0000-9992018",
        "03612-00206-556-123727-03-01033-17763.0000-2972018",  # zero-padded LCID
        "03612-00206-556-123727-03-1033-017763.0000-2972018",  # zero-padded build
        "03612-00206-556-123727-03-0-17763.0000-2972018",  # LCID 0
        "03612-00206-556-123727-03-99999-17763.0000-2972018",  # LCID above 16 bits
        "3612-00206-556-123727-03-1033-17763.0000-2972018",  # platform id not 5 digits
        "03612-00206-556123727-03-1033-17763.0000-2972018",  # key id not split
        "03612-00206-556-123727-03-1033-17763.0001-2972018",
        "03612-00206-556-123727-03-1033-17763-2972018",
        "03612-00206-556-123727-03-1033-17763.0000-29718",  # two-digit year
        "03612-00206-556-123727-03-1033-17763.0000-2970999",  # three-digit year
        "03612-00206-556-123727-03-1033-17763.0000-2972018\n",
        " 03612-00206-556-123727-03-1033-17763.0000-2972018",
        "03612-00206-556-123727-03-1033-17763.0000-\u0662\u0669\u00372018",  # Arabic digits
        "03612-00206-556-123727-03-1033-17763.0000-2972018" + "0" * 14,  # 64 characters
    ],
)
def test_malformed_epids_raise_epid_error(text: str) -> None:
    with pytest.raises(EpidError):
        parse_epid(text)


def test_over_long_text_is_refused_by_length() -> None:
    with pytest.raises(EpidError, match="63"):
        parse_epid("0" * (MAX_EPID_LENGTH + 1))


_NEAR_EPIDS = st.from_regex(
    r"\d{5}-\d{5}-\d{3}-\d{6}-\d{2}-\d{1,6}-\d{1,6}\.0000-\d{7}", fullmatch=True
)


@given(st.text(max_size=80) | _NEAR_EPIDS)
def test_parse_raises_nothing_but_epid_error(text: str) -> None:
    try:
        epid = parse_epid(text)
    except EpidError:
        return
    assert str(epid) == text


@given(
    platform_id=st.integers(0, 99_999),
    group_id=st.integers(0, 99_999),
    key_id=st.integers(0, 999_999_999),
    lcid=st.integers(1, 0xFFFF),
    build=st.integers(1, 0xFFFF),
    day=st.dates(date(1000, 1, 1), date(9999, 12, 31)),
)
def test_every_epid_round_trips(
    platform_id: int, group_id: int, key_id: int, lcid: int, build: int, day: date
) -> None:
    epid = Epid(platform_id, group_id, key_id, lcid, build, day)
    text = str(epid)
    assert len(text) <= MAX_EPID_LENGTH
    assert text.isascii()
    assert parse_epid(text) == epid


@pytest.mark.parametrize(
    "fields",
    [
        {"platform_id": 100_000},
        {"group_id": -1},
        {"key_id": 1_000_000_000},
        {"lcid": 0},
        {"build": 0x10000},
        {"activation_date": date(999, 12, 31)},
    ],
)
def test_epid_fields_must_fit_their_width(fields: dict[str, object]) -> None:
    values: dict[str, object] = {
        "platform_id": 3612,
        "group_id": 206,
        "key_id": 1,
        "lcid": 1033,
        "build": 17763,
        "activation_date": date(2020, 1, 1),
    }
    with pytest.raises(EpidError):
        Epid(**{**values, **fields})  # type: ignore[arg-type]


def _generate(
    rng: Callable[[int], bytes],
    *,
    earliest: date,
    today: date,
    min_key_id: int = 551_000_000,
    max_key_id: int = 570_999_999,
) -> Epid:
    return generate_epid(
        platform_id=3612,
        group_id=206,
        min_key_id=min_key_id,
        max_key_id=max_key_id,
        lcid=1033,
        build=17763,
        earliest=earliest,
        today=today,
        rng=rng,
    )


def test_generate_with_zero_rng_takes_the_lower_bounds_and_prints_day_001() -> None:
    epid = _generate(_fixed(0), earliest=date(2024, 1, 1), today=date(2024, 12, 31))
    assert str(epid) == "03612-00206-551-000000-03-1033-17763.0000-0012024"


def test_generate_with_a_collapsed_range_is_exact() -> None:
    epid = _generate(
        _fixed(2**64 - 1),
        earliest=date(2024, 12, 31),
        today=date(2024, 12, 31),
        min_key_id=12_345_678,
        max_key_id=12_345_678,
    )
    assert str(epid).endswith("-012-345678-03-1033-17763.0000-3662024")


@pytest.mark.parametrize("seed", range(50))
def test_generate_stays_in_range(seed: int) -> None:
    earliest, today = date(2018, 10, 2), date(2026, 11, 28)
    epid = _generate(random.Random(seed).randbytes, earliest=earliest, today=today)
    assert 551_000_000 <= epid.key_id <= 570_999_999
    assert earliest <= epid.activation_date <= today
    assert parse_epid(str(epid)) == epid


def test_generate_reaches_both_ends_of_the_key_range() -> None:
    span = 570_999_999 - 551_000_000 + 1
    top = _generate(_fixed(span - 1), earliest=date(2020, 1, 1), today=date(2020, 1, 1))
    assert top.key_id == 570_999_999


@pytest.mark.parametrize(
    ("min_key_id", "max_key_id", "earliest", "today"),
    [
        (10, 9, date(2020, 1, 1), date(2020, 1, 1)),
        (0, 9, date(2020, 1, 2), date(2020, 1, 1)),
    ],
)
def test_generate_refuses_empty_ranges(
    min_key_id: int, max_key_id: int, earliest: date, today: date
) -> None:
    with pytest.raises(EpidError):
        _generate(
            _fixed(0), earliest=earliest, today=today, min_key_id=min_key_id, max_key_id=max_key_id
        )


def test_lcid_list_is_spec_64() -> None:
    assert len(LCIDS) == 158  # the count of spec 6.4's list, which has no duplicates
    assert {1033, 1031, 2052, 1041, 3082, 1077, 1078} <= LCIDS


def test_vlmcsd_default_hwid() -> None:
    # Spec 6.7: vlmcsd's default HwId bytes 3A 1C 04 96 00 B6 00 76, written in byte order.
    assert parse_hwid("3A1C049600B60076") == bytes([0x3A, 0x1C, 0x04, 0x96, 0x00, 0xB6, 0x00, 0x76])


@pytest.mark.parametrize("text", CAPTURED_HWIDS)
def test_captured_hwids_round_trip(text: str) -> None:
    assert format_hwid(parse_hwid(text)) == text


def test_hwid_parsing_accepts_lower_case() -> None:
    assert format_hwid(parse_hwid("364f463a8863d35f")) == "364F463A8863D35F"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "3A1C049600B600",
        "3A1C049600B6007600",
        "3A 1C 04 96 00 B6 00 76",
        "3A1C049600B6007G",
        "\uff13A1C049600B60076",
    ],
)
def test_malformed_hwids_raise_epid_error(text: str) -> None:
    with pytest.raises(EpidError):
        parse_hwid(text)


def test_hwid_must_be_eight_bytes() -> None:
    with pytest.raises(EpidError):
        format_hwid(b"\x00" * 7)
    with pytest.raises(EpidError):
        generate_hwid(lambda n: b"\x00" * (n - 1))


def test_generate_hwid_uses_eight_rng_bytes() -> None:
    assert generate_hwid(lambda n: bytes(range(1, n + 1))) == bytes(range(1, 9))
