"""Per-peer limits on loopback, the peers being 127.0.0.x source addresses.

The connection cap and the connection rate close a peer's connection at accept, before a
byte is read; the request rate answers the call with the RPC fault nca_s_server_too_busy
(C706 appendix E: 0x1C010014, flags DID_NOT_EXECUTE) without running it, and the connection
stays up. Other peers are untouched throughout, every refusal is counted in
``kms_host_peer_limited_total{limit}`` and logged once per interval.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from reliability_host import bound, closed_by_host, connect, fds, host, metric, request, settle_fds

from kms_host.client.strict import ClientError, KmsClient
from kms_host.storage import open_store

NCA_S_SERVER_TOO_BUSY = 0x1C010014


@pytest.mark.asyncio
async def test_per_peer_connection_limits_close_at_accept_and_spare_other_peers(
    tmp_path: Path,
) -> None:
    toml = (
        "max_connections_per_peer = 3\n"
        "peer_connection_rate_per_s = 0.01\n"
        "peer_connection_burst = 6\n"
    )
    async with host(tmp_path, toml) as kms:
        base_fds = fds(kms.pid)

        def held_then_refused() -> list[bool]:
            held = [connect("127.0.0.2", kms.port) for _ in range(3)]
            try:
                results = [bound(sock) for sock in held]
                with connect("127.0.0.2", kms.port) as fourth:
                    results.append(closed_by_host(fourth))
                held.pop().close()
                time.sleep(0.5)  # the host sees the close
                with connect("127.0.0.2", kms.port) as again:
                    results.append(bound(again))
                return results
            finally:
                for sock in held:
                    sock.close()

        def rate() -> list[bool]:
            results = []
            for _ in range(7):
                with connect("127.0.0.3", kms.port) as sock:
                    results.append(bound(sock))
                time.sleep(0.1)
            return results

        assert await asyncio.to_thread(held_then_refused) == [True, True, True, True, True]
        assert await asyncio.to_thread(rate) == [True] * 6 + [False]
        await kms.activate("127.0.0.4")  # another peer is untouched
        await settle_fds(kms.pid, base_fds)
        scraped = await asyncio.to_thread(kms.scrape)
    limited = "kms_host_peer_limited_total"
    assert metric(scraped, limited, limit="max_connections_per_peer") == 1
    assert metric(scraped, limited, limit="peer_connection_rate") == 1
    reasons = {(e["reason"], e["peer"]) for e in kms.daemon.named("connection_refused")}
    assert reasons == {
        ("max_connections_per_peer", "127.0.0.2"),
        ("peer_connection_rate", "127.0.0.3"),
    }


@pytest.mark.asyncio
async def test_per_peer_request_rate_faults_server_too_busy_and_runs_nothing(
    tmp_path: Path,
) -> None:
    toml = "peer_request_rate_per_s = 0.01\npeer_request_burst = 3\n"
    async with host(tmp_path, toml) as kms:
        statuses: list[tuple[str, int | None]] = []
        async with await KmsClient.connect("127.0.0.1", kms.port, local_host="127.0.0.2") as one:
            for _ in range(5):
                try:
                    statuses.append(("answer", (await one.activate(request(uuid.uuid4()))).hresult))
                except ClientError as exc:  # stage "call": a fault, on a connection still up
                    statuses.append((exc.stage, exc.status))
        await kms.activate("127.0.0.3")
        scraped = await asyncio.to_thread(kms.scrape)
    assert statuses == [("answer", 0)] * 3 + [("call", NCA_S_SERVER_TOO_BUSY)] * 2
    assert metric(scraped, "kms_host_peer_limited_total", limit="peer_request_rate") == 2
    (line,) = kms.daemon.named("request_refused")
    assert (line["reason"], line["peer"], line["suppressed"]) == (
        "peer_request_rate",
        "127.0.0.2",
        0,
    )
    store = await open_store(tmp_path / "data")
    try:
        assert len(await store.clients(app="windows")) == 4  # the faulted calls never ran
    finally:
        await store.close()
