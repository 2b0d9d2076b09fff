"""Counting as a genuine host counts (spec 7.2; kms-host-behaviour 2.1).

Per application: distinct CMIDs of the last 30 days including the requester, capped at twice
the largest threshold seen; repeated CMIDs do not raise it; expired ones drop out. With
``prefill = "none"`` the host starts truly empty.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from harness import RunningHost, make_request, run_host

EMPTY = '[counting]\nprefill = "none"\n'


async def counts_for(host: RunningHost, product: str, cmids: list[uuid.UUID]) -> list[int]:
    counts = []
    async with await host.client() as client:
        for cmid in cmids:
            result = await client.activate(make_request(product, cmid=cmid, when=host.clock.now()))
            assert result.response is not None, result
            counts.append(result.response.current_client_count)
    return counts


@pytest.mark.asyncio
async def test_thirty_distinct_clients_count_one_to_thirty(tmp_path: Path) -> None:
    async with run_host(tmp_path, EMPTY) as host:
        assert await counts_for(host, "win10pro", [uuid.uuid4() for _ in range(30)]) == list(
            range(1, 31)
        )


@pytest.mark.asyncio
async def test_a_repeated_cmid_does_not_move_the_count(tmp_path: Path) -> None:
    cmids = [uuid.uuid4() for _ in range(3)]
    async with run_host(tmp_path, EMPTY) as host:
        assert await counts_for(host, "win10pro", cmids + cmids[:2] + cmids) == [1, 2, 3] + [3] * 5


@pytest.mark.asyncio
async def test_windows_caps_at_fifty_and_office_counts_separately_up_to_ten(
    tmp_path: Path,
) -> None:
    async with run_host(tmp_path, EMPTY) as host:
        windows = await counts_for(host, "win10pro", [uuid.uuid4() for _ in range(60)])
        office = await counts_for(host, "o2019pp", [uuid.uuid4() for _ in range(12)])
        office2010 = await counts_for(host, "o2010pp", [uuid.uuid4() for _ in range(2)])
    assert windows == list(range(1, 51)) + [50] * 10
    assert office == [*list(range(1, 11)), 10, 10]
    assert office2010 == [1, 2]
    last_counts = host.events("counts")[-1]["counts"]
    assert last_counts == {"windows": 50, "office": 10, "office2010": 2}


@pytest.mark.asyncio
async def test_server_only_host_tops_out_at_ten(tmp_path: Path) -> None:
    # "With only server clients it tops out at 10 (2x5)" (kms-host-behaviour 2.1).
    async with run_host(tmp_path, EMPTY) as host:
        counts = await counts_for(host, "ws2019dc", [uuid.uuid4() for _ in range(12)])
    assert counts == [*list(range(1, 11)), 10, 10]


@pytest.mark.asyncio
async def test_clients_not_seen_for_thirty_days_stop_counting(tmp_path: Path) -> None:
    early = [uuid.uuid4() for _ in range(5)]
    async with run_host(tmp_path, EMPTY) as host:
        assert await counts_for(host, "win10pro", early) == [1, 2, 3, 4, 5]
        host.clock.advance(timedelta(days=20))
        # A renewal inside the window keeps the first client alive ...
        assert await counts_for(host, "win10pro", early[:1]) == [5]
        host.clock.advance(timedelta(days=11))
        # ... while the other four, last seen 31 days ago, have expired.
        assert await counts_for(host, "win10pro", [uuid.uuid4()]) == [2]


@pytest.mark.asyncio
async def test_prefill_threshold_makes_the_first_client_see_its_threshold(
    tmp_path: Path,
) -> None:
    async with run_host(tmp_path) as host:
        windows = await counts_for(host, "win10pro", [uuid.uuid4() for _ in range(3)])
        server = await counts_for(host, "ws2019dc", [uuid.uuid4()])
    assert windows == [25, 26, 27]
    assert server == [28]  # one Windows pool: 4 real clients + 24 synthetic


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[counting]\nmode = "saturated"\n', [50, 50]),
        ('[counting]\nmode = "fixed"\nfixed_count = 7\n', [7, 7]),
    ],
    ids=["saturated", "fixed"],
)
async def test_other_counting_modes(tmp_path: Path, toml: str, expected: list[int]) -> None:
    async with run_host(tmp_path, toml) as host:
        assert await counts_for(host, "win10pro", [uuid.uuid4(), uuid.uuid4()]) == expected
