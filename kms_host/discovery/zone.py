"""The authoritative answer to one DNS query about the KMS zone: bytes in, bytes out (pure).

Theory of operation (architecture 4.9). The zone is tiny and fixed at start: SOA and NS at
the apex, ``_vlmcs._tcp.<zone> SRV`` naming the KMS hosts (spec 9.1), and A/AAAA records for
the in-zone targets and the name server. :func:`answer_query` parses with dnspython's message
layer and follows the error ladder of dnspython's test name server:

- fewer than 12 bytes (``ShortHeader``), a response, or an unreadable question: dropped
  (``None``), since there is nothing safe to answer;
- any other parse failure: FORMERR echoing the question;
- not exactly one question: FORMERR; an opcode other than QUERY: NOTIMP (RFC 1035 4.1.1);
  EDNS version above 0: BADVERS (RFC 6891 6.1.3);
- a name outside the zone, a class other than IN, or a zone transfer: REFUSED. This server
  never recurses, so RA stays clear;
- otherwise an authoritative (AA) answer, NODATA or NXDOMAIN, the negative ones carrying the
  SOA for negative caching (RFC 2308 section 3). Names that only exist as parents of others
  (``_tcp.<zone>``) are empty non-terminals: NODATA, not NXDOMAIN (RFC 8020).

No amplification: an answer over UDP never exceeds 512 bytes, or the EDNS payload size the
query offered (capped at :data:`EDNS_PAYLOAD`), nor :data:`UDP_AMPLIFICATION_MAX` times the
query's own size, since a UDP source address can be forged and the answer aimed at a victim.
What does not fit is left out: the additional records silently (all of them), then the
authority section RRset by RRset, then the answer, which sets TC so the client retries over
TCP (RFC 2181 section 9), where the handshake proves the source. Over TCP the limit is the
16-bit length prefix. ANY is answered minimally (RFC 8482 section 4.2): one synthesized HINFO RRset,
CPU "RFC8482", for a name that has records, on both transports; the records themselves are
one typed query away.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.IN.SRV import SRV
from dns.rdtypes.nsbase import NSBase

from kms_host.discovery.settings import DnsConfig, SrvTarget

__all__ = ["EDNS_PAYLOAD", "SRV_SERVICE", "UDP_AMPLIFICATION_MAX", "SrvZone", "answer_query"]

SRV_SERVICE = "_vlmcs._tcp"
"""Service and protocol labels a KMS client queries (spec 9.1)."""

EDNS_PAYLOAD = 1232
"""Largest UDP answer we send and advertise: the DNS Flag Day 2020 size, which avoids IP
fragmentation on any common path."""

UDP_AMPLIFICATION_MAX = 3
"""Largest ratio of a UDP answer's size to its query's: a forged query gains an attacker at
most this factor. The host's own SRV answer (one target, its A record) fits well within it."""

_UDP_DEFAULT = 512  # RFC 1035 4.2.1; also the floor for smaller EDNS offers (RFC 6891 6.2.5)
_TCP_MAX = 65535  # the two-byte length prefix (RFC 1035 4.2.2)
_SOA_TIMERS = "1 3600 600 604800"  # serial refresh retry expire; nothing transfers the zone


@dataclass(frozen=True, slots=True)
class SrvZone:
    """The records served: the zone apex, the KMS hosts, and this server's own name."""

    origin: str
    """The zone, lowercase, without a trailing dot."""
    targets: tuple[SrvTarget, ...]
    """The SRV records, one per KMS host."""
    ttl_s: int = 3600
    """TTL of every record, and the SOA minimum (the negative-caching TTL)."""
    nameserver: str = ""
    """The NS target; empty means ``ns.<origin>``."""
    nameserver_addresses: tuple[str, ...] = ()
    """A/AAAA for the name server when it lies in the zone (usually our listen addresses)."""

    def __post_init__(self) -> None:
        if not self.nameserver:
            object.__setattr__(self, "nameserver", f"ns.{self.origin}")

    @classmethod
    def from_config(
        cls,
        config: DnsConfig,
        *,
        kms_port: int,
        kms_addresses: Sequence[str],
    ) -> SrvZone:
        """Build the zone from ``[dns]``; without ``[[dns.srv]]`` the host describes itself.

        "Itself" is what a genuine host registers (kms-host-behaviour 2.4): priority 0,
        weight 0, its KMS port, and a name of its own, here ``kms.<zone>``, with the KMS
        listen addresses as A/AAAA. Wildcards (``0.0.0.0``, ``::``) and host names say
        nothing a client could connect to, so they are left out; pass the concrete addresses.

        Its ``targets`` are also what :func:`kms_host.discovery.publisher.run_publisher` registers;
        with publishing alone (no ``dns.zone``), the publish zone names the default target.
        """
        origin = config.zone or (config.publish.zone if config.publish else "")
        targets = config.srv or (
            SrvTarget(f"kms.{origin}", kms_port, 0, 0, _concrete(kms_addresses)),
        )
        return cls(
            origin=origin,
            targets=targets,
            ttl_s=config.ttl_s,
            nameserver_addresses=_concrete(host for host, _port in config.listen),
        )


def _concrete(addresses: Iterable[str]) -> tuple[str, ...]:
    found: list[str] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue  # a host name: nothing to serve as A/AAAA
        if not address.is_unspecified and str(address) not in found:
            found.append(str(address))
    return tuple(found)


