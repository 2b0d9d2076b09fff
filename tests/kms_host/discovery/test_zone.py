"""DNS discovery without sockets: answer_query, the [dns] section, SRV ordering, failover.

Queries are built with dnspython's own message layer (an independent encoder), and answers
are read back with it; expected records are written out by hand from the zone below.
"""

from __future__ import annotations

import random
from collections import Counter

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from kms_host.discovery.responder import RATE_LOG_WINDOW_S, RateLimiter
from kms_host.discovery.settings import DnsConfig, SrvTarget, parse_dns_section
from kms_host.discovery.srv_lookup import (
    NoHostAnsweredError,
    first_answering,
    hresult_for_rcode,
    order_targets,
)
from kms_host.discovery.zone import UDP_AMPLIFICATION_MAX, SrvZone, answer_query
from kms_host.errors import ConfigError

ZONE = SrvZone(
    "lab.example",
    (
        SrvTarget("kms1.lab.example", 1688, 0, 0, ("192.0.2.10", "2001:db8::10")),
        SrvTarget("kms2.elsewhere.example", 1689, 10, 5),
    ),
    ttl_s=600,
    nameserver_addresses=("127.0.0.1",),
)


def ask(
    name: str,
    rdtype: str = "A",
    *,
    zone: SrvZone = ZONE,
    tcp: bool = False,
    **query_args: object,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **query_args)  # type: ignore[arg-type]
    wire = answer_query(query.to_wire(), zone, tcp=tcp)
    assert wire is not None
    response = dns.message.from_wire(wire)
    assert response.id == query.id
    assert not response.flags & dns.flags.RA, "never recursion"
    return response


def texts(section: list[dns.rrset.RRset]) -> list[str]:
    return sorted(line for rrset in section for line in rrset.to_text().splitlines())


# --- positive answers ----------------------------------------------------------------------


def test_srv_is_authoritative_with_target_addresses_as_additional_data() -> None:
    # Over TCP: over UDP, two targets and their glue exceed three times the query's size.
    response = ask("_vlmcs._tcp.lab.example", "SRV", tcp=True)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert texts(response.answer) == [
        "_vlmcs._tcp.lab.example. 600 IN SRV 0 0 1688 kms1.lab.example.",
        "_vlmcs._tcp.lab.example. 600 IN SRV 10 5 1689 kms2.elsewhere.example.",
    ]
    assert texts(response.additional) == [
        "kms1.lab.example. 600 IN A 192.0.2.10",
        "kms1.lab.example. 600 IN AAAA 2001:db8::10",
    ]


@pytest.mark.parametrize(
    ("rdtype", "expected"),
    [
        ("A", "kms1.lab.example. 600 IN A 192.0.2.10"),
        ("AAAA", "kms1.lab.example. 600 IN AAAA 2001:db8::10"),
    ],
)
def test_targets_have_a_and_aaaa(rdtype: str, expected: str) -> None:
    response = ask("kms1.lab.example", rdtype)
    assert response.flags & dns.flags.AA
    assert texts(response.answer) == [expected]


def test_names_match_case_insensitively() -> None:
    response = ask("KMS1.Lab.EXAMPLE", "A")
    assert [rdata.to_text() for rdata in response.answer[0]] == ["192.0.2.10"]


def test_soa_and_ns_at_the_apex() -> None:
    soa = ask("lab.example", "SOA")
    assert texts(soa.answer) == [
        "lab.example. 600 IN SOA ns.lab.example. hostmaster.lab.example. 1 3600 600 604800 600"
    ]
    ns = ask("lab.example", "NS")
    assert texts(ns.answer) == ["lab.example. 600 IN NS ns.lab.example."]
    assert texts(ns.additional) == ["ns.lab.example. 600 IN A 127.0.0.1"]


def test_recursion_desired_is_echoed_but_never_granted() -> None:
    response = ask("lab.example", "SOA")
    assert response.flags & dns.flags.RD
    norecurse = ask("lab.example", "SOA", flags=0)
    assert not norecurse.flags & dns.flags.RD


# --- negative answers ----------------------------------------------------------------------


def test_unknown_name_in_zone_is_nxdomain_with_soa() -> None:
    response = ask("nope.lab.example", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert not response.answer
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("_tcp.lab.example", "SRV"),  # empty non-terminal (RFC 8020)
        ("_vlmcs._tcp.lab.example", "TXT"),
        ("lab.example", "MX"),
    ],
)
def test_existing_name_without_that_type_is_nodata(name: str, rdtype: str) -> None:
    response = ask(name, rdtype)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.answer
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


