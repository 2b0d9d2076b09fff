"""KMS codec: parse/build triads on the spec vectors, string rules, errors, round trips."""

from __future__ import annotations

import struct
import uuid
from dataclasses import replace

import pytest
from hypothesis import given
from kms_strategies import requests, responses
from kms_vectors import h, spec_request, spec_response, spec_vectors

from protocol.errors import KmsMalformed
from protocol.kms import KmsRequest, KmsResponse, ProtocolVersion, codec, schema

EXCHANGE = spec_vectors()["exchange"]
V4_REQUEST = h(EXCHANGE["v4"]["request"])
V4_RESPONSE = h(EXCHANGE["v4"]["response"])
BASE_REQUEST = V4_REQUEST[:236]
BASE_RESPONSE = V4_RESPONSE[:-16]
NAME_OFFSET = 108


def test_guid_is_mixed_endian() -> None:
    # Spec 0.1's example: the KMS interface UUID and its wire bytes, as the ApplicationId
    # field of a base request (offset 16, spec 4.2).
    wire = h("7521c8514e845047b0d8ec255555bc06")
    value = uuid.UUID("51c82175-844e-4750-b0d8-ec255555bc06")
    request = codec.parse_request(BASE_REQUEST[:16] + wire + BASE_REQUEST[32:])
    assert request.application_id == value
    assert codec.build_request(request)[16:32] == wire


def test_base_request_triad() -> None:
    request = codec.parse_request(BASE_REQUEST)
    assert request == spec_request(ProtocolVersion.V4)
    assert codec.build_request(request) == BASE_REQUEST
    assert schema.BaseRequest.sizeof() == schema.BASE_REQUEST_SIZE


def test_base_response_triad() -> None:
    response, size = codec.parse_response(BASE_RESPONSE)
    assert response == spec_response(ProtocolVersion.V4)
    assert size == len(BASE_RESPONSE) == 144
    assert codec.build_response(response) == BASE_RESPONSE


def test_parse_response_reports_where_the_tail_starts() -> None:
    response, size = codec.parse_response(BASE_RESPONSE + b"tail bytes")
    assert size == 144
    assert response.epid == EXCHANGE["response"]["epid"]


def test_v4_request_split_and_join() -> None:
    base, mac = codec.parse_v4_request(V4_REQUEST + b"excess")
    assert (base, mac) == (BASE_REQUEST, V4_REQUEST[236:])
    assert codec.build_v4_request(base, mac) == V4_REQUEST


def test_envelope_triad() -> None:
    data = h(EXCHANGE["v6"]["request"])
    envelope = codec.parse_envelope(data)
    assert (envelope.major, envelope.minor) == (6, 0)
    assert envelope.iv == h(EXCHANGE["client_iv"])
    assert len(envelope.ciphertext) == 240
    assert codec.build_envelope(envelope) == data


@pytest.mark.parametrize("version", [ProtocolVersion.V5, ProtocolVersion.V6])
def test_tail_triad(version: ProtocolVersion) -> None:
    v6 = version == ProtocolVersion.V6
    tail = codec.ResponseTail(
        random_xored_ivs=bytes(range(16)),
        hash=bytes(range(32, 64)),
        hwid=b"HWID0123" if v6 else None,
        xored_ivs=bytes(range(100, 116)) if v6 else None,
    )
    data = codec.build_tail(tail)
    assert len(data) == (72 if v6 else 48)
    parts = (tail.random_xored_ivs, tail.hash, tail.hwid, tail.xored_ivs)
    assert data == b"".join(part for part in parts if part)
    assert codec.parse_tail(data, version) == tail


def test_parse_version() -> None:
    assert codec.parse_version(b"\x00\x00\x06\x00") == (6, 0)
    assert codec.parse_version(b"\x01\x00\x07\x00rest") == (7, 1)
    with pytest.raises(KmsMalformed):
        codec.parse_version(b"\x00\x00\x06")


def _with_name(raw_name: bytes) -> bytes:
    return BASE_REQUEST[:NAME_OFFSET] + raw_name.ljust(128, b"\x00")


@pytest.mark.parametrize(
    ("raw_name", "expected"),
    [
        pytest.param("TESTPC".encode("utf-16-le"), "TESTPC", id="plain"),
        pytest.param("PC\x00junk".encode("utf-16-le"), "PC", id="garbage-after-nul"),
        pytest.param(b"A\x00\x00B\x00\x00", "A\u4200", id="nul-bytes-straddling-units"),
        pytest.param("x".encode("utf-16-le") * 64, "x" * 64, id="no-terminator"),
        pytest.param("\u00e9\U0001f600".encode("utf-16-le"), "\u00e9\U0001f600", id="non-ascii"),
        pytest.param(b"\x00\xd8A\x00", "\ufffdA", id="lone-surrogate-replaced"),
        pytest.param(b"", "", id="empty"),
    ],
)
def test_machine_name_decoding(raw_name: bytes, expected: str) -> None:
    assert codec.parse_request(_with_name(raw_name)).machine_name == expected


