"""Hypothesis strategies for KMS messages, shared by the codec and crypto property tests."""

from __future__ import annotations

import uuid

from hypothesis import strategies as st

from protocol.kms import KmsRequest, KmsResponse, ProtocolVersion

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
blocks = st.binary(min_size=16, max_size=16)
guids = st.uuids(version=4) | st.builds(uuid.UUID, bytes=blocks)
# Any text without NUL or lone surrogates; at most 31 code points is at most 62 code units.
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=31)
# What a strict client accepts as an ePID (spec 6.1: ASCII; 63 characters at most).
epids = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=63)


def requests(version: ProtocolVersion | None = None) -> st.SearchStrategy[KmsRequest]:
    """Any base request, optionally of one version."""
    return st.builds(
        KmsRequest,
        version=st.sampled_from(ProtocolVersion) if version is None else st.just(version),
        is_client_vm=u32,
        license_status=u32,
        grace_time_min=u32,
        application_id=guids,
        sku_id=guids,
        kms_counted_id=guids,
        client_machine_id=guids,
        required_client_count=u32,
        request_time=u64,
        previous_client_machine_id=guids,
        machine_name=texts,
    )


def responses(epid: st.SearchStrategy[str] = texts) -> st.SearchStrategy[KmsResponse]:
    """Any base response (the codec accepts any NUL-free ePID of up to 63 code units)."""
    return st.builds(
        KmsResponse,
        version=st.sampled_from(ProtocolVersion),
        epid=epid,
        client_machine_id=guids,
        response_time=u64,
        current_client_count=u32,
        activation_interval_min=u32,
        renewal_interval_min=u32,
    )


def answers(request: KmsRequest) -> st.SearchStrategy[KmsResponse]:
    """A response a correct host could send to ``request``: echoed CMID, time and version."""
    return st.builds(
        KmsResponse,
        version=st.just(request.version),
        epid=epids,
        client_machine_id=st.just(request.client_machine_id),
        response_time=st.just(request.request_time),
        current_client_count=u32,
        activation_interval_min=u32,
        renewal_interval_min=u32,
    )
