"""The per-peer limits on an injected clock: token buckets, peer keys, refusals, log throttle."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kms_host.host.admission import (
    LogThrottle,
    PeerAdmission,
    PeerBuckets,
    PeerLimits,
    TokenBucket,
    peer_key,
)
from kms_host.host.metrics import PrometheusObserver
from kms_host.host.reply import KmsReply
from kms_host.policy.catalog_file import load_catalog
from protocol.rpc import CallReceived
from protocol.rpc.constants import TransferSyntax

CATALOG = load_catalog()
NCA_S_SERVER_TOO_BUSY = 0x1C010014  # C706 appendix E


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket.full(rate_per_s=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.49)  # 0.98 of a token
    assert bucket.take(0.5)
    assert not bucket.take(0.5)
    assert [bucket.take(10.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_bucket_ignores_a_clock_going_back() -> None:
    bucket = TokenBucket.full(rate_per_s=1.0, burst=1, now=5.0)
    assert bucket.take(5.0)
    assert not bucket.take(3.0)
    assert not bucket.take(5.5)
    assert bucket.take(6.0)


def test_peer_buckets_are_per_peer_and_full_ones_are_dropped() -> None:
    buckets = PeerBuckets(rate_per_s=1.0, burst=1)
    assert buckets.take("192.0.2.1", 0.0)
    assert not buckets.take("192.0.2.1", 0.0)
    assert buckets.take("192.0.2.2", 0.0)
    for i in range(2000):  # a crowd of one-off peers, each refilled a second later
        assert buckets.take(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(buckets) < 1100  # swept: only the recently busy remain


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2:bbbb::9]", "2001:db8:1:2::/64"),
        ("unknown", "unknown"),
    ],
)
def test_peer_key(host: str, key: str) -> None:
    assert peer_key(host) == key


def test_log_throttle_lets_one_line_through_per_interval_and_counts_the_rest() -> None:
    clock = Clock()
    throttle = LogThrottle(10.0, clock)
    assert throttle.admit() == 0
    assert [throttle.admit() for _ in range(5)] == [None] * 5
    clock.now += 10.0
    assert throttle.admit() == 5
    assert throttle.admit() is None


def test_connections_per_peer_are_held_until_released() -> None:
    observer = PrometheusObserver(CATALOG)
    admission = PeerAdmission(PeerLimits(max_connections_per_peer=2), observer, clock=Clock())
    first, second, third, other = object(), object(), object(), object()
    assert admission.admit(first, ("192.0.2.1", 1000))
    assert admission.admit(second, ("::ffff:192.0.2.1", 1001))  # the same peer, dual-stack
    assert not admission.admit(third, ("192.0.2.1", 1002))
    assert admission.admit(other, ("192.0.2.2", 1000))
    admission.release(first)
    assert admission.admit(third, ("192.0.2.1", 1002))
    value = observer.registry.get_sample_value(
        "kms_host_peer_limited_total", {"limit": "max_connections_per_peer"}
    )
    assert value == 1


def test_connection_rate_refuses_over_the_burst_and_refills() -> None:
    clock = Clock()
    observer = PrometheusObserver(CATALOG)
    limits = PeerLimits(connection_rate_per_s=1.0, connection_burst=2)
    admission = PeerAdmission(limits, observer, clock=clock)
    taken = [admission.admit(object(), ("192.0.2.1", port)) for port in range(3)]
    assert taken == [True, True, False]
    clock.now += 1.0
    assert admission.admit(object(), ("192.0.2.1", 9))
    value = observer.registry.get_sample_value(
        "kms_host_peer_limited_total", {"limit": "peer_connection_rate"}
    )
    assert value == 1


def call(call_id: int) -> CallReceived:
    return CallReceived(
        call_id=call_id, context_id=0, opnum=0, syntax=TransferSyntax.NDR32, kms_message=bytes(260)
    )


@pytest.mark.asyncio
async def test_request_rate_faults_server_too_busy_without_running_the_call() -> None:
    clock = Clock()
    observer = PrometheusObserver(CATALOG)
    served: list[int] = []

    async def handler(received: CallReceived, peer: str) -> KmsReply:
        served.append(received.call_id)
        return KmsReply(message=uuid.uuid4().bytes)

    limits = PeerLimits(request_rate_per_s=0.5, request_burst=2)
    guarded = PeerAdmission(limits, observer, clock=clock).limit_calls(handler)
    replies = [await guarded(call(i), "[2001:db8::1]:50000") for i in range(3)]
    assert [r.fault_status for r in replies] == [None, None, NCA_S_SERVER_TOO_BUSY]
    assert served == [0, 1]
    other = await guarded(call(3), "[2001:db8:0:1::1]:50000")  # another /64
    assert other.fault_status is None
    clock.now += 2.0
    assert (await guarded(call(4), "[2001:db8::2]:50001")).fault_status is None
    assert served == [0, 1, 3, 4]
    value = observer.registry.get_sample_value(
        "kms_host_peer_limited_total", {"limit": "peer_request_rate"}
    )
    assert value == 1


def test_request_rate_off_leaves_the_handler_alone() -> None:
    async def handler(received: CallReceived, peer: str) -> KmsReply:
        return KmsReply()

    admission = PeerAdmission(PeerLimits(), PrometheusObserver(CATALOG))
    assert admission.limit_calls(handler) is handler


@given(
    rate=st.floats(min_value=0.01, max_value=1000),
    burst=st.integers(min_value=1, max_value=100),
    gaps=st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=300),
)
def test_bucket_never_grants_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucket.full(rate, burst, now=0.0)
    now, granted = 0.0, 0
    for gap in gaps:
        now += gap
        granted += bucket.take(now)
    assert granted <= burst + rate * now + 1e-6
