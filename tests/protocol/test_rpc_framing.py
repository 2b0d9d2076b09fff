"""FrameBuffer: whole, byte at a time, coalesced, oversize (h11's tr() pattern, spec 1.1)."""

from __future__ import annotations

import struct

import pytest
from rpc_vectors import Conversation, load_conversations

from protocol.errors import FramingError
from protocol.rpc.framing import FrameBuffer

CONVERSATIONS = load_conversations()


def _header(
    *, vers: int = 5, minor: int = 0, ptype: int = 0, drep: int = 0x10, length: int = 16
) -> bytes:
    return struct.pack("<BBBBBxxxHHI", vers, minor, ptype, 3, drep, length, 0, 1)


def _frames_of(buffer: FrameBuffer) -> list[bytes]:
    frames = []
    while (frame := buffer.next_frame()) is not None:
        frames.append(frame)
    return frames


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=str)
def test_each_captured_pdu_fed_whole(conversation: Conversation) -> None:
    buffer = FrameBuffer(4096)
    for connection in conversation.connections:
        for exchange in connection:
            buffer.feed(exchange.data)
            assert _frames_of(buffer) == [exchange.data]
            assert buffer.buffered == 0


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=str)
def test_captured_stream_fed_byte_at_a_time(conversation: Conversation) -> None:
    buffer = FrameBuffer(4096)
    for connection in conversation.connections:
        expected = [exchange.data for exchange in connection]
        frames: list[bytes] = []
        for byte in b"".join(expected):
            buffer.feed(bytes([byte]))
            frames.extend(_frames_of(buffer))
        assert frames == expected


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=str)
def test_captured_stream_coalesced(conversation: Conversation) -> None:
    for connection in conversation.connections:
        expected = [exchange.data for exchange in connection]
        buffer = FrameBuffer(4096)
        assert list(buffer.receive(b"".join(expected))) == expected


def test_receive_slices_reads_larger_than_the_cap() -> None:
    frame = _header(length=100) + bytes(84)
    buffer = FrameBuffer(150)
    assert list(buffer.receive(frame * 20)) == [frame] * 20
    assert buffer.buffered == 0
    assert buffer.room == 150


def test_incomplete_frame_waits() -> None:
    buffer = FrameBuffer(4096)
    frame = _header(length=40) + bytes(24)
    buffer.feed(frame[:15])
    assert buffer.next_frame() is None  # header incomplete: nothing checked yet
    buffer.feed(frame[15:39])
    assert buffer.next_frame() is None
    assert buffer.buffered == 39
    buffer.feed(frame[39:] + frame[:3])
    assert buffer.next_frame() == frame
    assert buffer.buffered == 3


def test_frag_length_equal_to_cap_is_accepted() -> None:
    buffer = FrameBuffer(64)
    frame = _header(length=64) + bytes(48)
    buffer.feed(frame)
    assert buffer.next_frame() == frame
    assert buffer.room == 64


@pytest.mark.parametrize("length", [0, 8, 15, 65, 0xFFFF])
def test_frag_length_outside_bounds(length: int) -> None:
    buffer = FrameBuffer(64)
    buffer.feed(_header(length=length))
    with pytest.raises(FramingError, match="frag_length"):
        buffer.next_frame()


def test_oversize_header_is_refused_before_its_body_arrives() -> None:
    """A 65535-byte PDU is refused from its header alone: nothing more is buffered."""
    buffer = FrameBuffer(4096)
    buffer.feed(_header(ptype=0x0B, length=0xFFFF))
    with pytest.raises(FramingError):
        buffer.next_frame()


def test_feed_never_buffers_more_than_the_cap() -> None:
    buffer = FrameBuffer(32)
    buffer.feed(bytes(20))
    assert buffer.room == 12
    with pytest.raises(FramingError, match="max_pdu_bytes 32"):
        buffer.feed(bytes(13))
    assert buffer.buffered == 20


@pytest.mark.parametrize(
    ("vers", "minor", "ptype"),
    [(4, 0, 0x00), (6, 0, 0x00), (5, 2, 0x00), (5, 0xFF, 0x0E), (0x47, 0x45, 0x54), (0, 0, 0)],
)
def test_unsupported_versions_are_framing_errors(vers: int, minor: int, ptype: int) -> None:
    buffer = FrameBuffer(4096)
    buffer.feed(_header(vers=vers, minor=minor, ptype=ptype))
    with pytest.raises(FramingError, match="RPC version"):
        buffer.next_frame()


@pytest.mark.parametrize(("vers", "minor"), [(5, 0), (5, 1), (4, 0), (5, 7)])
def test_binds_of_any_version_are_framed_for_bind_nak(vers: int, minor: int) -> None:
    buffer = FrameBuffer(4096)
    frame = _header(vers=vers, minor=minor, ptype=0x0B)
    buffer.feed(frame)
    assert buffer.next_frame() == frame


@pytest.mark.parametrize("minor", [0, 1])
def test_minor_versions_0_and_1_are_accepted(minor: int) -> None:
    buffer = FrameBuffer(4096)
    buffer.feed(_header(minor=minor))
    assert buffer.next_frame() is not None


@pytest.mark.parametrize("drep", [0x00, 0x01, 0x20, 0xF0])
def test_non_little_endian_drep_is_refused(drep: int) -> None:
    buffer = FrameBuffer(4096)
    buffer.feed(_header(drep=drep))
    with pytest.raises(FramingError, match="data representation"):
        buffer.next_frame()


def test_ebcdic_character_nibble_is_not_checked() -> None:
    buffer = FrameBuffer(4096)
    buffer.feed(_header(drep=0x11))
    assert buffer.next_frame() is not None


def test_cap_below_header_size_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        FrameBuffer(15)
