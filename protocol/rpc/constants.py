"""DCE/RPC constants used by the KMS interface (spec sections 1.3, 1.4, 2.1, 2.4).

UUIDs are :class:`uuid.UUID` values; their wire form is ``bytes_le`` (spec 0.1).
"""

from __future__ import annotations

import enum
import uuid

__all__ = [
    "BTFN_PREFIX",
    "BTFN_SUPPORTED",
    "KMS_INTERFACE",
    "KMS_INTERFACE_VERSION",
    "NDR32_SYNTAX",
    "NDR32_VERSION",
    "NDR64_SYNTAX",
    "NDR64_VERSION",
    "PFC",
    "ContextResult",
    "PType",
    "ProviderReason",
    "TransferSyntax",
]

KMS_INTERFACE = uuid.UUID("51c82175-844e-4750-b0d8-ec255555bc06")
KMS_INTERFACE_VERSION = 1  # u32le 0x00000001: major 1, minor 0
NDR32_SYNTAX = uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860")
NDR32_VERSION = 2
NDR64_SYNTAX = uuid.UUID("71710533-beba-4937-8319-b5dbef9ccc36")
NDR64_VERSION = 1
# Bind-time feature negotiation is recognised by the first 8 wire bytes only (spec 2.6, 10.3).
BTFN_PREFIX = bytes.fromhex("2c1cb76c12984045")
BTFN_SUPPORTED = 0x03  # security-context multiplexing | keep connection on orphan


class PType(enum.IntEnum):
    """PDU types of the connection-oriented protocol (spec 1.3)."""

    REQUEST = 0x00
    RESPONSE = 0x02
    FAULT = 0x03
    BIND = 0x0B
    BIND_ACK = 0x0C
    BIND_NAK = 0x0D
    ALTER_CONTEXT = 0x0E
    ALTER_CONTEXT_RESP = 0x0F
    AUTH3 = 0x10
    SHUTDOWN = 0x11
    CO_CANCEL = 0x12
    ORPHANED = 0x13


class PFC(enum.IntFlag):
    """``pfc_flags`` bits (spec 1.4)."""

    FIRST_FRAG = 0x01
    LAST_FRAG = 0x02
    PENDING_CANCEL = 0x04
    CONC_MPX = 0x10
    DID_NOT_EXECUTE = 0x20
    MAYBE = 0x40
    OBJECT_UUID = 0x80


class ContextResult(enum.IntEnum):
    """``p_result.result`` values (spec 2.4)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    PROVIDER_REJECTION = 2
    NEGOTIATE_ACK = 3


class ProviderReason(enum.IntEnum):
    """``p_result.reason`` for a provider rejection (spec 2.4)."""

    NOT_SPECIFIED = 0
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 1
    PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED = 2
    LOCAL_LIMIT_EXCEEDED = 3


class TransferSyntax(enum.Enum):
    """The two NDR encodings a KMS request can arrive in (spec 3.2.1, 3.2.2)."""

    NDR32 = "ndr32"
    NDR64 = "ndr64"