def test_target_without_addresses_in_zone_still_exists() -> None:
    zone = SrvZone("lab.example", (SrvTarget("kms.lab.example"),))
    assert ask("kms.lab.example", "A", zone=zone).rcode() == dns.rcode.NOERROR


@pytest.mark.parametrize(
    ("name", "rdtype", "rdclass"),
    [
        ("example.com", "A", "IN"),
        ("kms2.elsewhere.example", "A", "IN"),  # an SRV target, but not our zone
        ("example", "SOA", "IN"),  # the parent
        ("version.bind", "TXT", "CH"),
        ("lab.example", "AXFR", "IN"),
    ],
)
def test_outside_the_zone_or_a_transfer_is_refused(name: str, rdtype: str, rdclass: str) -> None:
    response = ask(name, rdtype, rdclass=rdclass)
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA
    assert not response.answer


# --- malformed input -----------------------------------------------------------------------


def test_short_header_is_dropped() -> None:
    assert answer_query(b"\x12\x34\x01\x00\x00\x01", ZONE) is None
    assert answer_query(b"", ZONE) is None


def test_a_response_is_never_answered() -> None:
    query = dns.message.make_query("lab.example", "SOA")
    response = dns.message.make_response(query)
    assert answer_query(response.to_wire(), ZONE) is None


def test_unreadable_question_is_dropped() -> None:
    header = bytes.fromhex("abcd 0100 0001 0000 0000 0000")
    assert answer_query(header + b"\x3flab", ZONE) is None


def test_trailing_junk_gets_formerr_echoing_the_question() -> None:
    query = dns.message.make_query("lab.example", "SOA")
    wire = answer_query(query.to_wire() + b"junk", ZONE)
    assert wire is not None
    response = dns.message.from_wire(wire)
    assert response.id == query.id
    assert response.rcode() == dns.rcode.FORMERR
    assert response.question == query.question


@pytest.mark.parametrize("count", [0, 2])
def test_not_exactly_one_question_is_formerr(count: int) -> None:
    query = dns.message.make_query("lab.example", "SOA")
    query.question = query.question * count
    wire = answer_query(query.to_wire(), ZONE)
    assert wire is not None
    assert dns.message.from_wire(wire).rcode() == dns.rcode.FORMERR


def test_other_opcodes_are_not_implemented() -> None:
    query = dns.message.make_query("lab.example", "SOA")
    query.set_opcode(dns.opcode.NOTIFY)
    wire = answer_query(query.to_wire(), ZONE)
    assert wire is not None
    assert dns.message.from_wire(wire).rcode() == dns.rcode.NOTIMP


def test_unknown_edns_version_is_badvers() -> None:
    response = ask("lab.example", "SOA", use_edns=1)
    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0


# --- size: never more than the query allows ------------------------------------------------

BIG = SrvZone(
    "lab.example",
    tuple(SrvTarget(f"kms-host-number-{i:02d}.lab.example", 1688, 0, i) for i in range(40)),
)


def test_udp_without_edns_is_truncated_to_512_bytes() -> None:
    query = dns.message.make_query("_vlmcs._tcp.lab.example", "SRV")
    wire = answer_query(query.to_wire(), BIG)
    assert wire is not None
    assert len(wire) <= 512
    response = dns.message.from_wire(wire)
    assert response.flags & dns.flags.TC
    assert not response.answer


@pytest.mark.parametrize(("offered", "limit"), [(100, 512), (1232, 1232), (4096, 1232)])
def test_edns_payload_bounds_the_answer(offered: int, limit: int) -> None:
    query = dns.message.make_query("_vlmcs._tcp.lab.example", "SRV", use_edns=0, payload=offered)
    wire = answer_query(query.to_wire(), BIG)
    assert wire is not None
    assert len(wire) <= limit
    assert dns.message.from_wire(wire).flags & dns.flags.TC


def test_tcp_carries_the_whole_answer() -> None:
    response = ask("_vlmcs._tcp.lab.example", "SRV", zone=BIG, tcp=True)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 40


def test_additional_data_that_does_not_fit_is_left_out_without_tc() -> None:
    addresses = tuple(f"2001:db8::{i:x}" for i in range(1, 40))
    zone = SrvZone("lab.example", (SrvTarget("kms.lab.example", addresses=addresses),))
    response = ask("_vlmcs._tcp.lab.example", "SRV", zone=zone)
    assert not response.flags & dns.flags.TC
    assert len(response.answer) == 1
    assert not response.additional


def test_glue_is_left_out_whole_when_it_would_amplify() -> None:
    response = ask("_vlmcs._tcp.lab.example", "SRV")  # 41 bytes: at most 123 back
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 2
    assert not response.additional, "some of kms1's addresses would pass for all of them"


