"""Client-side KMS discovery: the SRV lookup a Windows client makes, and failover.

A client without a configured host asks for ``_vlmcs._tcp.<domain> SRV``, orders the hosts
(lowest priority first, weighted random within a priority: RFC 2782 "Usage rules"), and tries
them in turn until one answers (kms-host-behaviour 2.4; spec 9.2 describes vlmcsd's variant).
The failures carry the HRESULT a Windows client reports (kms-host-behaviour 2.7):
0x8007232B when no record exists, 0xC004F074 when no host could be contacted.

Target addresses come from the answer's additional section when the server includes them
(RFC 2782 suggests it; our responder and BIND do), else from A/AAAA queries to the same
server: a lab's own DNS is usually the only one that knows the lab's names. A target that
resolves to nothing stays a host name for the connect to resolve.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
import structlog
from dns.rdtypes.IN.SRV import SRV

from kms_host.discovery.settings import SrvTarget
from kms_host.discovery.zone import SRV_SERVICE
from kms_host.errors import KmsHostError

__all__ = [
    "DiscoveryError",
    "NoHostAnsweredError",
    "NoSrvRecordError",
    "discover",
    "first_answering",
    "hresult_for_rcode",
    "order_targets",
]

log = structlog.get_logger("kms_host.srv_lookup")

_T = TypeVar("_T")


def hresult_for_rcode(rcode: int) -> int:
    """The HRESULT Windows makes of a DNS rcode: HRESULT_FROM_WIN32(9000 + rcode).

    Windows' DNS_ERROR_RCODE_* codes are 9000 plus the rcode (9003 = NXDOMAIN, 9005 =
    REFUSED, 9017 = BADKEY), so 0x8007232B is "DNS name does not exist".
    """
    return 0x80070000 | (9000 + rcode)


class DiscoveryError(KmsHostError):
    """Discovery failed; ``hresult`` is what a Windows client would report.

    The default, 0x8007232A (DNS server failure), covers a server that timed out or
    answered with an error.
    """

    hresult: int = 0x8007232A

    def __init__(self, message: str, *, hresult: int | None = None) -> None:
        super().__init__(message)
        if hresult is not None:
            self.hresult = hresult


class NoSrvRecordError(DiscoveryError):
    """The domain has no ``_vlmcs._tcp`` SRV record (DNS_ERROR_RCODE_NAME_ERROR)."""

    hresult = 0x8007232B


class NoHostAnsweredError(DiscoveryError):
    """Every discovered host failed; ``attempts`` lists ``(host, port, reason)``."""

    hresult = 0xC004F074

    def __init__(self, message: str, *, attempts: Sequence[tuple[str, int, str]]) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)


async def discover(
    domain: str,
    *,
    dns_server: tuple[str, int] | None = None,
    rng: random.Random | None = None,
    timeout_s: float = 5.0,
) -> list[tuple[str, int]]:
    """The KMS hosts of ``domain`` in the order to try them, as ``(address or name, port)``.

    ``dns_server`` ("IP", port) is asked directly; None uses the system's resolver. A target
    with several addresses appears once per address (A before AAAA), so failover covers them.
    """
    resolver = _resolver(dns_server, timeout_s)
    qname = dns.name.from_text(f"{SRV_SERVICE}.{domain.rstrip('.')}")
    response = await _ask(resolver, qname, dns.rdatatype.SRV)
    if response is None:
        raise NoSrvRecordError(f"no SRV record {qname}")
    records = [
        SrvTarget(
            rdata.target.to_text(omit_final_dot=True), rdata.port, rdata.priority, rdata.weight
        )
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.SRV
        for rdata in rrset
        if isinstance(rdata, SRV) and rdata.target != dns.name.root  # "." = no service
    ]
    if not records:
        raise NoSrvRecordError(f"no usable SRV record at {qname}")
    hosts: list[tuple[str, int]] = []
    for record in order_targets(records, rng or random.SystemRandom()):
        addresses = _addresses(response, record.target) or await _lookup(resolver, record.target)
        hosts.extend((address, record.port) for address in addresses or [record.target])
    return hosts


def order_targets(records: Sequence[SrvTarget], rng: random.Random) -> list[SrvTarget]:
    """Order SRV records as RFC 2782 says: by priority, then weighted random within one.

    Within a priority, each pick draws a number from 0 to the sum of the remaining weights
    and takes the first record whose running sum reaches it; zero weights go first so they
    are chosen only with "very small probability" when others weigh more. Equal records are
    shuffled first, since DNS order means nothing (kms-host-behaviour 2.4).
    """
    ordered: list[SrvTarget] = []
    for priority in sorted({record.priority for record in records}):
        group = [record for record in records if record.priority == priority]
        rng.shuffle(group)
        group.sort(key=lambda record: record.weight != 0)
        while group:
            pick = rng.randint(0, sum(record.weight for record in group))
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


async def first_answering(
    hosts: Sequence[tuple[str, int]], try_host: Callable[[str, int], Awaitable[_T]]
) -> _T:
    """Try ``try_host`` on each host in order; the first result wins (kms-host-behaviour 2.4).

    A host "does not answer" when ``try_host`` raises ``OSError`` (refused, unreachable),
    ``TimeoutError`` or a :class:`KmsHostError` (a failed exchange). When all fail, raises
    :class:`NoHostAnsweredError` (0xC004F074), as a Windows client does.
    """
    attempts: list[tuple[str, int, str]] = []
    for host, port in hosts:
        try:
            return await try_host(host, port)
        except (OSError, TimeoutError, KmsHostError) as exc:
            reason = str(exc) or type(exc).__name__
            attempts.append((host, port, reason))
            log.warning("discovery_host_failed", host=host, port=port, reason=reason)
    raise NoHostAnsweredError(f"none of {len(hosts)} KMS host(s) answered", attempts=attempts)


def _resolver(dns_server: tuple[str, int] | None, timeout_s: float) -> dns.asyncresolver.Resolver:
    try:
        resolver = dns.asyncresolver.Resolver(configure=dns_server is None)
    except dns.resolver.NoResolverConfiguration as exc:
        raise DiscoveryError(f"no DNS server configured: {exc}") from None
    if dns_server is not None:
        resolver.nameservers = [dns_server[0]]
        resolver.port = dns_server[1]
    resolver.lifetime = timeout_s
    return resolver


async def _ask(
    resolver: dns.asyncresolver.Resolver, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.message.Message | None:
    """The response to one query, or None for NXDOMAIN; other failures are DiscoveryError."""
    try:
        answer = await resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        return None
    except dns.resolver.NoNameservers as exc:
        raise DiscoveryError(f"the DNS server failed to answer for {qname}: {exc}") from None
    except dns.exception.Timeout:
        raise DiscoveryError(f"no answer from the DNS server for {qname}") from None
    return answer.response


def _addresses(response: dns.message.Message, target: str) -> list[str]:
    """A then AAAA addresses of ``target`` found in ``response`` (any section)."""
    name = dns.name.from_text(target)
    found: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        for rrset in [*response.answer, *response.additional]:
            if rrset.name == name and rrset.rdtype == rdtype:
                found.extend(rdata.to_text() for rdata in rrset)
    return found


async def _lookup(resolver: dns.asyncresolver.Resolver, target: str) -> list[str]:
    """A and AAAA queries for a target the SRV answer gave no address for; [] on failure."""
    found: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        try:
            response = await _ask(resolver, dns.name.from_text(target), rdtype)
        except DiscoveryError as exc:
            log.warning("discovery_target_unresolved", target=target, reason=str(exc))
            return found
        if response is not None:
            found.extend(_addresses(response, target))
    return found
