"""The connection shell over real TCP: pipelined calls, half-close, drain of calls in flight.

These pin the rules the ``asyncio.Protocol`` session keeps (kms_host/host/session.py): calls on
one connection are answered one at a time and in order, even when several arrive in one
segment; a client that half-closes after its request still gets the answer; at shutdown a
call in flight is answered within ``shutdown_grace_s`` and its connection then closes, and
one that outlasts the grace is cut off.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from harness import make_request, run_host

from kms_host.client.strict import ClientError, KmsClient
from protocol.kms import PendingRequest, build_request, open_response
from protocol.rpc import ResponseReceived, RpcClientConnection

pytestmark = pytest.mark.asyncio


async def bound_connection(
    port: int,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, RpcClientConnection]:
    """A raw connection with NDR32 bound (no alter_context needed), ready for calls."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rpc = RpcClientConnection(ndr64=False, btfn=False)
    rpc.bind()
    writer.write(rpc.data_to_send())
    while not rpc.ready:
        rpc.receive_data(await asyncio.wait_for(reader.read(65536), 5))
    return reader, writer, rpc


async def responses(
    reader: asyncio.StreamReader, rpc: RpcClientConnection, count: int
) -> list[ResponseReceived]:
    """Read until ``count`` responses arrived (each within 5 s)."""
    seen: list[ResponseReceived] = []
    while len(seen) < count:
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data, f"the host closed after {len(seen)} of {count} responses"
        seen += [e for e in rpc.receive_data(data) if isinstance(e, ResponseReceived)]
    return seen


def verified(event: ResponseReceived, pending: PendingRequest) -> int:
    assert event.hresult == 0
    assert event.kms_message is not None
    return open_response(event.kms_message, pending).response.current_client_count


async def test_calls_sent_in_one_segment_are_answered_in_order(tmp_path: Path) -> None:
    pendings = [build_request(make_request(), rng=os.urandom) for _ in range(3)]
    async with run_host(tmp_path) as host:
        reader, writer, rpc = await bound_connection(host.port)
        call_ids = [rpc.request(p.wire) for p in pendings]
        writer.write(rpc.data_to_send())  # three requests, one write
        answered = await responses(reader, rpc, 3)
        writer.close()
    assert [e.call_id for e in answered] == call_ids
    # Windows prefill makes the first new client count 25 (threshold prefill); each
    # further distinct client adds one: they were recorded one after another, in order.
    assert [verified(e, p) for e, p in zip(answered, pendings, strict=True)] == [25, 26, 27]
    assert len(host.events("activation")) == 3


async def test_a_call_arriving_during_another_waits_its_turn(tmp_path: Path) -> None:
    first, second = (build_request(make_request(), rng=os.urandom) for _ in range(2))
    async with run_host(tmp_path, "[[scenario]]\ndelay_ms = 300\n") as host:
        reader, writer, rpc = await bound_connection(host.port)
        loop = asyncio.get_running_loop()
        rpc.request(first.wire)
        writer.write(rpc.data_to_send())
        sent = loop.time()
        await asyncio.sleep(0.1)  # the first call is in the service's delay now
        rpc.request(second.wire)
        writer.write(rpc.data_to_send())
        answered = await responses(reader, rpc, 2)
        elapsed = loop.time() - sent
        writer.close()
    assert [verified(e, p) for e, p in zip(answered, (first, second), strict=True)] == [25, 26]
    # Served one after the other: 0.3 s + 0.3 s. Overlapping, both would be done by 0.4 s.
    assert elapsed >= 0.55


async def test_a_half_closed_client_still_gets_its_answer(tmp_path: Path) -> None:
    pending = build_request(make_request(), rng=os.urandom)
    async with run_host(tmp_path, "[[scenario]]\ndelay_ms = 200\n") as host:
        reader, writer, rpc = await bound_connection(host.port)
        rpc.request(pending.wire)
        writer.write(rpc.data_to_send())
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.shutdown(socket.SHUT_WR)  # like `nc -N`: the request, then EOF
        [answer] = await responses(reader, rpc, 1)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then the host closes
        writer.close()
    assert verified(answer, pending) == 25


async def test_a_call_in_flight_at_shutdown_is_answered_then_closed(tmp_path: Path) -> None:
    toml = "[server]\nshutdown_grace_s = 5\n[[scenario]]\ndelay_ms = 500\n"
    async with run_host(tmp_path, toml) as host:
        client = await KmsClient.connect("127.0.0.1", host.port)
        call = asyncio.create_task(client.activate(make_request()))
        await asyncio.sleep(0.2)  # the call is in the service's delay when the host stops
        loop = asyncio.get_running_loop()
        stopping = loop.time()
    stopped_after = loop.time() - stopping
    result = await call
    await client.close()
    assert result.hresult == 0
    # It closed right after answering, not at the end of the grace.
    assert stopped_after < 4
    assert not host.events("shutdown_cancelled_connections")
    assert [e["result"] for e in host.events("activation")] == ["activated"]


async def test_a_call_outlasting_the_grace_is_cut_off(tmp_path: Path) -> None:
    toml = "[server]\nshutdown_grace_s = 0.2\n[[scenario]]\ndelay_ms = 3000\n"
    async with run_host(tmp_path, toml) as host:
        client = await KmsClient.connect("127.0.0.1", host.port)
        call = asyncio.create_task(client.activate(make_request()))
        await asyncio.sleep(0.2)
    with pytest.raises(ClientError) as cut:
        await call
    await client.close()
    assert cut.value.stage == "closed"
    [event] = host.events("shutdown_cancelled_connections")
    assert event["count"] == 1
    assert not host.events("activation")  # cancelled in its delay: nothing recorded