@pytest.mark.parametrize("name", ["lab.example", "_vlmcs._tcp.lab.example", "kms1.lab.example"])
@pytest.mark.parametrize("tcp", [False, True])
def test_any_is_answered_with_one_synthesized_hinfo(name: str, tcp: bool) -> None:
    response = ask(name, "ANY", tcp=tcp)  # RFC 8482 section 4.2
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert texts(response.answer) == [f'{name}. 600 IN HINFO "RFC8482" ""']
    assert not response.additional
    assert not response.authority


def test_any_at_an_empty_non_terminal_or_a_missing_name_is_negative() -> None:
    nodata = ask("_tcp.lab.example", "ANY")
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    missing = ask("nothing.lab.example", "ANY")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in missing.authority] == [dns.rdatatype.SOA]


QUESTIONS = [
    (name, rdtype)
    for name in ("lab.example", "_vlmcs._tcp.lab.example", "kms1.lab.example", "x.lab.example")
    for rdtype in ("ANY", "SRV", "A", "AAAA", "NS", "SOA", "TXT")
]


@pytest.mark.parametrize("zone", [ZONE, BIG], ids=["two-targets", "forty-targets"])
@pytest.mark.parametrize("edns", [None, 512, 1232, 4096])
def test_no_udp_answer_is_more_than_three_times_its_query(zone: SrvZone, edns: int | None) -> None:
    options = {} if edns is None else {"use_edns": 0, "payload": edns}
    for name, rdtype in QUESTIONS:
        query = dns.message.make_query(name, rdtype, **options).to_wire()  # type: ignore[arg-type]
        answer = answer_query(query, zone)
        assert answer is not None
        assert len(answer) <= UDP_AMPLIFICATION_MAX * len(query), (name, rdtype, edns)
    assert UDP_AMPLIFICATION_MAX == 3


def test_the_host_s_own_srv_answer_keeps_its_address_over_udp() -> None:
    own = SrvZone("lab.example", (SrvTarget("kms.lab.example", 1688, 0, 0, ("192.0.2.10",)),))
    response = ask("_vlmcs._tcp.lab.example", "SRV", zone=own)
    assert texts(response.additional) == ["kms.lab.example. 3600 IN A 192.0.2.10"]


# --- the zone from [dns] -------------------------------------------------------------------


def test_section_defaults_are_off() -> None:
    config = parse_dns_section({})
    assert config == DnsConfig()
    assert not config.enabled
    assert config.publish is None


def test_without_srv_entries_the_host_describes_itself() -> None:
    config = parse_dns_section({"listen": ["127.0.0.1:5353", "[::1]:5353"], "zone": "Lab.Example."})
    zone = SrvZone.from_config(config, kms_port=1688, kms_addresses=["0.0.0.0", "192.0.2.7", "::"])
    assert zone.origin == "lab.example"
    assert zone.targets == (SrvTarget("kms.lab.example", 1688, 0, 0, ("192.0.2.7",)),)
    assert zone.nameserver == "ns.lab.example"
    assert zone.nameserver_addresses == ("127.0.0.1", "::1")


def test_srv_entries_replace_the_self_description() -> None:
    config = parse_dns_section(
        {
            "listen": ["127.0.0.1:0"],
            "zone": "lab.example",
            "srv": [
                {
                    "target": "a.lab.example",
                    "port": 1700,
                    "priority": 1,
                    "weight": 2,
                    "addresses": ["2001:DB8::1"],
                }
            ],
        }
    )
    zone = SrvZone.from_config(config, kms_port=1688, kms_addresses=["192.0.2.7"])
    assert zone.targets == (SrvTarget("a.lab.example", 1700, 1, 2, ("2001:db8::1",)),)


