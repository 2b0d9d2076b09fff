"""Sightings for the client-table tests: a Windows 10/11 Pro client (spec 8.6), numbered."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

from kms_host.storage import Sighting
from protocol.kms import LicenseStatus

WIN10_SKU = uuid.UUID("2de67392-b7a7-462a-b1ca-108dd189f588")
WIN10_KMS = uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148")


def cmid(n: int) -> uuid.UUID:
    """Client ``n``'s machine ID, distinct for every ``n``."""
    return uuid.UUID(int=0x1000 + n)


def windows_sighting(n: int, *, seen_at: datetime, **changes: Any) -> Sighting:
    """Client ``n`` activating Windows 10/11 Pro at ``seen_at``; ``changes`` override fields."""
    base = Sighting(
        app="windows",
        cmid=cmid(n),
        machine_name=f"client{n:02}.lab.example",
        sku_id=WIN10_SKU,
        kms_id=WIN10_KMS,
        license_status=LicenseStatus.INITIAL_GRACE,
        is_vm=False,
        required_client_count=25,
        protocol_version="6.0",
        peer=f"192.0.2.{n % 250}:49152",
        hresult=0,
        seen_at=seen_at,
        counted=True,
    )
    return dataclasses.replace(base, **changes)
