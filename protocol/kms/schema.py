"""``construct`` declarations of the KMS message layer (spec section 4; appendix A).

Layout only: no crypto, no time, no validation beyond what the layout implies. The codec
runs these declarations through the readers and writers :mod:`protocol.layout` derives
from them and turns the values into :mod:`protocol.kms.messages` types; nothing else
imports them. All integers are little-endian (spec 0.1). GUIDs stay raw 16-byte strings
in Microsoft's mixed-endian layout; the codec turns them into :class:`uuid.UUID`.
"""

from __future__ import annotations

from construct import (
    Bytes,
    GreedyBytes,
    Int16ul,
    Int32ul,
    Int64ul,
    Rebuild,
    Struct,
    len_,
    this,
)

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


# Microsoft ``GUID``: Data1 u32le, Data2 u16le, Data3 u16le, Data4 (spec 0.1).
Guid = Bytes(16)

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

# Spec 4.5: 44 + P bytes, P = PIDSize = UTF-16LE ePID length including its NUL. A tail
# follows it in every version, so the codec also reports where it ends.
BaseResponse = Struct(
    "minor" / Int16ul,
    "major" / Int16ul,
    "pid_size" / Rebuild(Int32ul, len_(this.epid)),
    "epid" / Bytes(this.pid_size),
    "client_machine_id" / Guid,
    "response_time" / Int64ul,
    "current_client_count" / Int32ul,
    "activation_interval" / Int32ul,
    "renewal_interval" / Int32ul,
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