def test_publish_section_defaults() -> None:
    config = parse_dns_section({"zone": "lab.example", "publish": {"server": "127.0.0.1:53"}})
    assert not config.enabled
    assert config.publish is not None
    assert config.publish.server == ("127.0.0.1", 53)
    assert config.publish.zone == "lab.example"
    assert config.publish.interval_s == 86400
    assert config.publish.withdraw_on_stop
    assert "tsig_secret" not in repr(config.publish)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"bogus": 1}, "dns.bogus"),
        ({"listen": ["127.0.0.1:53"]}, "dns.zone"),
        ({"listen": ["::1:53"], "zone": "a.example"}, "dns.listen"),
        ({"listen": "127.0.0.1:53", "zone": "a.example"}, "dns.listen"),
        ({"zone": "bad zone"}, "dns.zone"),
        ({"ttl_s": -1}, "dns.ttl_s"),
        ({"rate_limit_qps": True}, "dns.rate_limit_qps"),
        ({"srv": {"target": "a.example"}}, "dns.srv"),
        ({"srv": [{"port": 1688}]}, "dns.srv[0].target"),
        ({"srv": [{"target": "a.example", "colour": "red"}]}, "dns.srv[0].colour"),
        ({"srv": [{"target": "a.example", "addresses": ["kms"]}]}, "dns.srv[0].addresses"),
        ({"srv": [{"target": "a.example", "port": 0}]}, "dns.srv[0].port"),
        ({"publish": {"server": "127.0.0.1:53"}}, "dns.publish.zone"),
        ({"zone": "a.example", "publish": {}}, "dns.publish.server"),
        ({"zone": "a.example", "publish": {"server": "ns.example:53"}}, "dns.publish.server"),
        ({"zone": "a.example", "publish": {"server": "127.0.0.1:53", "x": 1}}, "dns.publish.x"),
        (
            {"zone": "a.example", "publish": {"server": "127.0.0.1:53", "tsig_algorithm": "rot13"}},
            "dns.publish.tsig_algorithm",
        ),
        (
            {"zone": "a.example", "publish": {"server": "127.0.0.1:53", "tsig_secret": "no!"}},
            "dns.publish.tsig_secret",
        ),
        (
            {"zone": "a.example", "publish": {"server": "127.0.0.1:53", "tsig_key_name": "k"}},
            "dns.publish.tsig_secret",
        ),
        (
            {"zone": "a.example", "publish": {"server": "127.0.0.1:53", "interval_s": 1}},
            "dns.publish.interval_s",
        ),
    ],
)
def test_bad_settings_name_the_dotted_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_dns_section(raw)
    assert caught.value.key == key


# --- client side: ordering, failover, error codes ------------------------------------------


def test_order_is_by_priority_then_weighted_random() -> None:
    records = [
        SrvTarget("late", priority=20),
        SrvTarget("light", priority=10, weight=10),
        SrvTarget("heavy", priority=10, weight=90),
        SrvTarget("first", priority=0),
    ]
    firsts: Counter[str] = Counter()
    rng = random.Random(6)
    for _ in range(2000):
        order = [record.target for record in order_targets(records, rng)]
        assert order[0] == "first"
        assert order[3] == "late"
        firsts[order[1]] += 1
    assert 0.85 < firsts["heavy"] / 2000 < 0.95  # 90 / (90 + 10), RFC 2782


def test_zero_weights_are_shuffled_not_fixed() -> None:
    records = [SrvTarget(name) for name in "abc"]
    rng = random.Random(1)
    seen = {tuple(r.target for r in order_targets(records, rng)) for _ in range(200)}
    assert len(seen) == 6


def test_windows_hresults_for_dns_rcodes() -> None:
    assert hresult_for_rcode(dns.rcode.NXDOMAIN) == 0x8007232B
    assert hresult_for_rcode(dns.rcode.SERVFAIL) == 0x8007232A
    assert hresult_for_rcode(dns.rcode.REFUSED) == 0x8007232D


@pytest.mark.asyncio
async def test_failover_takes_the_first_host_that_answers() -> None:
    tried: list[tuple[str, int]] = []

    async def try_host(host: str, port: int) -> str:
        tried.append((host, port))
        if port == 1:
            raise ConnectionRefusedError("refused")
        return f"{host}:{port}"

    result = await first_answering([("a", 1), ("b", 2), ("c", 3)], try_host)
    assert result == "b:2"
    assert tried == [("a", 1), ("b", 2)]


@pytest.mark.asyncio
async def test_failover_with_no_host_answering_is_c004f074() -> None:
    async def try_host(host: str, port: int) -> None:
        raise TimeoutError

    with pytest.raises(NoHostAnsweredError) as caught:
        await first_answering([("a", 1), ("b", 2)], try_host)
    assert caught.value.hresult == 0xC004F074
    assert [(host, port) for host, port, _ in caught.value.attempts] == [("a", 1), ("b", 2)]


# --- the responder's rate limit ------------------------------------------------------------


def test_token_bucket_per_source_with_one_report_per_window() -> None:
    now = [0.0]
    limiter = RateLimiter(qps=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("192.0.2.1") for _ in range(5)] == [True, True, True, False, False]
    assert limiter.allow("192.0.2.2"), "another source has its own bucket"
    assert limiter.report_due("192.0.2.1") == 2
    assert not limiter.allow("192.0.2.1")
    assert limiter.report_due("192.0.2.1") == 0, "once per window"
    now[0] = 0.5  # one token back at 2 per second
    assert limiter.allow("192.0.2.1")
    assert not limiter.allow("192.0.2.1")
    now[0] = RATE_LOG_WINDOW_S
    assert limiter.report_due("192.0.2.1") == 2
