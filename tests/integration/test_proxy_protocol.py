"""``[server] proxy_protocol_from`` against a real daemon: the client a load balancer names
in its PROXY v2 header is the one the allow list, the logs and the client table see.

Loopback stands in for the load balancer; the headers are written here from the layout of
HAProxy's proxy-protocol.txt, section 2.2.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from harness import make_request, run_host

from kms_host.client.strict import ClientError, KmsClient

pytestmark = pytest.mark.asyncio

VECTORS = Path(__file__).parents[1] / "vectors" / "vlmcsd-conversations.jsonl"
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
BALANCER = '[server]\nproxy_protocol_from = ["127.0.0.1/32"]\n'


def proxy_v2(source: str, source_port: int, destination: str = "10.0.0.1") -> bytes:
    """A v2 PROXY header for a TCP over IPv4 connection (section 2.2)."""
    addresses = ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(destination).packed
    return (
        SIGNATURE
        + bytes([0x21, 0x11])
        + struct.pack("!H", 12)
        + addresses
        + struct.pack("!HH", source_port, 1688)
    )


async def test_the_client_named_in_the_header_is_logged_and_kept(tmp_path: Path) -> None:
    async with run_host(tmp_path, BALANCER) as host:
        client = await KmsClient.connect(
            "127.0.0.1", host.port, preamble=proxy_v2("10.1.2.3", 40000)
        )
        async with client:
            await client.activate(make_request(machine_name="behind-the-balancer"))
        clients = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "kms_host", "clients", "--data-dir", str(host.data_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    [activation] = host.events("activation")
    assert activation["peer"] == "10.1.2.3:40000"
    [row] = [line for line in clients.stdout.splitlines() if "behind-the-balancer" in line]
    assert "10.1.2.3:40000" in row


async def test_rpc_bytes_in_the_header_s_segment_are_not_lost(tmp_path: Path) -> None:
    """A balancer may send the header and the client's first bytes in one segment."""
    conversation = json.loads(VECTORS.read_text("utf-8").splitlines()[0])
    bind = bytes.fromhex(conversation["exchanges"][0]["hex"])  # vlmcs's bind, as captured
    async with run_host(tmp_path, BALANCER) as host:
        reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
        writer.write(proxy_v2("10.1.2.3", 40000) + bind)
        reply = await asyncio.wait_for(reader.readexactly(16), 5)
        writer.close()
    assert reply[:3] == bytes([5, 0, 0x0C]), "a bind_ack (C706 12.6.4.4)"
    [event] = host.events("bind_completed")
    assert (event["peer"], event["via"].split(":")[0]) == ("10.1.2.3:40000", "127.0.0.1")


async def test_the_allow_list_judges_the_named_client(tmp_path: Path) -> None:
    async with run_host(tmp_path, BALANCER) as host:
        with pytest.raises(ClientError):
            await KmsClient.connect(
                "127.0.0.1", host.port, preamble=proxy_v2("198.51.100.7", 40000)
            )
    [event] = host.events("connection_refused")
    assert (event["reason"], event["peer"]) == ("not_allowed", "198.51.100.7:40000")
    assert event["via"].startswith("127.0.0.1:")


async def test_a_balancer_connection_without_a_header_is_closed_and_counted(
    tmp_path: Path,
) -> None:
    async with run_host(tmp_path, BALANCER) as host:
        with pytest.raises(ClientError):
            await KmsClient.connect("127.0.0.1", host.port)  # an RPC bind where a header goes
    [event] = host.events("connection_refused")
    assert event["reason"] == "proxy_header_invalid"
    assert "signature" in event["error"]
    assert not host.events("bind_completed")


async def test_a_local_health_check_keeps_the_balancer_address(tmp_path: Path) -> None:
    local = SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])
    async with (
        run_host(tmp_path, BALANCER) as host,
        await KmsClient.connect("127.0.0.1", host.port, preamble=local) as client,
    ):
        await client.activate(make_request())
    [activation] = host.events("activation")
    assert activation["peer"].startswith("127.0.0.1:")


async def test_peers_that_are_not_balancers_are_clients_themselves(tmp_path: Path) -> None:
    toml = '[server]\nproxy_protocol_from = ["10.0.0.5/32"]\n'
    async with run_host(tmp_path, toml) as host, await host.client() as client:
        await client.activate(make_request())
    [activation] = host.events("activation")
    assert activation["peer"].startswith("127.0.0.1:")
