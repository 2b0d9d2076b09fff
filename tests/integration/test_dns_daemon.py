"""The daemon with ``[dns]`` on: its responder describes the running host."""

from __future__ import annotations

from pathlib import Path

import dns.asyncquery
import dns.flags
import dns.message
import dns.rdatatype
import pytest
from harness import make_request, run_host

TOML = '[dns]\nlisten = ["127.0.0.1:0"]\nzone = "lab.example"\n'


@pytest.mark.asyncio
async def test_the_srv_record_points_at_the_running_host(tmp_path: Path) -> None:
    async with run_host(tmp_path, TOML) as host:
        (dns_host, dns_port) = host.dns[0]
        query = dns.message.make_query("_vlmcs._tcp.lab.example", dns.rdatatype.SRV)
        answer = await dns.asyncquery.udp(query, dns_host, port=dns_port, timeout=5)
        async with await host.client() as client:
            result = await client.activate(make_request())
    assert answer.flags & dns.flags.AA
    (srv,) = answer.answer[0]
    assert (srv.priority, srv.weight, srv.port) == (0, 0, host.port)
    assert srv.target.to_text() == "kms.lab.example."
    glue = {rrset.name.to_text(): [r.to_text() for r in rrset] for rrset in answer.additional}
    assert glue == {"kms.lab.example.": ["127.0.0.1"]}
    assert result.hresult == 0
    assert host.events("dns_listening")[0]["zone"] == "lab.example"