def answer_query(wire: bytes, zone: SrvZone, *, tcp: bool = False) -> bytes | None:
    """Answer one query message, or return None when it must be dropped (see module doc)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.message.ShortHeader:
        return None
    except dns.exception.DNSException:
        return _format_error(wire)
    if query.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(query, our_payload=EDNS_PAYLOAD)
    if query.edns > 0:
        response.set_rcode(dns.rcode.BADVERS)
    elif query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
    elif len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
    else:
        _resolve(response, query.question[0], zone)
    limit = _size_limit(query, tcp)
    return _render(response, limit if tcp else min(limit, UDP_AMPLIFICATION_MAX * len(wire)))


def _render(response: dns.message.Message, limit: int) -> bytes:
    """The response in at most ``limit`` bytes, dropping whole RRsets from the end.

    dnspython truncates to no less than 512 bytes, so smaller limits (the amplification
    bound) are kept here: the additional section (all of it: a client given some of a
    target's addresses would take them for all of them and not look up the rest), then
    authority RRsets, then the answer, with TC.
    """
    wire = response.to_wire(max_size=limit, prefer_truncation=True)
    while len(wire) > limit:
        if response.additional:
            response.additional.clear()
        elif response.authority:
            response.authority.pop()
        elif response.answer:
            response.answer.clear()
            response.flags |= dns.flags.TC
        else:  # header and question alone: never larger than the query was
            break
        wire = response.to_wire(max_size=limit, prefer_truncation=True)
    return wire


def _format_error(wire: bytes) -> bytes | None:
    """FORMERR echoing the question, when at least the header and question can be read."""
    try:
        query = dns.message.from_wire(wire, question_only=True)
    except dns.exception.DNSException:
        return None
    if query.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.FORMERR)
    return response.to_wire(max_size=_UDP_DEFAULT, prefer_truncation=True)


def _size_limit(query: dns.message.Message, tcp: bool) -> int:
    if tcp:
        return _TCP_MAX
    if query.edns < 0:
        return _UDP_DEFAULT
    return max(_UDP_DEFAULT, min(query.payload, EDNS_PAYLOAD))


def _resolve(response: dns.message.Message, question: dns.rrset.RRset, zone: SrvZone) -> None:
    origin = dns.name.from_text(zone.origin)
    qname, qtype = question.name, question.rdtype
    transfer = qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
    if question.rdclass != dns.rdataclass.IN or not qname.is_subdomain(origin) or transfer:
        response.set_rcode(dns.rcode.REFUSED)
        return
    response.flags |= dns.flags.AA
    records = _zone_records(zone, origin)
    soa = records[origin][0]
    if qname not in records and not any(owner.is_subdomain(qname) for owner in records):
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(soa)
        return
    if qtype == dns.rdatatype.ANY and records.get(qname):
        response.answer.append(
            dns.rrset.from_text(qname, zone.ttl_s, "IN", "HINFO", '"RFC8482" ""')
        )
        return
    answer = [rrset for rrset in records.get(qname, []) if rrset.rdtype == qtype]
    if not answer:
        response.authority.append(soa)
        return
    response.answer.extend(answer)
    for rrset in answer:  # addresses of SRV and NS targets save the client a query (RFC 2782)
        for rdata in rrset:
            if not isinstance(rdata, SRV | NSBase):
                continue
            for glue in records.get(rdata.target, []):
                if glue not in response.additional:
                    response.additional.append(glue)


def _zone_records(
    zone: SrvZone, origin: dns.name.Name
) -> dict[dns.name.Name, list[dns.rrset.RRset]]:
    """Every owner name in the zone with its RRsets; the apex lists the SOA first.

    Built per query rather than shared: RRsets are mutable, and a handful of records costs
    microseconds.
    """
    ttl = zone.ttl_s
    apex = [
        dns.rrset.from_text(
            origin,
            ttl,
            "IN",
            "SOA",
            f"{zone.nameserver}. hostmaster.{zone.origin}. {_SOA_TIMERS} {ttl}",
        ),
        dns.rrset.from_text(origin, ttl, "IN", "NS", f"{zone.nameserver}."),
    ]
    records: dict[dns.name.Name, list[dns.rrset.RRset]] = {origin: apex}
    if zone.targets:
        srv_owner = dns.name.from_text(SRV_SERVICE, origin)
        srv = [f"{t.priority} {t.weight} {t.port} {t.target}." for t in zone.targets]
        records[srv_owner] = [dns.rrset.from_text_list(srv_owner, ttl, "IN", "SRV", srv)]
    # In-zone targets exist as names even without addresses (NODATA rather than NXDOMAIN);
    # a host listed twice gets one A and one AAAA RRset (an RRset drops duplicate rdata).
    addresses: dict[dns.name.Name, list[str]] = {}
    hosts = [(t.target, t.addresses) for t in zone.targets]
    for host, listed in [*hosts, (zone.nameserver, zone.nameserver_addresses)]:
        name = dns.name.from_text(host)
        if name.is_subdomain(origin):
            addresses.setdefault(name, []).extend(listed)
    for name, texts in addresses.items():
        records.setdefault(name, []).extend(_address_rrsets(name, ttl, texts))
    return records


def _address_rrsets(
    name: dns.name.Name, ttl: int, addresses: Sequence[str]
) -> list[dns.rrset.RRset]:
    by_type: dict[str, list[str]] = {}
    for text in addresses:
        rdtype = "A" if ipaddress.ip_address(text).version == 4 else "AAAA"
        by_type.setdefault(rdtype, []).append(text)
    return [
        dns.rrset.from_text_list(name, ttl, "IN", rdtype, texts)
        for rdtype, texts in by_type.items()
    ]
