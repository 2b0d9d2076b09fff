"""``kms-host activate`` as a process against a real daemon.

Every protocol x NDR x BTFN combination activates; a response with one byte flipped on the
way (a relay on 127.0.0.1 between client and host) fails verification with a non-zero exit
for V4, V5 and V6; ``--require-activation`` reports 0xC004F038 below the threshold; and
``--discover`` finds the host through a real BIND 9 (the helpers of ``test_dns_loopback``),
fails over to a second host, and reports 0x8007232B without a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import run_host
from test_dns_loopback import TEST_TIMEOUT_S, Named, eventually, free_port, named

from kms_host.discovery.publisher import publish, withdraw
from kms_host.discovery.settings import SrvTarget

__all__ = ["named"]  # the BIND fixture, imported for the --discover tests

COMBOS = list(itertools.product((4, 5, 6), (False, True), (False, True)))
PTYPE_RESPONSE = 2
EXIT_HRESULT, EXIT_USAGE, EXIT_COUNT, EXIT_VERIFY, EXIT_UNAVAILABLE, EXIT_NO_HOST = range(1, 7)


@dataclass(frozen=True)
class Run:
    code: int
    lines: list[dict[str, Any]]
    stderr: str


async def activate_cli(*args: str) -> Run:
    """Run ``kms-host activate ... --json`` in a subprocess (the host runs in this loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kms_host", "activate", *args, "--json",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Run(process.returncode, [json.loads(line) for line in out.splitlines()], err.decode())


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("protocol", "ndr64", "btfn"),
    COMBOS,
    ids=[f"v{v}-{'ndr64' if n else 'ndr32'}-{'btfn' if b else 'nobtfn'}" for v, n, b in COMBOS],
)
async def test_every_protocol_ndr_and_btfn_combination_activates(
    tmp_path: Path, protocol: int, ndr64: bool, btfn: bool
) -> None:
    flags = ["--protocol", str(protocol), "--ndr64" if ndr64 else "--no-ndr64"]
    flags.append("--btfn" if btfn else "--no-btfn")
    async with run_host(tmp_path) as host:
        run = await activate_cli(f"127.0.0.1:{host.port}", *flags, "-n", "2")
    assert run.code == 0, run
    assert [line["request"] for line in run.lines] == [1, 2]
    for line in run.lines:
        assert (line["ok"], line["hresult"], line["protocol"]) == (
            True,
            "0x00000000",
            f"{protocol}.0",
        )
        assert line["count"] >= 25
        assert line["epid"] == host.events("activation")[0]["epid"]
        assert (line["hwid"] is not None) == (protocol == 6)
        assert (line["activation_interval_min"], line["renewal_interval_min"]) == (120, 10080)
    assert run.lines[0]["cmid"] == run.lines[1]["cmid"]  # -n: one machine asking twice
    ndr = [event["ndr"] for event in host.events("activation")]
    assert ndr == (["ndr32", "ndr64"] if ndr64 else ["ndr32", "ndr32"])  # one association


# --- a relay that flips one byte of each RPC response --------------------------------------


