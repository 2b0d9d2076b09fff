"""Real clients (our protocol/ client side over real TCP) activate against a real daemon.

Issue 3, "Done when": every protocol version over NDR32 and NDR64, with and without BTFN,
several calls on one connection and one connection per call, for a Windows client, a Windows
Server, Office 2016, Office 2019 and Office LTSC 2021; unsupported versions get 0x8007000D.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from pathlib import Path

import pytest
from harness import make_request, run_host

from kms_host.storage import open_store
from protocol.kms import ProtocolVersion, build_request
from protocol.rpc import ResponseReceived, RpcClientConnection

VERSIONS = list(ProtocolVersion)
COMBOS = list(itertools.product(VERSIONS, (False, True), (False, True)))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("version", "ndr64", "btfn"),
    COMBOS,
    ids=[
        f"v{v.value}-{'ndr64' if n else 'ndr32'}-{'btfn' if b else 'nobtfn'}" for v, n, b in COMBOS
    ],
)
async def test_every_version_and_syntax_activates(
    tmp_path: Path, version: ProtocolVersion, ndr64: bool, btfn: bool
) -> None:
    async with run_host(tmp_path) as host, await host.client(ndr64=ndr64, btfn=btfn) as client:
        # Two calls on one association: the second one travels in NDR64 when negotiated.
        first = await client.activate(make_request(version=version))
        second = await client.activate(make_request(version=version))
    for result in (first, second):
        assert result.hresult == 0
        assert result.response is not None
        assert result.response.version is version
        assert result.response.current_client_count >= 25
        assert (result.hwid is not None) == (version is ProtocolVersion.V6)
    assert first.response
    assert second.response
    assert first.response.epid == second.response.epid  # a genuine host never changes its ePID
    ndr_used = [e["ndr"] for e in host.events("activation")]
    assert ndr_used == (["ndr32", "ndr64"] if ndr64 else ["ndr32", "ndr32"])


@pytest.mark.asyncio
@pytest.mark.parametrize("product", ["win10pro", "ws2019dc", "o2016pp", "o2019pp", "o2021pp"])
async def test_products_activate_with_their_threshold(tmp_path: Path, product: str) -> None:
    async with run_host(tmp_path) as host, await host.client() as client:
        result = await client.activate(make_request(product))
    assert result.hresult == 0
    assert result.response is not None
    threshold = 25 if product == "win10pro" else 5
    # prefill = "threshold" (default): the first real client sees exactly its threshold.
    assert result.response.current_client_count == threshold
    (event,) = host.events("activation")
    assert event["result"] == "activated"
    assert event["count"] == threshold


@pytest.mark.asyncio
async def test_one_connection_per_call_and_many_calls_per_connection(tmp_path: Path) -> None:
    cmids = [uuid.uuid4() for _ in range(6)]
    async with run_host(tmp_path, '[counting]\nprefill = "none"\n') as host:
        for cmid in cmids[:3]:
            async with await host.client() as client:
                result = await client.activate(make_request(cmid=cmid))
                assert result.hresult == 0
        async with await host.client() as client:
            counts = []
            for cmid in cmids[3:]:
                result = await client.activate(make_request(cmid=cmid))
                assert result.response is not None
                counts.append(result.response.current_client_count)
    assert counts == [4, 5, 6]


async def _raw_call(port: int, message: bytes) -> ResponseReceived:
    """Send a hand-made KMS message through a real association; return the RPC response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rpc = RpcClientConnection(ndr64=False, btfn=True)
    rpc.bind()
    requested = False
    try:
        while True:
            writer.write(rpc.data_to_send())
            await writer.drain()
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data, "host closed the connection"
            for event in rpc.receive_data(data):
                if isinstance(event, ResponseReceived):
                    return event
            if rpc.ready and not requested:
                rpc.request(message)
                requested = True
    finally:
        writer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("version_word", ["00000700", "01000600", "00000300", "01000400"])
async def test_unsupported_versions_get_invalid_data(tmp_path: Path, version_word: str) -> None:
    # A valid V6 request whose version word says 7.0, 6.1, 3.0 or 4.1 (spec 4.1, 10.12).
    wire = build_request(make_request(), rng=bytes).wire
    message = bytes.fromhex(version_word) + wire[4:]
    async with run_host(tmp_path) as host:
        response = await _raw_call(host.port, message)
    assert response.hresult == 0x8007000D
    assert response.kms_message is None
    (event,) = host.events("activation")
    assert event["hresult"] == "0x8007000D"
    assert event["result"] == "malformed"
    # A genuine host counts it among "failed requests received" (slmgr /dlv), under no status.
    store = await open_store(host.data_dir)
    try:
        stats = await store.stats()
    finally:
        await store.close()
    assert (stats.total, stats.failed) == (1, 1)
    assert set(stats.by_license_status.values()) == {0}
