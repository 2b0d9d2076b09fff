"""``[server] allow`` against a real daemon: refused peers are closed before a byte is read.

The public-address case needs a peer that is not loopback: a network namespace joined to the
host by a veth pair, addressed from TEST-NET-2 (RFC 5737, 198.51.100.0/24), which stands for
any Internet address. It needs root and ``ip netns``; without them it is skipped, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import make_request, run_host

pytestmark = pytest.mark.asyncio

BIND_PDU_START = bytes.fromhex("05000b03100000004800000001000000")
"""The first bytes of an RPC bind (C706 12.6.3.1): what a parser would start reading."""


async def closed_without_answer(port: int, host: str = "127.0.0.1") -> bool:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(BIND_PDU_START)
        return await asyncio.wait_for(reader.read(1), 5) == b""
    finally:
        writer.close()


def scrape(address: tuple[str, int]) -> str:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=5) as page:
        return str(page.read().decode())


async def test_a_peer_outside_allow_is_closed_unread_counted_and_logged(tmp_path: Path) -> None:
    toml = '[server]\nallow = ["10.0.0.0/8"]\n[metrics]\nlisten = "127.0.0.1:0"\n'
    async with run_host(tmp_path, toml) as host:
        for _ in range(3):
            assert await closed_without_answer(host.port)
        metrics = await asyncio.to_thread(scrape, host.metrics[0])
    assert 'kms_host_connections_refused_total{reason="not_allowed"} 3.0' in metrics
    assert "kms_host_refused_connections_total 0.0" in metrics  # max_connections' own
    refused = host.events("connection_refused")
    assert [(e["reason"], e["peer"].rsplit(":", 1)[0]) for e in refused] == [
        ("not_allowed", "127.0.0.1")
    ], "one line for three refusals from one peer"
    assert not host.events("protocol_violation"), "the bytes sent were never parsed"
    assert not host.events("bind_completed")


async def test_the_default_serves_loopback(tmp_path: Path) -> None:
    async with run_host(tmp_path) as host, await host.client() as client:
        result = await client.activate(make_request())
    assert result.response.current_client_count >= 25
    assert not host.events("connection_refused")


async def test_an_ipv4_peer_of_a_dual_stack_socket_is_judged_as_ipv4(tmp_path: Path) -> None:
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 on this machine: no dual-stack socket")
    toml = '[server]\nallow = ["127.0.0.0/8"]\n'
    async with run_host(tmp_path, toml, listen="[::]:0") as host:
        async with await host.client() as client:  # to 127.0.0.1, seen as ::ffff:127.0.0.1
            await client.activate(make_request())
        assert await closed_without_answer(host.port, "::1")  # ::1 is not in 127.0.0.0/8
    [event] = host.events("connection_refused")
    assert event["peer"].startswith("[::1]:")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


NAMESPACE = f"kmsnp{os.getpid()}"
HOST_SIDE, PEER_SIDE = "198.51.100.1", "198.51.100.2"


@contextlib.contextmanager
def public_peer() -> Iterator[str]:
    """A namespace whose one address, 198.51.100.2, reaches this host's 198.51.100.1."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2's ip for a network namespace")
    veth = f"np{os.getpid() % 100000}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    try:
        ip("netns", "add", NAMESPACE)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"ip netns is not permitted here: {exc.stderr.decode().strip()}")
    try:
        ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        ip("link", "set", f"{veth}p", "netns", NAMESPACE)
        ip("addr", "add", f"{HOST_SIDE}/24", "dev", veth)
        ip("link", "set", veth, "up")
        ip("-n", NAMESPACE, "addr", "add", f"{PEER_SIDE}/24", "dev", f"{veth}p")
        ip("-n", NAMESPACE, "link", "set", f"{veth}p", "up")
        ip("-n", NAMESPACE, "link", "set", "lo", "up")
        yield NAMESPACE
    finally:
        for cleanup in (["link", "del", veth], ["netns", "del", NAMESPACE]):
            subprocess.run(["ip", *cleanup], capture_output=True, timeout=10, check=False)


async def activate_from(namespace: str, port: int) -> int:
    process = await asyncio.create_subprocess_exec(
        *("ip", "netns", "exec", namespace, sys.executable, "-m", "kms_host", "activate"),
        *(f"{HOST_SIDE}:{port}", "--timeout", "5"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 30)


async def test_a_public_address_is_refused_by_default_and_served_with_any(tmp_path: Path) -> None:
    with public_peer() as namespace:
        async with run_host(tmp_path / "default", listen=f"{HOST_SIDE}:0") as host:
            refused_status = await activate_from(namespace, host.port)
        async with run_host(
            tmp_path / "any", '[server]\nallow = ["any"]\n', listen=f"{HOST_SIDE}:0"
        ) as opened:
            served_status = await activate_from(namespace, opened.port)
    assert refused_status != 0
    [event] = host.events("connection_refused")
    assert (event["reason"], event["peer"].rsplit(":", 1)[0]) == ("not_allowed", PEER_SIDE)
    assert served_status == 0
    [activation] = opened.events("activation")
    assert activation["peer"].startswith(f"{PEER_SIDE}:")