@contextlib.asynccontextmanager
async def flipping_relay(port: int) -> AsyncIterator[int]:
    """Relay 127.0.0.1:<yielded port> to the host, inverting the middle byte of each response
    PDU: past the 24-byte response header and inside the KMS message for all three versions
    (160, 228 and 260 bytes of a PDU of at most 304)."""
    flipped: list[int] = []

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flip: bool) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                header = await reader.readexactly(16)
                frag_length = int.from_bytes(header[8:10], "little")
                pdu = bytearray(header + await reader.readexactly(frag_length - 16))
                if flip and pdu[2] == PTYPE_RESPONSE:
                    pdu[len(pdu) // 2] ^= 0xFF
                    flipped.append(len(pdu))
                writer.write(pdu)
                await writer.drain()
        writer.close()

    async def accept(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        host_r, host_w = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pump(client_r, host_w, False), pump(host_r, client_w, True))

    relay = await asyncio.start_server(accept, "127.0.0.1", 0)
    async with relay:
        yield relay.sockets[0].getsockname()[1]
    assert flipped, "no response went through the relay"
    assert all(length <= 304 for length in flipped)


@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", [4, 5, 6])
async def test_a_flipped_byte_fails_verification(tmp_path: Path, protocol: int) -> None:
    async with run_host(tmp_path) as host, flipping_relay(host.port) as relay_port:
        run = await activate_cli(f"127.0.0.1:{relay_port}", "--protocol", str(protocol))
    assert run.code == EXIT_VERIFY, run
    (line,) = run.lines
    assert (line["ok"], line["stage"], line["hresult"]) == (False, "verify", "0xC004F074")
    assert line["epid"] is None
    assert host.events("activation")[0]["result"] == "activated"  # the host did answer


# --- threshold, charge, usage ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_require_activation_below_the_threshold_is_0xc004f038(tmp_path: Path) -> None:
    async with run_host(tmp_path, '[counting]\nprefill = "none"\n') as host:
        required = await activate_cli(f"127.0.0.1:{host.port}", "--require-activation")
        lenient = await activate_cli(f"127.0.0.1:{host.port}")
    assert required.code == EXIT_COUNT
    assert (required.lines[0]["hresult"], required.lines[0]["count"]) == ("0xC004F038", 1)
    assert required.lines[0]["threshold"] == 25
    assert lenient.code == 0
    assert lenient.lines[0]["count"] == 2


@pytest.mark.asyncio
async def test_charge_sends_distinct_cmids_and_new_connection_reconnects(tmp_path: Path) -> None:
    toml = '[counting]\nprefill = "none"\n'
    async with run_host(tmp_path, toml) as host:
        charged = await activate_cli(
            f"127.0.0.1:{host.port}", "--product", "Windows Server 2019 Datacenter", "--charge", "3"
        )
        again = await activate_cli(f"127.0.0.1:{host.port}", "-n", "2", "--new-connection")
    assert charged.code == 0, charged
    assert [line["count"] for line in charged.lines] == [1, 2, 3]
    assert len({line["cmid"] for line in charged.lines}) == 3
    assert {line["threshold"] for line in charged.lines} == {5}
    assert [line["count"] for line in again.lines] == [4, 4]  # one more machine, asking twice
    assert [event["call_id"] for event in host.events("activation")[3:]] == [2, 2]


@pytest.mark.asyncio
async def test_failures_have_their_exit_codes(tmp_path: Path) -> None:
    toml = '[host]\nscope = ["office-2019"]\n'
    async with run_host(tmp_path, toml) as host:
        refused = await activate_cli(f"127.0.0.1:{host.port}")
        ambiguous = await activate_cli(f"127.0.0.1:{host.port}", "--product", "Enterprise")
    closed = await activate_cli(f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert (refused.code, refused.lines[0]["hresult"]) == (EXIT_HRESULT, "0xC004F042")
    assert ambiguous.code == EXIT_USAGE
    assert "Windows 10/11 Enterprise  (--sku 73111121" in ambiguous.stderr
    assert closed.code == EXIT_UNAVAILABLE
    assert (closed.lines[0]["stage"], closed.lines[0]["hresult"]) == ("connect", "0xC004F074")


# --- --discover through a real BIND ----------------------------------------------------------


@pytest.mark.asyncio
async def test_discover_finds_the_host_the_daemon_published(tmp_path: Path, named: Named) -> None:
    toml = f'[dns]\nzone = "lab.example"\n[dns.publish]\nserver = "127.0.0.1:{named.port}"\n'
    dns_server = f"127.0.0.1:{named.port}"
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with run_host(tmp_path, toml) as host:
            await eventually(lambda: bool(host.events("dns_published")))
            found = await activate_cli("--discover", "lab.example", "--dns-server", dns_server)
        gone = await activate_cli("--discover", "lab.example", "--dns-server", dns_server)
    assert found.code == 0, found
    assert found.lines[0]["target"] == f"127.0.0.1:{host.port}"
    assert host.events("activation")[0]["result"] == "activated"
    assert gone.code == EXIT_NO_HOST  # withdrawn on the clean stop
    assert (gone.lines[0]["stage"], gone.lines[0]["hresult"]) == ("discover", "0x8007232B")


@pytest.mark.asyncio
async def test_discover_fails_over_to_the_second_host(tmp_path: Path, named: Named) -> None:
    config = named.publish_config("failover.example")
    dns_server = f"127.0.0.1:{named.port}"
    args = ("--discover", "failover.example", "--dns-server", dns_server)
    async with asyncio.timeout(TEST_TIMEOUT_S), run_host(tmp_path) as host:
        primary = SrvTarget("primary.failover.example", free_port(), 0, 0, ("127.0.0.1",))
        backup = SrvTarget("backup.failover.example", host.port, 10, 0, ("127.0.0.1",))
        await publish(config, [primary, backup])
        try:
            run = await activate_cli(*args, "-n", "2", "--new-connection")
        finally:
            await withdraw(config, [primary, backup])
        dead = SrvTarget("backup.failover.example", free_port(), 10, 0, ("127.0.0.1",))
        await publish(config, [primary, dead])
        try:
            nobody = await activate_cli(*args, "--timeout", "2")
        finally:
            await withdraw(config, [primary, dead])
    assert run.code == 0, run
    assert [line["target"] for line in run.lines] == [f"127.0.0.1:{host.port}"] * 2
    assert "discovery_host_failed" in run.stderr  # the primary was tried first, once
    assert run.stderr.count("discovery_host_failed") == 1
    assert nobody.code == EXIT_UNAVAILABLE
    assert nobody.lines[0]["hresult"] == "0xC004F074"


@pytest.mark.asyncio
async def test_discover_without_a_record_is_0x8007232b(named: Named) -> None:
    dns_server = f"127.0.0.1:{named.port}"
    async with asyncio.timeout(TEST_TIMEOUT_S):
        run = await activate_cli("--discover", "nothing.lab.example", "--dns-server", dns_server)
    assert run.code == EXIT_NO_HOST
    assert run.lines == [
        {
            "request": None,
            "ok": False,
            "stage": "discover",
            "hresult": "0x8007232B",
            "error": run.lines[0]["error"],
        }
    ]
