"""The KMS message layer: typed messages and their crypto for host and client (spec 4, 5).

Everything else in this package (schemas, codec, ciphers) is private to it, except for
:func:`rijndael_build`, which says which Rijndael engine this process runs.
"""

from typing import Literal

from protocol.kms.cipher import compiled_build
from protocol.kms.crypto import (
    OpenedRequest,
    PendingRequest,
    Rng,
    VerifiedResponse,
    build_request,
    open_request,
    open_requests,
    open_response,
    peek_version,
    seal_response,
    seal_responses,
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
    "open_requests",
    "open_response",
    "peek_version",
    "rijndael_build",
    "seal_response",
    "seal_responses",
    "v4_mac",
]


def rijndael_build() -> Literal["compiled", "pure"]:
    """Whether the cipher's compiled engine was imported from its mypyc extension (spec 5.2).

    Python imports an extension module in preference to the ``.py`` beside it (a wheel built
    with ``KMS_HOST_MYPYC=1``, or a manual ``mypyc`` in a work tree; docs/performance.md), so
    no setting says which build runs: only the imported module's file does
    (:mod:`protocol.kms.cipher`). The daemon logs
    it at start, ``status`` and ``bench`` report it, so a figure is never read against the
    wrong build.
    """
    return "compiled" if compiled_build() else "pure"
