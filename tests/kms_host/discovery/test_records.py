"""The SRV record snippets: exact text for each server, checked against dnspython's parser.

Expected lines are written by hand from each server's documented syntax (dnsmasq(8)
``--srv-host``, unbound.conf(5) ``local-data``, the DnsServer module's
``Add-DnsServerResourceRecord -Srv`` examples), not produced by our formatter.
"""

from __future__ import annotations

import dns.rdatatype
import dns.rrset
import pytest

from kms_host.discovery.records import format_records


def test_default_record_is_what_a_genuine_host_registers() -> None:
    assert format_records("lab.example") == {
        "zone_file": "_vlmcs._tcp.lab.example. 3600 IN SRV 0 0 1688 kms.lab.example.",
        "dnsmasq": "srv-host=_vlmcs._tcp.lab.example,kms.lab.example,1688,0,0",
        "unbound": 'local-data: "_vlmcs._tcp.lab.example. 3600 IN SRV 0 0 1688 kms.lab.example."',
        "powershell": (
            'Add-DnsServerResourceRecord -Srv -ZoneName "lab.example" -Name "_vlmcs._tcp"'
            ' -DomainName "kms.lab.example" -Priority 0 -Weight 0 -Port 1688'
            " -TimeToLive 01:00:00"
        ),
    }


def test_every_field_reaches_every_form() -> None:
    records = format_records(
        "Corp.Example.", "KMS01.corp.example", port=1700, priority=10, weight=20, ttl=90061
    )
    assert (
        records["zone_file"]
        == "_vlmcs._tcp.corp.example. 90061 IN SRV 10 20 1700 kms01.corp.example."
    )
    assert records["dnsmasq"] == "srv-host=_vlmcs._tcp.corp.example,kms01.corp.example,1700,10,20"
    assert records["powershell"].endswith(
        '-DomainName "kms01.corp.example" -Priority 10 -Weight 20 -Port 1700 -TimeToLive 1.01:01:01'
    )


def test_zone_file_line_parses_as_the_srv_record() -> None:
    line = format_records("lab.example", "kms1.lab.example", port=1688, priority=0, weight=5)[
        "zone_file"
    ]
    owner, ttl, rdclass, rdtype, *rdata = line.split()
    rrset = dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, " ".join(rdata))
    assert rrset.rdtype == dns.rdatatype.SRV
    srv = rrset[0]
    assert (srv.priority, srv.weight, srv.port, srv.target.to_text()) == (
        0,
        5,
        1688,
        "kms1.lab.example.",
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"zone": "not a zone"},
        {"zone": "lab.example", "target": "-bad-.example"},
        {"zone": "lab.example", "port": 0},
        {"zone": "lab.example", "priority": 65536},
        {"zone": "lab.example", "weight": -1},
        {"zone": "lab.example", "ttl": 2**31},
    ],
)
def test_bad_input_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        format_records(**kwargs)  # type: ignore[arg-type]
