"""``construct`` declarations of the KMS message layer (spec section 4; appendix A).

Layout only: no crypto, no time, no validation beyond what the layout implies. The codec
turns these Containers into :mod:`protocol.kms.messages` types; nothing else imports them.
All integers are little-endian (spec 0.1); GUIDs use Microsoft's mixed-endian layout.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from construct import (
    Adapter,
    Bytes,
    GreedyBytes,
    Int16ul,
    Int32ul,
    Int64ul,
    Rebuild,
    Struct,
    Tell,
    this,
)

if TYPE_CHECKING:
    from construct.core import Context

    _GuidBase = Adapter[bytes, bytes, uuid.UUID, uuid.UUID]
else:  # construct's classes are generic only in the construct-typing stubs
    _GuidBase = Adapter

__all__ = [
    "BASE_REQUEST_SIZE",
    "MACHINE_NAME_SIZE",
    "BaseRequest",
    "BaseResponse",
    "EncryptedMessage",
    "Guid",
    "V4Request",
    "V5ResponseTail",
    "V6ResponseTail",
    "Version",
]

BASE_REQUEST_SIZE = 236
MACHINE_NAME_SIZE = 128


class _GuidAdapter(_GuidBase):
    """Microsoft ``GUID`` (Data1 u32le, Data2 u16le, Data3 u16le, Data4) <-> UUID (spec 0.1)."""

    def _decode(self, obj: bytes, context: Context, path: str) -> uuid.UUID:
        return uuid.UUID(bytes_le=obj)

    def _encode(self, obj: uuid.UUID, context: Context, path: str) -> bytes:
        return obj.bytes_le


Guid = _GuidAdapter(Bytes(16))

# Offset 0 of every KMS message (spec 4.1): minor first, then major, so v6.0 is 00 00 06 00.
Version = Struct("minor" / Int16ul, "major" / Int16ul)

# Spec 4.2: 236 bytes, identical in all versions. MachineName stays raw here: it is decoded
# up to its first NUL code unit in the codec because garbage may follow the NUL.
BaseRequest = Struct(
    "minor" / Int16ul,
    "major" / Int16ul,
    "is_client_vm" / Int32ul,
    "license_status" / Int32ul,
    "grace_time" / Int32ul,
    "application_id" / Guid,
    "sku_id" / Guid,
    "kms_counted_id" / Guid,
    "client_machine_id" / Guid,
    "required_client_count" / Int32ul,
    "request_time" / Int64ul,
    "previous_client_machine_id" / Guid,
    "machine_name" / Bytes(MACHINE_NAME_SIZE),
)

# Spec 4.3: the plaintext base request followed by V4MAC(base). The base stays raw because
# the MAC is computed over its bytes.
V4Request = Struct("base" / Bytes(BASE_REQUEST_SIZE), "mac" / Bytes(16))

# Spec 4.4, 4.7, 4.8: plaintext version, IV, then CBC ciphertext (requests and responses).
EncryptedMessage = Struct(
    "minor" / Int16ul,
    "major" / Int16ul,
    "iv" / Bytes(16),
    "ciphertext" / GreedyBytes,
)


def _pid_size(context: Context) -> int:
    return len(context.epid)


# Spec 4.5: 44 + P bytes, P = PIDSize = UTF-16LE ePID length including its NUL. ``size``
# records where the base response ends, since a tail follows it in every version.
BaseResponse = Struct(
    "minor" / Int16ul,
    "major" / Int16ul,
    "pid_size" / Rebuild(Int32ul, _pid_size),
    "epid" / Bytes(this.pid_size),
    "client_machine_id" / Guid,
    "response_time" / Int64ul,
    "current_client_count" / Int32ul,
    "activation_interval" / Int32ul,
    "renewal_interval" / Int32ul,
    "size" / Tell,
)

# Spec 4.7: what follows the base response inside the V5 payload.
V5ResponseTail = Struct("random_xored_ivs" / Bytes(16), "hash" / Bytes(32))

# Spec 4.8: the V6 payload between the base response and the HMAC (which covers all of it,
# so the HMAC itself is appended by the crypto layer after this is built).
V6ResponseTail = Struct(
    "random_xored_ivs" / Bytes(16),
    "hash" / Bytes(32),
    "hwid" / Bytes(8),
    "xored_ivs" / Bytes(16),
)
