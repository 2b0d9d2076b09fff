"""Loaders for the KMS vectors in ``tests/vectors`` (provenance in its README).

Two sources, both independent of our builders: ``spec-vectors.json`` (hand-transcribed from
the specification and FIPS-197) and the captured vlmcsd / py-kms conversations, from which
each request/response pair is cut out of its RPC PDUs here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from protocol.kms import KmsRequest, KmsResponse, ProtocolVersion

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
CONVERSATION_FILES = ("vlmcsd-conversations.jsonl", "pykms-conversations.jsonl")

# Stub header in front of the KMS message in a request PDU (spec 3.2.1, 3.2.2).
_REQUEST_STUB_OFFSET = {"ndr32": 24 + 8, "ndr64": 24 + 16}
_SIZE_FIELD = slice(24, 28)  # requestSize / *responseSize, first u32 of both stubs


@cache
def spec_vectors() -> dict[str, Any]:
    """The hand-transcribed vectors of spec 5.2, 5.3 and 5.8 plus FIPS-197 C.1."""
    with (VECTORS / "spec-vectors.json").open(encoding="utf-8") as file:
        data: dict[str, Any] = json.load(file)
    return data


def h(text: str) -> bytes:
    """Hex to bytes (vectors store hex strings)."""
    return bytes.fromhex(text)


def fixed_rng(*values: bytes) -> Callable[[int], bytes]:
    """An ``rng`` returning the given values in order, checking each requested size."""
    queue = list(values)

    def rng(size: int) -> bytes:
        value = queue.pop(0)
        assert len(value) == size
        return value

    return rng


def spec_request(version: ProtocolVersion) -> KmsRequest:
    """The base request of spec 5.8 in the given version."""
    fields = spec_vectors()["exchange"]["request"]
    return KmsRequest(
        version=version,
        is_client_vm=fields["is_client_vm"],
        license_status=fields["license_status"],
        grace_time_min=fields["grace_time_min"],
        application_id=uuid.UUID(fields["application_id"]),
        sku_id=uuid.UUID(fields["sku_id"]),
        kms_counted_id=uuid.UUID(fields["kms_counted_id"]),
        client_machine_id=uuid.UUID(fields["client_machine_id"]),
        required_client_count=fields["required_client_count"],
        request_time=fields["request_time"],
        previous_client_machine_id=uuid.UUID(fields["previous_client_machine_id"]),
        machine_name=fields["machine_name"],
    )


def spec_response(version: ProtocolVersion) -> KmsResponse:
    """The server settings of spec 5.8 answering :func:`spec_request`."""
    fields = spec_vectors()["exchange"]["response"]
    request = spec_request(version)
    return KmsResponse(
        version=version,
        epid=fields["epid"],
        client_machine_id=request.client_machine_id,
        response_time=request.request_time,
        current_client_count=fields["current_client_count"],
        activation_interval_min=fields["activation_interval_min"],
        renewal_interval_min=fields["renewal_interval_min"],
    )


@dataclass(frozen=True)
class CapturedCall:
    """One request/response pair cut out of a captured conversation."""

    id: str
    request_message: bytes
    response_message: bytes
    request_kms: dict[str, Any]
    response_kms: dict[str, Any]

    @property
    def version(self) -> ProtocolVersion:
        return ProtocolVersion(self.request_kms["kms_version"])

    def expected_request(self) -> KmsRequest:
        fields = self.request_kms["request"]
        major, minor = fields["version"].split(".")
        assert minor == "0"
        return KmsRequest(
            version=ProtocolVersion(int(major)),
            is_client_vm=fields["is_client_vm"],
            license_status=fields["license_status"],
            grace_time_min=fields["binding_expiration_min"],
            application_id=uuid.UUID(fields["application_id"]),
            sku_id=uuid.UUID(fields["sku_id"]),
            kms_counted_id=uuid.UUID(fields["kms_counted_id"]),
            client_machine_id=uuid.UUID(fields["client_machine_id"]),
            required_client_count=fields["required_client_count"],
            request_time=fields["request_time_filetime"],
            previous_client_machine_id=uuid.UUID(fields["previous_client_machine_id"]),
            machine_name=fields["workstation_name"],
        )

    def expected_response(self) -> KmsResponse:
        fields = self.response_kms["response"]
        major, minor = fields["version"].split(".")
        assert minor == "0"
        return KmsResponse(
            version=ProtocolVersion(int(major)),
            epid=fields["epid"],
            client_machine_id=uuid.UUID(fields["client_machine_id"]),
            response_time=fields["response_time_filetime"],
            current_client_count=fields["current_client_count"],
            activation_interval_min=fields["activation_interval_min"],
            renewal_interval_min=fields["renewal_interval_min"],
        )

    def hwid(self) -> bytes | None:
        """The HwId the host sent (V6 records only)."""
        text = self.response_kms.get("hwid")
        return None if text is None else h(text)

    def server_randoms(self) -> tuple[bytes, ...]:
        """What the host drew, in the order ``seal_response`` asks its rng: R, then S (V6)."""
        random = self.response_kms["random"]
        return tuple(h(random[key]) for key in ("salt", "response_iv_wire") if key in random)


def _kms_message(pdu_hex: str, pdu: dict[str, Any]) -> bytes:
    raw = h(pdu_hex)
    size = int.from_bytes(raw[_SIZE_FIELD], "little")
    if pdu["ptype"] == "request":
        offset = _REQUEST_STUB_OFFSET[pdu["ndr"]]
    else:
        offset = pdu["kms_data_offset"]
    message = raw[offset : offset + size]
    assert len(message) == size
    return message


def _calls(record: dict[str, Any]) -> Iterator[CapturedCall]:
    kms_pdus = [
        (exchange["hex"], pdu)
        for exchange, pdu in zip(record["exchanges"], record["pdus"], strict=True)
        if pdu["ptype"] in {"request", "response"}
    ]
    for index in range(0, len(kms_pdus), 2):
        (request_hex, request), (response_hex, response) = kms_pdus[index : index + 2]
        assert (request["ptype"], response["ptype"]) == ("request", "response")
        yield CapturedCall(
            id=f"{record['name']}#{index // 2}",
            request_message=_kms_message(request_hex, request),
            response_message=_kms_message(response_hex, response),
            request_kms=request["kms"],
            response_kms=response["kms"],
        )


@cache
def captured_calls() -> tuple[CapturedCall, ...]:
    """Every request/response pair of every captured conversation."""
    calls: list[CapturedCall] = []
    for name in CONVERSATION_FILES:
        with (VECTORS / name).open(encoding="utf-8") as file:
            for line in file:
                calls.extend(_calls(json.loads(line)))
    return tuple(calls)
