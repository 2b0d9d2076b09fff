"""The KMS layouts as derived (protocol.layout) give construct's own answers on everything.

``protocol.kms.schema`` is the one declaration of every layout; the codec runs it through
the readers and writers derived from it. With ``construct`` interpreting the same
declarations instead (``interpreted``, every memo cleared), each codec function gives the
same result, or KmsMalformed on both paths, for: every captured conversation and spec
vector, generated messages, arbitrary and truncated bytes, and out-of-range values to build.
The expected bytes themselves come from the captures and the spec vectors.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from construct import Struct
from hypothesis import given
from hypothesis import strategies as st
from interpreted import layouts, outcome
from interpreted import same as same_outcome
from kms_strategies import blocks, requests, responses
from kms_vectors import captured_calls, h, spec_request, spec_response, spec_vectors

from protocol.errors import KmsMalformed
from protocol.kms import ProtocolVersion, codec, schema
from protocol.kms._primitives import ZERO_BLOCK, cipher_for, strip_pkcs7

CALLS = captured_calls()
EXCHANGE = spec_vectors()["exchange"]
WIRE_MESSAGES = [
    h(EXCHANGE[version][kind]) for version in ("v4", "v5", "v6") for kind in ("request", "response")
]

PARSERS = ["parse_version", "parse_request", "parse_v4_request", "parse_envelope", "parse_response"]


def same(name: str, *args: Any) -> Any:
    """``codec.<name>`` on both paths: the result, or None once both raised KmsMalformed."""
    result = same_outcome(getattr(codec, name), *args)
    if result[0] == "error":
        assert result[1] is KmsMalformed
        return None
    return result[1]


def test_every_schema_declaration_is_run_by_exactly_one_derived_layout() -> None:
    declared = [value for value in vars(schema).values() if isinstance(value, Struct)]
    derived = [layout.declaration for owner, _, layout in layouts() if owner is codec]
    assert sorted(map(id, derived)) == sorted(map(id, declared))


def test_the_codec_fails_alike_outside_its_layouts() -> None:
    assert outcome(codec.parse_request, b"\x00\x00\x07\x00" + bytes(232))[1] is KmsMalformed


def _payload(message: bytes, version: ProtocolVersion) -> bytes:
    envelope = codec.parse_envelope(message)
    plaintext = cipher_for(version).cbc_decrypt(ZERO_BLOCK, envelope.iv + envelope.ciphertext)
    payload = strip_pkcs7(plaintext[16:])
    assert payload is not None
    return payload


@pytest.mark.parametrize("call", CALLS, ids=[call.id for call in CALLS])
def test_captured_conversations_agree(call: Any) -> None:
    request, response = call.request_message, call.response_message
    major, _ = same("parse_version", request)
    same("parse_version", response)
    version = ProtocolVersion(major)
    if version == ProtocolVersion.V4:
        base, mac = same("parse_v4_request", request)
        assert same("build_v4_request", base, mac) == request[:252]
        parsed = same("parse_request", base)
        assert same("build_request", parsed) == base
        body, tail_size = response[:-16], 0
    else:
        envelope = same("parse_envelope", request)
        assert same("build_envelope", envelope) == request
        same("parse_envelope", response)
        base = _payload(request, version)
        same("build_request", same("parse_request", base))
        body = _payload(response, version)
        tail_size = 72 if version == ProtocolVersion.V6 else 48
    parsed_response, size = same("parse_response", body)
    assert same("build_response", parsed_response) == body[:size]
    if tail_size:
        tail = same("parse_tail", body[size:], version)
        assert same("build_tail", tail) == body[size : size + tail_size]


@pytest.mark.parametrize("message", WIRE_MESSAGES)
@pytest.mark.parametrize("name", PARSERS)
def test_spec_messages_and_every_truncation_agree(name: str, message: bytes) -> None:
    for end in range(len(message) + 1):
        same(name, message[:end])


@given(st.binary(max_size=300))
def test_arbitrary_bytes_agree(data: bytes) -> None:
    for name in PARSERS:
        same(name, data)
    for version in (ProtocolVersion.V5, ProtocolVersion.V6):
        same("parse_tail", data, version)


@given(requests())
def test_generated_requests_agree(request: Any) -> None:
    data = same("build_request", request)
    same("parse_request", data)


@given(responses())
def test_generated_responses_agree(response: Any) -> None:
    data = same("build_response", response)
    same("parse_response", data + b"tail")


@given(blocks, st.binary(min_size=32, max_size=32), st.binary(max_size=9), st.binary(max_size=17))
def test_generated_tails_agree(rxi: bytes, digest: bytes, hwid: bytes, xored: bytes) -> None:
    same("build_tail", codec.ResponseTail(rxi, digest))
    same("build_tail", codec.ResponseTail(rxi, digest, hwid, xored))
    same("build_tail", codec.ResponseTail(rxi[:15], digest))


@pytest.mark.parametrize(
    ("field", "value"),
    [("current_client_count", -1), ("renewal_interval_min", 1 << 32), ("response_time", 1 << 64)],
)
def test_out_of_range_responses_fail_in_both(field: str, value: int) -> None:
    same("build_response", replace(spec_response(ProtocolVersion.V4), **{field: value}))


@pytest.mark.parametrize(
    ("field", "value"),
    [("license_status", -1), ("grace_time_min", 1 << 32), ("request_time", 1 << 64)],
)
def test_out_of_range_requests_fail_in_both(field: str, value: int) -> None:
    same("build_request", replace(spec_request(ProtocolVersion.V6), **{field: value}))


@pytest.mark.parametrize(("major", "iv"), [(6, bytes(15)), (1 << 16, bytes(16)), (-1, bytes(16))])
def test_bad_envelopes_fail_in_both(major: int, iv: bytes) -> None:
    same("build_envelope", codec.Envelope(major, 0, iv, bytes(16)))


@pytest.mark.parametrize(("base", "mac"), [(bytes(235), bytes(16)), (bytes(236), bytes(17))])
def test_bad_v4_parts_fail_in_both(base: bytes, mac: bytes) -> None:
    same("build_v4_request", base, mac)


def test_product_guid_cache_stays_bounded_and_correct() -> None:
    base = bytearray(codec.build_request(spec_request(ProtocolVersion.V6)))
    offsets = {"application_id": 16, "sku_id": 32, "kms_counted_id": 48}  # spec 4.2
    for n in range(codec.MAX_PRODUCT_GUIDS + 50):
        ids = {field: uuid.UUID(int=(n << 8) | i) for i, field in enumerate(offsets)}
        for field, offset in offsets.items():
            base[offset : offset + 16] = ids[field].bytes_le
        parsed = codec.parse_request(bytes(base))
        assert {field: getattr(parsed, field) for field in offsets} == ids
    assert len(codec._PRODUCT_GUIDS) <= codec.MAX_PRODUCT_GUIDS
