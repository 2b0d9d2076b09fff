"""Typed access to the captured RPC vectors in ``tests/vectors`` (provenance: README there).

Expected values are taken from the captures and, where a field must be located, from
the byte offsets of the spec; nothing here uses kms-host's own codec, so the tests that
use these helpers keep an independent oracle (architecture 4.11).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
CONVERSATION_FILES = ("vlmcsd-conversations.jsonl", "pykms-conversations.jsonl")

# Offsets of spec 3.2 / 3.3: request and response PDUs have a 24-byte header.
_PDU_HEADER = 24
_REQUEST_STUB_HEADER = {"ndr32": 8, "ndr64": 16}
_RESPONSE_STUB_HEADER = {"ndr32": 12, "ndr64": 24}


def _records(name: str) -> list[dict[str, Any]]:
    with (VECTORS / name).open(encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


@dataclass(frozen=True)
class Exchange:
    """One TCP read of the capture: exactly one PDU (vectors README)."""

    direction: str  # "c2s" or "s2c"
    data: bytes
    pdu: dict[str, Any]  # the capture's own decoding

    @property
    def ptype(self) -> str:
        return str(self.pdu["ptype"])

    @property
    def call_id(self) -> int:
        return int(self.pdu["call_id"])

    @property
    def ndr(self) -> str:
        return str(self.pdu["ndr"])

    def request_kms(self) -> bytes:
        """The KMS request of a request PDU, located by the spec 3.2 offsets."""
        start = _PDU_HEADER + _REQUEST_STUB_HEADER[self.ndr]
        (size,) = struct.unpack_from("<I", self.data, _PDU_HEADER)
        return self.data[start : start + size]

    def response_kms(self) -> bytes:
        """The KMS response of a successful response PDU (spec 3.4.1, 3.4.2 offsets)."""
        start = _PDU_HEADER + _RESPONSE_STUB_HEADER[self.ndr]
        assert start == self.pdu["kms_data_offset"]
        (size,) = struct.unpack_from("<I", self.data, _PDU_HEADER)
        return self.data[start : start + size]

    @property
    def stub(self) -> bytes:
        """Stub data of a request or response PDU (no object UUID in the captures)."""
        return self.data[_PDU_HEADER:]


@dataclass(frozen=True)
class Conversation:
    """One captured client/server run; ``connections`` holds each TCP connection's reads."""

    name: str
    client: str  # "vlmcs" or "pykms_Client"
    server: str  # "vlmcsd" or "py-kms"
    server_port: int
    server_options: tuple[str, ...]
    client_command: tuple[str, ...]
    connections: tuple[tuple[Exchange, ...], ...]

    @property
    def server_ndr64(self) -> bool:
        """vlmcsd runs with -N1 (NDR64 on); py-kms never accepts NDR64 (spec 2.5)."""
        return self.server == "vlmcsd" and "-N1" in self.server_options

    @property
    def client_ndr64(self) -> bool:
        return "-N1" in self.client_command

    @property
    def client_btfn(self) -> bool:
        return "-B0" not in self.client_command

    def __str__(self) -> str:
        return self.name


def load_conversations() -> list[Conversation]:
    conversations = []
    for file_name in CONVERSATION_FILES:
        for record in _records(file_name):
            by_connection: dict[int, list[Exchange]] = {}
            for raw, pdu in zip(record["exchanges"], record["pdus"], strict=True):
                exchange = Exchange(raw["dir"], bytes.fromhex(raw["hex"]), pdu)
                by_connection.setdefault(raw.get("conn", 1), []).append(exchange)
            conversations.append(
                Conversation(
                    name=record["name"],
                    client=record["client"],
                    server=record["server"],
                    server_port=int(record["server_port"]),
                    server_options=tuple(record["server_options"]),
                    client_command=tuple(record["client_command"].split()),
                    connections=tuple(tuple(c) for _, c in sorted(by_connection.items())),
                )
            )
    return conversations


def all_exchanges() -> list[tuple[str, Exchange]]:
    """Every captured PDU with an id for pytest parametrization."""
    return [
        (f"{conversation.name}-{index}-{exchange.ptype}", exchange)
        for conversation in load_conversations()
        for connection in conversation.connections
        for index, exchange in enumerate(connection)
    ]


def client_stream(connection: tuple[Exchange, ...]) -> bytes:
    return b"".join(exchange.data for exchange in connection if exchange.direction == "c2s")


def assoc_group_id(bind_ack: bytes) -> int:
    """bind_ack ``assoc_group_id`` at offset 20 (spec 2.3): random per connection."""
    (value,) = struct.unpack_from("<I", bind_ack, 20)
    return int(value)


@dataclass(frozen=True)
class MalformedCase:
    """A hand-made input from ``malformed.jsonl`` with how it was sent."""

    name: str
    data: bytes
    preamble: bytes | None  # a valid bind sent (and answered) first
    segments: tuple[int, ...] | None  # split ``data`` into TCP segments of these sizes
    half_close: bool  # the sender closed its side after ``data``
    observed: dict[str, str]

    def chunks(self) -> list[bytes]:
        if self.segments is None:
            return [self.data] if self.data else []
        assert sum(self.segments) == len(self.data)
        chunks, offset = [], 0
        for size in self.segments:
            chunks.append(self.data[offset : offset + size])
            offset += size
        return chunks

    def __str__(self) -> str:
        return self.name


def load_malformed() -> list[MalformedCase]:
    return [
        MalformedCase(
            name=record["name"],
            data=bytes.fromhex(record["hex"]),
            preamble=bytes.fromhex(record["preamble_hex"]) if "preamble_hex" in record else None,
            segments=tuple(record["send_as_segments"]) if "send_as_segments" in record else None,
            half_close=bool(record.get("half_close_after_send", False)),
            observed=record["observed"],
        )
        for record in _records("malformed.jsonl")
    ]


def fault_pdu(call_id: int, context_id: int, status: int) -> bytes:
    """A fault PDU assembled by hand from the spec 3.5 table (flags 0x23, alloc_hint 32)."""
    header = bytes([5, 0, 0x03, 0x23]) + b"\x10\x00\x00\x00" + struct.pack("<HHI", 32, 0, call_id)
    return header + struct.pack("<IHBBII", 32, context_id, 0, 0, status, 0)
