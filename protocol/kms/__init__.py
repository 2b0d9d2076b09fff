"""The KMS message layer: typed messages and their crypto for host and client (spec 4, 5).

Everything else in this package (schemas, codec, ciphers) is private to it.
"""

from protocol.kms.crypto import (
    OpenedRequest,
    PendingRequest,
    Rng,
    VerifiedResponse,
    build_request,
    open_request,
    open_response,
    peek_version,
    seal_response,
    v4_mac,
)
from protocol.kms.messages import (
    FILETIME_EPOCH,
    KmsRequest,
    KmsResponse,
    LicenseStatus,
    ProtocolVersion,
    datetime_to_filetime,
    filetime_to_datetime,
)

__all__ = [
    "FILETIME_EPOCH",
    "KmsRequest",
    "KmsResponse",
    "LicenseStatus",
    "OpenedRequest",
    "PendingRequest",
    "ProtocolVersion",
    "Rng",
    "VerifiedResponse",
    "build_request",
    "datetime_to_filetime",
    "filetime_to_datetime",
    "open_request",
    "open_response",
    "peek_version",
    "seal_response",
    "v4_mac",
]
