"""The loop batcher, with the host's two real works: opening requests and sealing replies.

Each reply is checked by the client side of the protocol (``open_response``, every check of
spec 5.7), not against bytes the batch built; each opened request against what the client
sent. Whether items went through one batch shows in when the work ran: before the first
caller resumed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections.abc import Callable

import pytest

from kms_host.batching import LoopBatcher
from protocol.errors import KmsError
from protocol.kms import (
    KmsRequest,
    KmsResponse,
    OpenedRequest,
    PendingRequest,
    ProtocolVersion,
    build_request,
    open_request,
    open_requests,
    open_response,
    seal_responses,
)

pytestmark = pytest.mark.asyncio

HWID = bytes.fromhex("3a1c049600b60076")
Reply = tuple[OpenedRequest, KmsResponse]


def sealer(rng: Callable[[int], bytes]) -> LoopBatcher[Reply, bytes]:
    """The batcher the host seals with (kms_host.host.service)."""
    return LoopBatcher[Reply, bytes](functools.partial(seal_responses, hwid=HWID, rng=rng))


def exchange(version: ProtocolVersion, n: int) -> tuple[PendingRequest, OpenedRequest, KmsResponse]:
    request = KmsRequest(
        version=version,
        is_client_vm=0,
        license_status=2,
        grace_time_min=43200,
        application_id=uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f"),
        sku_id=uuid.UUID("2de67392-b7a7-462a-b1ca-108dd189f588"),
        kms_counted_id=uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148"),
        client_machine_id=uuid.uuid4(),
        required_client_count=25,
        request_time=133_000_000_000_000_000 + n,
        previous_client_machine_id=uuid.UUID(int=0),
        machine_name=f"pc{n}",
    )
    pending = build_request(request, rng=os.urandom)
    opened = open_request(pending.wire)
    response = KmsResponse(
        version,
        "03612-00206-566-260035-03-1033-17763.0000-2652023",
        request.client_machine_id,
        request.request_time,
        25 + n,
        120,
        10080,
    )
    return pending, opened, response


class Draws:
    """``os.urandom`` that notes how many callers had resumed at each draw."""

    def __init__(self) -> None:
        self.resumed = 0
        self.at_draw: list[int] = []

    def __call__(self, size: int) -> bytes:
        self.at_draw.append(self.resumed)
        return os.urandom(size)


async def test_replies_of_one_iteration_are_sealed_together_and_verify() -> None:
    draws = Draws()
    batch = sealer(draws)
    versions = [ProtocolVersion.V6] * 40 + [ProtocolVersion.V5] * 3 + [ProtocolVersion.V4] * 2
    exchanges = [exchange(version, n) for n, version in enumerate(versions)]

    async def caller(opened: OpenedRequest, response: KmsResponse) -> bytes:
        message = await batch.run((opened, response))
        draws.resumed += 1
        return message

    messages = await asyncio.gather(*(caller(o, r) for _, o, r in exchanges))
    for (pending, _, response), message in zip(exchanges, messages, strict=True):
        verified = open_response(message, pending)
        assert verified.response == response
        if response.version == ProtocolVersion.V6:
            assert verified.hwid == HWID
    assert len(draws.at_draw) == 2 * 40 + 3  # R and S per V6 reply, R per V5 reply
    assert set(draws.at_draw) == {0}  # every draw before any caller resumed: one batch


async def test_later_replies_make_a_new_batch() -> None:
    batch = sealer(os.urandom)
    for n in range(3):
        pending, opened, response = exchange(ProtocolVersion.V6, n)
        assert open_response(await batch.run((opened, response)), pending).response == response


async def test_a_cancelled_caller_is_left_out() -> None:
    draws = Draws()
    batch = sealer(draws)
    exchanges = [exchange(ProtocolVersion.V6, n) for n in range(3)]
    tasks = [asyncio.create_task(batch.run((o, r))) for _, o, r in exchanges]
    await asyncio.sleep(0)  # all three are queued; the flush is scheduled after them
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    for index in (0, 2):
        message = done[index]
        assert isinstance(message, bytes)
        assert open_response(message, exchanges[index][0]).response == exchanges[index][2]
    assert len(draws.at_draw) == 4  # two replies sealed, not three


def short_rng(size: int) -> bytes:
    return bytes(size - 1)


async def test_an_error_reaches_every_waiting_caller() -> None:
    batch = sealer(short_rng)
    exchanges = [exchange(ProtocolVersion.V6, n) for n in range(2)]
    results = await asyncio.gather(
        *(batch.run((o, r)) for _, o, r in exchanges), return_exceptions=True
    )
    assert all(isinstance(result, ValueError) for result in results)
    assert "rng returned 15 bytes" in str(results[0])


async def test_requests_of_one_iteration_are_opened_together() -> None:
    batches: list[int] = []

    def work(messages: list[bytes]) -> list[OpenedRequest | KmsError]:
        batches.append(len(messages))
        return open_requests(messages)

    opener = LoopBatcher[bytes, OpenedRequest](work)
    exchanges = [exchange(ProtocolVersion.V6, n) for n in range(20)]
    exchanges += [exchange(ProtocolVersion.V5, 20), exchange(ProtocolVersion.V4, 21)]
    # Cut short of a whole block: always refused. (A flipped bit in the last block is not:
    # with probability 1/256 the garbled padding reads as one byte, and the spec's hosts
    # accept a request longer than its 236 bytes, 10.11.)
    broken = exchanges[3][0].wire[:-1]
    messages = [pending.wire for pending, _, _ in exchanges] + [broken]
    results = await asyncio.gather(*(opener.run(m) for m in messages), return_exceptions=True)
    assert batches == [len(messages)]
    for (pending, _, _), result in zip(exchanges, results, strict=False):
        assert isinstance(result, OpenedRequest)
        assert result.request == pending.request
        assert result == open_request(pending.wire)
    assert isinstance(results[-1], KmsError)  # its own error, nobody else's
