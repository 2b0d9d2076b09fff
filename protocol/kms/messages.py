"""Typed KMS messages: what ``protocol.kms`` hands to and takes from its callers.

These frozen dataclasses mirror the base request (spec 4.2) and base response (spec 4.5).
Construct containers never leave the codec module; everything above it sees these.
GUIDs are :class:`uuid.UUID` (their wire form is mixed-endian, spec 0.1) and times are
FILETIME integers (100 ns since 1601-01-01 UTC), exactly as on the wire, so that the
response can echo the request time byte for byte (spec 5.6, 10.17).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "FILETIME_EPOCH",
    "KmsRequest",
    "KmsResponse",
    "LicenseStatus",
    "ProtocolVersion",
    "datetime_to_filetime",
    "filetime_to_datetime",
]

FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


def filetime_to_datetime(filetime: int) -> datetime:
    """Convert a FILETIME (100 ns ticks since 1601) to an aware UTC datetime."""
    return FILETIME_EPOCH + timedelta(microseconds=filetime // 10)


def datetime_to_filetime(moment: datetime) -> int:
    """Convert an aware datetime to a FILETIME (spec 0.1)."""
    delta = moment.astimezone(UTC) - FILETIME_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


class ProtocolVersion(enum.IntEnum):
    """The three KMS protocol versions a host answers (major number; minor is always 0)."""

    V4 = 4
    V5 = 5
    V6 = 6


class LicenseStatus(enum.IntEnum):
    """The client's license state as sent in the request (spec 4.2; slmgr /dlv counters)."""

    UNLICENSED = 0
    LICENSED = 1
    INITIAL_GRACE = 2
    OUT_OF_TOLERANCE_GRACE = 3
    NON_GENUINE_GRACE = 4
    NOTIFICATION = 5
    EXTENDED_GRACE = 6


@dataclass(frozen=True, slots=True)
class KmsRequest:
    """The decrypted base request (spec 4.2), identical for V4, V5 and V6."""

    version: ProtocolVersion
    is_client_vm: int
    license_status: int
    grace_time_min: int
    application_id: uuid.UUID
    sku_id: uuid.UUID
    kms_counted_id: uuid.UUID
    client_machine_id: uuid.UUID
    required_client_count: int
    request_time: int
    previous_client_machine_id: uuid.UUID
    machine_name: str


@dataclass(frozen=True, slots=True)
class KmsResponse:
    """The base response (spec 4.5). ``response_time`` must be the request's time."""

    version: ProtocolVersion
    epid: str
    client_machine_id: uuid.UUID
    response_time: int
    current_client_count: int
    activation_interval_min: int
    renewal_interval_min: int
