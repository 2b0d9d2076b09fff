"""The DNS responder's sockets: UDP (asyncio-dgram) and TCP on each listen address.

The answers come from the pure :func:`kms_host.discovery.zone.answer_query`; this module only
moves bytes, bounds the work a client can cause, and logs. Each listen address gets a UDP
socket and a TCP listener on the same port (RFC 7766: TCP is mandatory, and it is where a
client goes after a truncated UDP answer). Port 0 picks a free port that both share.

Bounds (architecture 4.8):

- a per-source token bucket (``rate_limit_qps`` refill, ``rate_limit_burst`` capacity) on
  both transports; over the limit a UDP query is dropped and a TCP connection closed. The
  first drop of a source is logged at once (``dns_rate_limited``), later ones at most once
  per :data:`RATE_LOG_WINDOW_S` with the count dropped meanwhile;
- TCP: messages over :data:`MAX_TCP_QUERY_BYTES` close the connection, as does
  ``tcp_idle_timeout_s`` of silence (RFC 7766 section 6.2.3); at most
  :data:`MAX_TCP_CONNECTIONS` at once;
- one bad message never ends a loop: the answer step is the one place with a broad catch,
  like the session's for KMS connections (architecture 4.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncio_dgram
import dns.rcode
import structlog

from kms_host.discovery.zone import SrvZone, answer_query

__all__ = [
    "MAX_TCP_CONNECTIONS",
    "MAX_TCP_QUERY_BYTES",
    "RATE_LOG_WINDOW_S",
    "RateLimiter",
    "serve_dns",
]

log = structlog.get_logger("kms_host.dns_server")

RATE_LOG_WINDOW_S = 10.0
"""At most one ``dns_rate_limited`` line per source in this many seconds."""
MAX_TCP_QUERY_BYTES = 4096
"""Largest DNS message accepted over TCP; a query with EDNS options and TSIG is far smaller."""
MAX_TCP_CONNECTIONS = 128
"""DNS-over-TCP connections open at once; more are closed on accept."""
_MAX_SOURCES = 65536  # rate-limit table size before idle sources are forgotten
_BIND_ATTEMPTS = 5  # port 0: tries to find one free port for both UDP and TCP

_ClientHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    dropped: int = 0
    reported_at: float = -math.inf


class RateLimiter:
    """Token buckets per source address (the port is ignored: it changes per query)."""

    def __init__(
        self, qps: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._qps = qps
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, source: str) -> bool:
        """Take one token for ``source``; False (and counted as dropped) when there is none."""
        now = self._clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= _MAX_SOURCES:
                self._forget_idle(now)
            bucket = self._buckets[source] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.stamp) * self._qps)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        bucket.dropped += 1
        return False

    def report_due(self, source: str) -> int:
        """Drops of ``source`` not yet logged, if its log window has passed; else 0."""
        bucket = self._buckets.get(source)
        now = self._clock()
        if bucket is None or not bucket.dropped or now - bucket.reported_at < RATE_LOG_WINDOW_S:
            return 0
        dropped, bucket.dropped, bucket.reported_at = bucket.dropped, 0, now
        return dropped

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled (they hold no state); then the oldest half."""
        full = [
            source
            for source, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.stamp) * self._qps >= self._burst
        ]
        for source in full:
            del self._buckets[source]
        if len(self._buckets) >= _MAX_SOURCES:
            for source in list(self._buckets)[: _MAX_SOURCES // 2]:
                del self._buckets[source]


@dataclass(frozen=True, slots=True)
class _Responder:
    """What both transports share: the zone, the limiter, and the one broad catch."""

    zone: SrvZone
    limiter: RateLimiter

    def admit(self, source: str, transport: str) -> bool:
        if self.limiter.allow(source):
            return True
        dropped = self.limiter.report_due(source)
        if dropped:
            log.warning(
                "dns_rate_limited",
                peer=source,
                transport=transport,
                dropped=dropped,
                window_s=RATE_LOG_WINDOW_S,
            )
        return False

    def answer(self, wire: bytes, source: str, transport: str) -> bytes | None:
        try:
            answer = answer_query(wire, self.zone, tcp=transport == "tcp")
        except Exception:  # a bug must cost one answer, not the listener
            log.exception("dns_handler_error", peer=source, transport=transport)
            return None
        log.debug(
            "dns_query",
            peer=source,
            transport=transport,
            query_bytes=len(wire),
            answer_bytes=len(answer) if answer else 0,
            rcode=dns.rcode.to_text(dns.rcode.Rcode.make(answer[3] & 0x0F)) if answer else None,
            truncated=bool(answer and answer[2] & 0x02),
        )
        return answer


async def serve_dns(
    zone: SrvZone,
    listen: Sequence[tuple[str, int]],
    *,
    rate_limit_qps: float,
    rate_limit_burst: int,
    tcp_idle_timeout_s: float,
    stop: asyncio.Event,
    on_bound: Callable[[list[tuple[str, int]]], None] | None = None,
) -> None:
    """Answer DNS on every ``listen`` address (UDP and TCP) until ``stop`` is set.

    ``on_bound`` receives the bound ``(host, port)`` pairs, in ``listen`` order, once every
    socket is open: port 0 becomes the actual port. Binding errors (``OSError``) propagate
    before that, with every socket opened so far closed again.
    """
    responder = _Responder(zone, RateLimiter(rate_limit_qps, rate_limit_burst))
    clients: set[asyncio.Task[None]] = set()
    on_client = functools.partial(
        _serve_tcp, responder=responder, idle_timeout_s=tcp_idle_timeout_s, clients=clients
    )
    sockets: list[asyncio_dgram.DatagramServer] = []
    servers: list[asyncio.Server] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        bound = []
        for host, port in listen:
            udp, tcp = await _bind_pair(host, port, on_client)
            sockets.append(udp)
            servers.append(tcp)
            bound.append((host, udp.sockname[1]))
        tasks = [asyncio.create_task(_serve_udp(udp, responder)) for udp in sockets]
        if on_bound is not None:
            on_bound(bound)
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for task in [*tasks, *clients]:
            task.cancel()
        await asyncio.gather(*tasks, *clients, return_exceptions=True)
        for udp in sockets:
            udp.close()


async def _bind_pair(
    host: str, port: int, on_client: _ClientHandler, attempts: int = _BIND_ATTEMPTS
) -> tuple[asyncio_dgram.DatagramServer, asyncio.Server]:
    """A UDP socket and a TCP listener on one port (for port 0, one free for both)."""
    udp = await asyncio_dgram.bind((host, port))
    try:
        return udp, await asyncio.start_server(on_client, host, udp.sockname[1])
    except OSError:
        udp.close()
        if port != 0 or attempts <= 1:
            raise
    return await _bind_pair(host, port, on_client, attempts - 1)


def _source(addr: object) -> str:
    """The address a rate limit applies to: the IP, without the port."""
    return str(addr[0]) if isinstance(addr, tuple) else str(addr)


async def _serve_udp(sock: asyncio_dgram.DatagramServer, responder: _Responder) -> None:
    while True:
        try:
            wire, addr = await sock.recv()
        except asyncio_dgram.TransportClosed:
            return
        except OSError as exc:  # ICMP errors the kernel reports for an earlier send
            log.debug("dns_socket_error", error=str(exc))
            continue
        source = _source(addr)
        if not responder.admit(source, "udp"):
            continue
        answer = responder.answer(wire, source, "udp")
        if answer is not None:
            try:
                await sock.send(answer, addr)
            except OSError as exc:
                log.debug("dns_send_failed", peer=source, error=str(exc))


async def _serve_tcp(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    responder: _Responder,
    idle_timeout_s: float,
    clients: set[asyncio.Task[None]],
) -> None:
    """One DNS-over-TCP connection: two-byte length prefix, then the message (RFC 1035 4.2.2)."""
    task = asyncio.current_task()
    assert task is not None
    source = _source(writer.get_extra_info("peername"))
    clients.add(task)
    try:
        if len(clients) > MAX_TCP_CONNECTIONS:
            log.warning("dns_tcp_refused", peer=source, reason="too many connections")
            return
        while await _answer_one(reader, writer, responder, source, idle_timeout_s):
            continue
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError) as exc:
        log.debug("dns_tcp_closed", peer=source, reason=type(exc).__name__)
    finally:
        clients.discard(task)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _answer_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    responder: _Responder,
    source: str,
    idle_timeout_s: float,
) -> bool:
    """Read, answer and write one message; False when the connection should close."""
    async with asyncio.timeout(idle_timeout_s):
        size = int.from_bytes(await reader.readexactly(2), "big")
        if size > MAX_TCP_QUERY_BYTES:
            log.warning("dns_tcp_oversize", peer=source, size=size)
            return False
        wire = await reader.readexactly(size)
    if not responder.admit(source, "tcp"):
        return False
    answer = responder.answer(wire, source, "tcp")
    if answer is None:
        return False
    writer.write(len(answer).to_bytes(2, "big") + answer)
    await writer.drain()
    return True
