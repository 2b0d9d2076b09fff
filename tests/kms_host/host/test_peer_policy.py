"""``[server] allow`` as the listener applies it, and the rate limit on its log lines."""

from __future__ import annotations

import ipaddress

import pytest
import structlog

from kms_host.addresses import LAB_NETWORKS, peer_ip
from kms_host.host.peer_policy import MAX_PEERS_LOGGED, PeerPolicy, RefusalLog

DEFAULT = PeerPolicy(allow=LAB_NETWORKS)


@pytest.mark.parametrize(
    ("peername", "allowed"),
    [
        (("127.0.0.1", 50000), True),
        (("::1", 50000, 0, 0), True),
        (("10.20.30.40", 1), True),
        (("172.31.255.255", 1), True),
        (("172.32.0.1", 1), False),  # just past 172.16.0.0/12
        (("192.168.1.9", 1), True),
        (("169.254.10.1", 1), True),
        (("100.100.1.1", 1), True),  # shared address space (RFC 6598)
        (("fd12:3456::1", 1, 0, 0), True),
        (("fe80::1%lo", 1, 0, 1), True),
        (("198.51.100.7", 1), False),  # TEST-NET-2: stands for any public address
        (("2001:db8::1", 1, 0, 0), False),
        (("::ffff:127.0.0.1", 1, 0, 0), True),  # an IPv4 client of a dual-stack socket
        (("::ffff:198.51.100.7", 1, 0, 0), False),
        ("/run/kms.sock", False),  # not an IP: never in an allow list
    ],
)
def test_default_serves_lab_networks_only(peername: object, allowed: bool) -> None:
    assert DEFAULT.allows(peer_ip(peername)) is allowed


def test_mapped_peers_are_judged_as_their_ipv4_address() -> None:
    policy = PeerPolicy(allow=("127.0.0.0/8",))
    assert policy.allows(peer_ip(("::ffff:127.0.0.1", 1, 0, 0)))
    assert not PeerPolicy(allow=("::ffff:0:0/96",)).allows(peer_ip(("::ffff:127.0.0.1", 1, 0, 0)))


def test_any_serves_everyone_and_proxy_sources_are_matched_by_block() -> None:
    policy = PeerPolicy(allow=("any",), proxy_from=("10.0.0.5/32", "fd00::/8"))
    assert policy.allows(ipaddress.ip_address("198.51.100.7"))
    assert policy.expects_proxy(ipaddress.ip_address("10.0.0.5"))
    assert policy.expects_proxy(ipaddress.ip_address("fd00::5"))
    assert not policy.expects_proxy(ipaddress.ip_address("10.0.0.6"))
    assert not DEFAULT.expects_proxy(ipaddress.ip_address("10.0.0.5"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def refuse(refusals: RefusalLog, host: str) -> None:
    refusals.refused("not_allowed", peer=f"{host}:1", address=ipaddress.ip_address(host))


def test_one_line_per_peer_per_interval_with_the_unlogged_count() -> None:
    clock = Clock()
    refusals = RefusalLog(60, clock=clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(100):
            refuse(refusals, "198.51.100.7")
        refuse(refusals, "198.51.100.8")
        clock.now = 59.9
        refuse(refusals, "198.51.100.7")
        clock.now = 60.0
        refuse(refusals, "198.51.100.7")
    assert [(e["peer"], e["suppressed"]) for e in logs] == [
        ("198.51.100.7:1", 0),
        ("198.51.100.8:1", 99),
        ("198.51.100.7:1", 1),
    ]
    assert {e["event"] for e in logs} == {"connection_refused"}
    assert {e["log_level"] for e in logs} == {"warning"}


def test_lines_per_interval_are_bounded_whatever_the_number_of_peers() -> None:
    clock = Clock()
    refusals = RefusalLog(60, clock=clock)
    network = ipaddress.ip_network("2001:db8::/64")
    with structlog.testing.capture_logs() as logs:
        for offset in range(MAX_PEERS_LOGGED + 500):
            refuse(refusals, str(network[offset]))
        clock.now = 60
        refuse(refusals, "198.51.100.7")
    assert len(logs) == MAX_PEERS_LOGGED + 1
    assert logs[-1]["suppressed"] == 500