@pytest.mark.parametrize("name", ["x" * 63, "\U0001f600" * 31 + "x", ""])
def test_machine_name_encoding_limits_accept(name: str) -> None:
    request = replace(spec_request(ProtocolVersion.V5), machine_name=name)
    data = codec.build_request(request)
    assert len(data) == 236
    assert codec.parse_request(data).machine_name == name


@pytest.mark.parametrize("name", ["x" * 64, "\U0001f600" * 32, "a\x00b", "\ud800"])
def test_machine_name_encoding_limits_reject(name: str) -> None:
    request = replace(spec_request(ProtocolVersion.V5), machine_name=name)
    with pytest.raises(KmsMalformed):
        codec.build_request(request)


def _response_with_epid(raw_epid: bytes, pid_size: int | None = None) -> bytes:
    size = len(raw_epid) if pid_size is None else pid_size
    return BASE_RESPONSE[:4] + struct.pack("<I", size) + raw_epid + BASE_RESPONSE[108:]


@pytest.mark.parametrize(
    ("raw_epid", "pid_size"),
    [
        pytest.param("1" * 64, None, id="pidsize-130"),
        pytest.param("1" * 10, 21, id="odd-pidsize"),
        pytest.param("", 0, id="pidsize-0"),
        pytest.param("12\x0034", None, id="nul-inside"),
        pytest.param("1234", 8, id="not-nul-terminated"),
        pytest.param("1" * 10, 4096, id="pidsize-beyond-message"),
    ],
)
def test_parse_response_enforces_epid_rules(raw_epid: str, pid_size: int | None) -> None:
    encoded = raw_epid.encode("utf-16-le") + (b"\x00\x00" if pid_size is None else b"")
    with pytest.raises(KmsMalformed):
        codec.parse_response(_response_with_epid(encoded, pid_size))


def test_parse_response_rejects_undecodable_epid() -> None:
    with pytest.raises(KmsMalformed, match="UTF-16"):
        codec.parse_response(_response_with_epid(b"\x00\xdc\x00\x00"))


def test_parse_response_accepts_63_character_epid() -> None:
    epid = ("9" * 63 + "\x00").encode("utf-16-le")
    response, size = codec.parse_response(_response_with_epid(epid))
    assert response.epid == "9" * 63
    assert size == 44 + 128


@pytest.mark.parametrize("epid", ["9" * 64, "12\x0034", "\udc00"])
def test_build_response_rejects_bad_epid(epid: str) -> None:
    response = replace(spec_response(ProtocolVersion.V4), epid=epid)
    with pytest.raises(KmsMalformed):
        codec.build_response(response)


@pytest.mark.parametrize(
    ("field", "value"),
    [("current_client_count", -1), ("renewal_interval_min", 1 << 32), ("response_time", 1 << 64)],
)
def test_build_response_rejects_out_of_range_integers(field: str, value: int) -> None:
    response = replace(spec_response(ProtocolVersion.V4), **{field: value})
    with pytest.raises(KmsMalformed):
        codec.build_response(response)


@pytest.mark.parametrize("version_word", ["00000700", "01000600", "00000300"])
def test_parse_rejects_unknown_inner_versions(version_word: str) -> None:
    with pytest.raises(KmsMalformed, match="version"):
        codec.parse_request(h(version_word) + BASE_REQUEST[4:])
    with pytest.raises(KmsMalformed, match="version"):
        codec.parse_response(h(version_word) + BASE_RESPONSE[4:])


@pytest.mark.parametrize("size", [0, 3, 100, 235])
def test_short_messages_are_malformed(size: int) -> None:
    with pytest.raises(KmsMalformed):
        codec.parse_request(BASE_REQUEST[:size])
    with pytest.raises(KmsMalformed):
        codec.parse_v4_request(V4_REQUEST[: size + 16])
    with pytest.raises(KmsMalformed):
        codec.parse_response(BASE_RESPONSE[: size // 2])
    with pytest.raises(KmsMalformed):
        codec.parse_envelope(V4_REQUEST[: min(size, 19)])


@given(requests())
def test_request_round_trip(request: KmsRequest) -> None:
    assert codec.parse_request(codec.build_request(request)) == request


@given(responses())
def test_response_round_trip(response: KmsResponse) -> None:
    data = codec.build_response(response)
    assert codec.parse_response(data) == (response, len(data))
