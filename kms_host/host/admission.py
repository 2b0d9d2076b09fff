"""Per-peer limits: how many connections one peer may hold, how fast it may connect and call.

``server.max_connections`` protects the host; these keep one peer from taking the share of
the others. A peer is an IPv4 address, or an IPv6 /64 (one LAN segment: a machine with
privacy addresses changes its address within its /64, so a per-address key would let it
escape the limit). All are off by default (0): a lab's CI farm of hundreds of VMs behind one
NAT address is a single peer, and a genuine host knows no such limits (kms-host-behaviour:
no limit on clients), so any default low enough to stop a misbehaving peer would also stop
that farm. Operators who know their clients turn them on.

What a peer over a limit sees:

* over ``max_connections_per_peer`` or ``peer_connection_rate_per_s``: its connection is
  closed at accept, before a byte is read, exactly as over ``max_connections`` (spec 1.1:
  reject cleanly); a Windows client reports a connection failure and tries again later.
* over ``peer_request_rate_per_s``: the call gets the RPC fault ``nca_s_server_too_busy``
  with PFC_DID_NOT_EXECUTE (C706 appendix E; spec 3.5), which is what the Windows RPC
  runtime answers a call over its server's concurrent-call limit: the client is told the
  call never ran, reports RPC_S_SERVER_TOO_BUSY (0x800706BB) and retries later, and the
  association stays up. Closing instead would look like a network failure.

With ``serve --workers N`` each worker keeps its own counts: the kernel spreads a peer's
connections over the workers, so a peer may get up to N times each limit.

Rates are token buckets: ``burst`` tokens to start with, refilled at ``rate_per_s``; each
connection (or call) takes one. A peer's bucket that has refilled completely is the same as
none, so full buckets are dropped and the table holds only the peers that were recently busy.

Every refusal is counted (``kms_host_peer_limited_total{limit}``) and logged, at most one
line per :data:`LOG_INTERVAL_S` and limit, with the number of refusals since the last line:
a flood must not turn into a flood of log lines.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import structlog

from kms_host.addresses import peer_ip
from kms_host.host.observe import HostObserver
from kms_host.host.reply import CallHandler, KmsReply
from protocol.errors import NCA_S_SERVER_TOO_BUSY
from protocol.rpc import CallReceived

__all__ = [
    "LOG_INTERVAL_S",
    "LogThrottle",
    "PeerAdmission",
    "PeerBuckets",
    "PeerLimits",
    "TokenBucket",
    "peer_key",
]

log = structlog.get_logger("kms_host.server")

LOG_INTERVAL_S = 10.0
"""Shortest time between two log lines about the same refusal."""

_SWEEP_MIN = 1024
"""Peers a bucket table holds before it first drops the full buckets."""

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class PeerLimits:
    """The ``[server]`` per-peer keys; 0 turns a limit off."""

    max_connections_per_peer: int = 0
    connection_rate_per_s: float = 0.0
    connection_burst: int = 1
    request_rate_per_s: float = 0.0
    request_burst: int = 1


@dataclass(slots=True)
class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate_per_s``; taking one needs one whole."""

    rate_per_s: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate_per_s: float, burst: float, now: float) -> TokenBucket:
        return cls(rate_per_s, burst, burst, now)

    def refill(self, now: float) -> None:
        """Add what accrued since the last look (a clock going back adds nothing)."""
        elapsed = max(now - self.stamp, 0.0)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate_per_s)
        self.stamp = max(now, self.stamp)

    def take(self, now: float) -> bool:
        """Take one token if there is one; False means over the rate."""
        self.refill(now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def is_full(self, now: float) -> bool:
        self.refill(now)
        return self.tokens >= self.burst


class PeerBuckets:
    """One token bucket per peer, created full on first sight, dropped once full again."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        self._buckets: dict[str, TokenBucket] = {}
        self._sweep_at = _SWEEP_MIN

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, peer: str, now: float) -> bool:
        """Whether ``peer`` may go on now (and spend a token)."""
        bucket = self._buckets.get(peer)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            bucket = self._buckets[peer] = TokenBucket.full(self._rate_per_s, self._burst, now)
        return bucket.take(now)

    def _sweep(self, now: float) -> None:
        """Drop the buckets that refilled: the table then holds only recently busy peers."""
        self._buckets = {p: b for p, b in self._buckets.items() if not b.is_full(now)}
        self._sweep_at = max(_SWEEP_MIN, 2 * len(self._buckets))


class LogThrottle:
    """Lets one log line through per interval and counts the ones it held back."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S, clock: Clock = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self._held = 0

    def admit(self) -> int | None:
        """None: stay silent; else log now, with this many lines held back since the last."""
        now = self._clock()
        if self._last is not None and now - self._last < self._interval_s:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        return held


def peer_key(host: str) -> str:
    """The peer a limit counts: the IPv4 address, or the IPv6 /64 (IPv4-mapped unmapped)."""
    address = peer_ip((host.strip("[]"),))
    if address is None:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _host_of(peer: str) -> str:
    """The host part of a peer as :func:`kms_host.addresses.format_peer` writes it."""
    return peer.rsplit(":", 1)[0] if peer.count(":") == 1 or peer.startswith("[") else peer


class PeerAdmission:
    """The per-peer limits of one listener: asked at accept, told at close, asked per call."""

    def __init__(
        self, limits: PeerLimits, observer: HostObserver, *, clock: Clock = time.monotonic
    ) -> None:
        self._limits = limits
        self._observer = observer
        self._clock = clock
        self.counts_connections = bool(
            limits.connection_rate_per_s or limits.max_connections_per_peer
        )
        """Whether :meth:`admit` and :meth:`release` are needed: off by default, and then a
        connection costs no per-peer bookkeeping."""
        self._connect = PeerBuckets(limits.connection_rate_per_s, limits.connection_burst)
        self._calls = PeerBuckets(limits.request_rate_per_s, limits.request_burst)
        self._peer_of: dict[Hashable, str] = {}
        self._open: dict[str, int] = {}
        self._throttles: dict[str, LogThrottle] = {}

    def admit(self, connection: Hashable, peername: object) -> bool:
        """Take ``connection`` in (True) or refuse it, counted and logged, over a limit."""
        host = str(peername[0]) if isinstance(peername, tuple) and peername else "unknown"
        peer = peer_key(host)
        limits = self._limits
        if limits.connection_rate_per_s and not self._connect.take(peer, self._clock()):
            self._refused("peer_connection_rate", peer, rate_per_s=limits.connection_rate_per_s)
            return False
        held = self._open.get(peer, 0)
        if limits.max_connections_per_peer and held >= limits.max_connections_per_peer:
            self._refused(
                "max_connections_per_peer",
                peer,
                max_connections_per_peer=limits.max_connections_per_peer,
            )
            return False
        self._open[peer] = held + 1
        self._peer_of[connection] = peer
        return True

    def release(self, connection: Hashable) -> None:
        """An admitted connection ended."""
        peer = self._peer_of.pop(connection)
        left = self._open[peer] - 1
        if left:
            self._open[peer] = left
        else:
            del self._open[peer]

    def limit_calls(self, handler: CallHandler) -> CallHandler:
        """``handler`` behind ``peer_request_rate_per_s``; itself while that is off."""
        if not self._limits.request_rate_per_s:
            return handler

        async def limited(call: CallReceived, peer: str) -> KmsReply:
            key = peer_key(_host_of(peer))
            if not self._calls.take(key, self._clock()):
                self._refused("peer_request_rate", key, rate_per_s=self._limits.request_rate_per_s)
                return KmsReply(fault_status=NCA_S_SERVER_TOO_BUSY)
            return await handler(call, peer)

        return limited

    def _refused(self, reason: str, peer: str, **fields: float) -> None:
        self._observer.peer_limited(reason)
        throttle = self._throttles.setdefault(reason, LogThrottle(clock=self._clock))
        held = throttle.admit()
        if held is not None:
            event = "request_refused" if reason == "peer_request_rate" else "connection_refused"
            log.warning(event, reason=reason, peer=peer, suppressed=held, **fields)
