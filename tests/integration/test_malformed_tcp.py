"""Every captured malformed input, sent over real TCP, leaves the daemon serving.

The inputs and what vlmcsd and py-kms did with them are in tests/vectors/malformed.jsonl.
Each one gets its own connection (preamble first when the entry has one, segments 50 ms apart,
half-close when asked); afterwards a valid client must still activate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from harness import make_request, run_host

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "malformed.jsonl"
ENTRIES = [json.loads(line) for line in VECTORS.read_text().splitlines() if line.strip()]
# A short idle timeout so the truncated inputs (which stop mid-PDU) are closed by the host.
TOML = "[server]\nidle_timeout_s = 1\n"


async def read_until_quiet(reader: asyncio.StreamReader, quiet_s: float) -> tuple[bytes, bool]:
    """Read what the host sends until it closes (True) or stays quiet for ``quiet_s``."""
    received = b""
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), quiet_s)
        except TimeoutError:
            return received, False
        except ConnectionError:
            return received, True
        if not chunk:
            return received, True
        received += chunk


async def send_entry(port: int, entry: dict[str, Any]) -> tuple[bytes, bool]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if "preamble_hex" in entry:
            writer.write(bytes.fromhex(entry["preamble_hex"]))
            await writer.drain()
            ack = await asyncio.wait_for(reader.read(65536), 5)
            assert ack[2] == 0x0C, "the preamble bind must be acknowledged"
        data = bytes.fromhex(entry["hex"])
        offset = 0
        for size in entry.get("send_as_segments", [len(data)]):
            writer.write(data[offset : offset + size])
            await writer.drain()
            offset += size
            await asyncio.sleep(0.05)
        if entry.get("half_close_after_send"):
            writer.write_eof()
        return await read_until_quiet(reader, quiet_s=2.0)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def ptypes(stream: bytes) -> list[int]:
    """PDU types in a reply stream, split by frag_length."""
    found = []
    while len(stream) >= 16:
        found.append(stream[2])
        stream = stream[int.from_bytes(stream[8:10], "little") :]
    return found


EXPECTED_PTYPES = {
    "request_before_bind": [0x03],
    "request_unknown_context_id": [0x03],
    "request_unknown_opnum_5": [0x03],
    "request_kms_version_7": [0x02],
    "request_kms_version_6_1": [0x02],
    "request_truncated_kms_payload": [0x02],
    "request_corrupted_ciphertext": [0x02],
    "valid_bind_split_in_two_segments": [0x0C],
    "valid_request_split_in_two_segments": [0x02],
    "valid_bind_and_request_coalesced": [0x0C, 0x02],
    "garbage_http_get": [],
    "garbage_zeros_64": [],
    "unknown_ptype_ping": [],
    "unknown_ptype_0x7f": [],
}


@pytest.mark.asyncio
async def test_every_malformed_input_leaves_the_host_serving(tmp_path: Path) -> None:
    async with run_host(tmp_path, TOML) as host:
        outcomes = {}
        for entry in ENTRIES:
            outcomes[entry["name"]] = await send_entry(host.port, entry)
        async with await host.client() as client:
            result = await client.activate(make_request())
    assert result.hresult == 0
    assert result.response is not None
    for name, expected in EXPECTED_PTYPES.items():
        assert ptypes(outcomes[name][0]) == expected, name
    for name in ("garbage_http_get", "garbage_zeros_64", "truncated_bind_header_10_bytes"):
        assert outcomes[name][1], f"{name}: the host should have closed the connection"
    assert not any(e.get("event") == "connection_failed" for e in host.logs)
    assert len(ENTRIES) == 33
